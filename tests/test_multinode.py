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
from tests.sweeputil import free_port_block, same_levels, slow_spec, status_json, tp, wait_for, write_spec


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
    ref, ids = reference  # the same levels: 2 ranks, here one per node
    spec = slow_spec("resume", procs=1)
    spec["executor"]["nodes"] = 2
    env = {**two_nodes.env, "TP_MASTER_ADDR": "127.0.0.1"}  # node names tpmn1/2 do not resolve
    tp("launch", str(write_spec(tmp_path, spec)), "--executor", "slurm", cwd=tmp_path, env=env, check=True)
    run = wait_for(
        lambda: (lambda r: r if r["state"] not in ("PENDING", "RUNNING") else None)(
            status_json("resume", tmp_path, env=env)["runs"][0]
        ),
        900,
        "the two-node job to finish",
        poll=2,
    )
    assert run["state"] == "COMPLETED", run
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'tp-results.db'}")
    with eng.connect() as c:
        assert c.execute(sa.text("select world_size from attempts")).scalar() == 2
    eng.dispose()
    assert same_levels(tmp_path / "tp-runs", ref, ids)
