"""A job on two Slurm nodes: one torchrun per node, rendezvous on the first, and the same weights
as the same two ranks on one node. Runs on a private two-node dev cluster beside the main one."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import sqlalchemy as sa

from slurm.dev import cluster
from tests.conftest import PRIVATE_CLUSTERS, require_service
from tests.inprocess import level_ids, status_json
from tests.sweeputil import (
    REPO,
    TP,
    TRUNK,
    epochs_trained,
    free_port_block,
    kill_whole_job,
    launch_on_one_cpu,
    run_progress,
    same_levels,
    slow_spec,
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
    PRIVATE_CLUSTERS.append(top)
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
            # A node whose slurmd is gone is DOWN after 20 s (not 300), and its jobs NODE_FAIL.
            extra_conf={"SlurmdTimeout": 20},
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


def _stepds(sched_id: str, cluster_dir: str) -> list[int]:
    """The slurmstepd processes of a job of the cluster in `cluster_dir` (job ids repeat across
    clusters: a slurmstepd holds its node's log open under the cluster's folder)."""
    out = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and open(f"/proc/{pid}/cmdline").read().startswith(
                f"slurmstepd: [{sched_id.split('_')[0]}."
            ):
                if any(cluster_dir in os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")):
                    out.append(int(pid))
        except OSError:
            continue
    return out


@pytest.mark.slurm
def test_a_node_that_dies_mid_level_costs_nothing_but_time(tmp_path, two_nodes):
    """A node fails for real: its slurmd, the job's slurmstepds and every process of the job are
    SIGKILLed. slurmctld marks the node DOWN and the job NODE_FAIL, which Slurm requeues itself
    (submitit submits with --requeue); where it would not, the supervisor resubmits it as a node
    failure held against that node alone. The sweep ends COMPLETED with nobody's help,
    bit-identical to an uninterrupted run, and the dead node comes back once its slurmd does."""
    from slurm.dev import cluster as dev

    spec = tiny_spec("nodefail", executor__kind="slurm")
    spec["grid"] = {"method": ["dense"], "sparsity": [0.5], "seed": [0]}
    spec["trainer"]["overrides"]["schedule.epochs"] = 24
    spec["retry"] = {"backoff_s": 0.5, "exclude_after": 1}
    spec["supervisor"] = {"where": "local", "poll_s": 1, "lease_s": 10}
    env = {**os.environ, **two_nodes.env, "PYTHONPATH": str(REPO), "COLUMNS": "200", "TP_STEP_SLEEP_S": "0.05"}
    sup = subprocess.Popen(
        [*TP, "launch", str(write_spec(tmp_path, spec))],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    shown = lambda node: (
        subprocess.run(  # noqa: E731
            ["scontrol", "show", "node", node], env=env, capture_output=True, text=True
        ).stdout
    )
    try:
        wait_for(lambda: run_progress(tmp_path) >= (0, 3), 300, "the level under way", poll=0.2)
        job = status_json("nodefail", tmp_path, env=env)["runs"][0]["job_id"]
        node = subprocess.run(
            ["squeue", "-h", "-j", job.split("_")[0], "-r", "-o", "%N"], env=env, capture_output=True, text=True
        ).stdout.split()[0]
        # The node dies: its slurmd, the job's slurmstepds (which would report the job's end),
        # then every process of the job.
        os.kill(dev.status(two_nodes.dir).daemons[f"slurmd:{node}"], signal.SIGKILL)
        for pid in _stepds(job, two_nodes.dir):
            os.kill(pid, signal.SIGKILL)
        assert kill_whole_job(job, two_nodes.env) >= 3
        wait_for(lambda: "DOWN" in shown(node), 180, f"slurmctld to mark {node} down", poll=1)
        dev.start_node(two_nodes.dir, node)
        out, _ = sup.communicate(timeout=400)
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.communicate()
    assert sup.returncode == 0 and "finished: all 1 levels" in out, out
    run = status_json("nodefail", tmp_path, env=env)["runs"][0]
    assert run["state"] == "COMPLETED", run
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'tp-results.db'}")
    with eng.connect() as c:
        failures = c.execute(sa.text("select failure, node from actions where action = 'failure'")).all()
        hosts = [h for (h,) in c.execute(sa.text("select host from attempts order by id"))]
    eng.dispose()
    other = ({"tpmn1", "tpmn2"} - {node}).pop()
    assert len(hosts) == 2 and hosts[0] == node, hosts  # resumed once (on whichever node is up)
    assert all(f == ("NODE_FAIL", node) for f in map(tuple, failures)), failures  # requeued: none
    assert other not in "".join(line for line in out.splitlines() if "excluding" in line), out
    assert epochs_trained(tmp_path, "nodefail") == 24  # each epoch once: the dead node's last one resumed
    ref = tmp_path / "ref"
    ref.mkdir()
    spec = tiny_spec("nodefail")
    spec["grid"] = {"method": ["dense"], "sparsity": [0.5], "seed": [0]}
    spec["trainer"]["overrides"]["schedule.epochs"] = 24
    launch_on_one_cpu(ref, spec)
    assert same_levels(tmp_path / "tp-runs", ref / "tp-runs", level_ids("nodefail", tmp_path, env=env))
    wait_for(lambda: "DOWN" not in shown(node), 120, f"{node} to come back", poll=1)
