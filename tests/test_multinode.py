"""A job on two Slurm nodes: one torchrun per node, rendezvous on the first, and the same weights
as the same two ranks on one node. Runs on a private two-node dev cluster beside the main one."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import sqlalchemy as sa

from slurm.dev import cluster
from tests.conftest import require_service
from tests.sweeputil import (
    TRUNK,
    free_port_block,
    run_progress,
    same_levels,
    slow_spec,
    status_json,
    tiny_spec,
    tp,
    wait_for,
    write_spec,
)


@pytest.fixture
def two_nodes():
    if os.geteuid() != 0 or shutil.which("slurmctld") is None:
        require_service("slurm daemons", "needs root and slurm-wlm")
    top = tempfile.mkdtemp(prefix="tpmn-", dir="/tmp")
    os.chmod(top, 0o755)  # munged must reach the folder
    d = os.path.join(top, "c")
    st = None
    try:
        st = cluster.up(
            d,
            nodes=2,
            cpus_per_node=2,
            mem_mb=4000,
            port=free_port_block(2, start=23817),
            cluster_name="tpmn",
            node_prefix="tpmn",
            install_conf=False,
        )
        yield st
    finally:
        # The store says COMPLETED before torchrun, srun and the job's slurmstepd have exited:
        # empty the private cluster's queue first, or stopping its daemons orphans them.
        if st is not None:
            env = {**os.environ, **st.env}
            subprocess.run(
                ["scancel", "--full", "--quiet", "--user", getpass.getuser()], env=env, capture_output=True
            )
            end = time.monotonic() + 60
            while (
                time.monotonic() < end
                and subprocess.run(
                    ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True
                ).stdout.strip()
            ):
                time.sleep(1)
        cluster.down(d)
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.slurm
def test_two_node_job_matches_one_node(tmp_path, two_nodes, reference):
    """Nothing set: the nodes meet at the address Slurm has for the first one (NodeAddr), though
    their names (tpmn1, tpmn2) resolve nowhere. While they meet, status says RUNNING and what it
    waits for; a `scontrol requeue` in mid-level resumes to the same weights as the same two
    ranks on one node."""
    ref, ids = reference  # the same levels: 2 ranks, here one per node
    spec = slow_spec("resume", procs=1)
    spec["executor"]["nodes"] = 2
    env = dict(two_nodes.env)
    assert "TP_MASTER_ADDR" not in {**os.environ, **env}
    tp("launch", str(write_spec(tmp_path, spec)), "--executor", "slurm", cwd=tmp_path, env=env, check=True)
    said = wait_for(
        lambda: (lambda r: r if r["state"] == "RUNNING" else None)(
            status_json("resume", tmp_path, env=env)["runs"][0]
        ),
        300,
        "the two-node job to run",
        poll=0.3,
    )
    job_id = said["job_id"]
    wait_for(lambda: run_progress(tmp_path) >= (TRUNK, 1), 600, "level 1 under way on two nodes", poll=0.2)
    subprocess.run(["scontrol", "requeue", job_id], env={**os.environ, **env}, check=True)
    run = wait_for(
        lambda: (lambda r: r if r["state"] not in ("PENDING", "RUNNING", "PREEMPTED") else None)(
            status_json("resume", tmp_path, env=env)["runs"][0]
        ),
        900,
        "the two-node job to finish",
        poll=2,
    )
    assert run["state"] == "COMPLETED", run
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'tp-results.db'}")
    with eng.connect() as c:
        assert {r[0] for r in c.execute(sa.text("select world_size from attempts"))} == {2}
        assert c.execute(sa.text("select count(*) from attempts")).scalar() >= 2  # requeued
        waits = c.execute(sa.text("select message from events where message like 'waiting for 2 nodes at %'"))
        assert [m for (m,) in waits if ":" in m and "127.0.0.1" in m], "status never said it waits"
    eng.dispose()
    assert same_levels(tmp_path / "tp-runs", ref, ids)


@pytest.mark.slurm
def test_a_rendezvous_address_that_does_not_resolve_fails_as_a_node_failure(tmp_path, two_nodes):
    """TP_MASTER_ADDR naming no host: the job fails at once (torchrun would retry until the time
    limit), status names the host, the port and why, and the supervisor retries it as a node
    failure until its budget is spent."""
    spec = tiny_spec("rdzv", executor__kind="slurm", executor__nodes=2)
    spec["grid"] = {"method": ["dense"], "sparsity": [0.5], "seed": [0]}
    spec["retry"] = {"backoff_s": 0.5, "max_per_job": 1}
    spec["supervisor"] = {"where": "local", "poll_s": 1, "lease_s": 10}
    env = {**two_nodes.env, "TP_MASTER_ADDR": "no-such-host.invalid"}
    t0 = time.monotonic()
    out = tp("launch", str(write_spec(tmp_path, spec)), cwd=tmp_path, env=env, timeout=300)
    assert time.monotonic() - t0 < 240, out.stdout
    assert "nothing more can be done" in out.stdout, out.stdout + out.stderr
    run = status_json("rdzv", tmp_path, env=env)["runs"][0]
    assert run["state"] == "FAILED", run
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'tp-results.db'}")
    with eng.connect() as c:
        acts = [r._mapping for r in c.execute(sa.text("select * from actions order by id"))]
    eng.dispose()
    failures = [a for a in acts if a["action"] == "failure"]
    assert [a["failure"] for a in failures] == ["NODE_FAIL", "NODE_FAIL"], acts
    assert all(a["node"] == "tpmn1" for a in failures), failures
    said = failures[0]["reason"]
    assert "rendezvous of 2 nodes at no-such-host.invalid:" in said and "the name does not resolve" in said, said
    assert [a["failure"] for a in acts if a["action"] == "retry"] == ["NODE_FAIL"], acts
    assert "max_per_job" in [a for a in acts if a["action"] == "give_up"][0]["reason"], acts


def test_a_rendezvous_that_does_not_complete_is_bounded(tmp_path):
    """A node that never joins: the job wrapper kills torchrun once the bound has passed and
    fails as a node failure, naming the host, the port and why, instead of waiting out the
    job's time limit."""
    from slurm.job import TrainerJob, read_status

    job_file = tmp_path / "job.json"
    job_file.write_text('{"job_id": "j1", "levels": [], "levels_dir": "."}')
    t0 = time.monotonic()
    with pytest.raises(
        RuntimeError, match=r"rendezvous of 2 nodes at 127\.0\.0\.1:\d+ \(node localhost\) failed: not within 8 s"
    ):
        TrainerJob()(str(job_file), str(tmp_path / "no-db"), 1, 2, None, 8)
    assert time.monotonic() - t0 < 30
    said = read_status(str(job_file))
    assert said["failure"] == "NODE_FAIL" and said["node"] == "localhost", said
