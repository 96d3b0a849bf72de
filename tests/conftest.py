"""Shared fixtures.

Slurm and PostgreSQL are real services started by `.ci/run` (or by hand: `tp-sweep cluster up`,
`pg_ctlcluster 15 main start`). Outside CI a missing service skips its tests; under CI (CI=true) it
fails them, so a green CI always means the real services were exercised.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(name: str, why_missing: str | None) -> None:
    """Fail (under CI) or skip (elsewhere) when a service a test needs is not there."""
    if why_missing is None:
        return
    msg = f"{name} is not available: {why_missing}"
    if IN_CI:
        pytest.fail(msg + " (CI=true: services must be started by .ci/run)")
    pytest.skip(msg)


def _slurm_problem() -> str | None:
    if shutil.which("scontrol") is None:
        return "scontrol not on PATH (apt-get install slurm-wlm)"
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "scontrol ping timed out"
    if "UP" not in out.stdout:
        return f"slurmctld not answering (`tp-sweep cluster up`): {out.stdout.strip()} {out.stderr.strip()}"
    nodes = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=15)
    if not any(s.strip().startswith(("idle", "mix", "alloc")) for s in nodes.stdout.splitlines()):
        return f"no usable node (sinfo states: {nodes.stdout.split()})"
    return None


# A test that uses one of these fixtures needs that service: it gets the marker, so that
# `make check` (-m "not slurm and not postgres") runs exactly the tests that need neither.
SERVICE_FIXTURES = {
    "slurm_cluster": "slurm",
    "two_nodes": "slurm",
    "private_dir": "slurm",
    "postgres_url": "postgres",
    "secret_pg": "postgres",
}


# Modules that share one session-wide trained sweep (sweeputil.finished_sweep): one worker.
SHARED_SWEEP = {"test_report": "shared-sweep", "test_notebook": "shared-sweep"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & set(SERVICE_FIXTURES):
            item.add_marker(getattr(pytest.mark, SERVICE_FIXTURES[fixture]))
        # `make test` runs on two xdist workers (--dist loadgroup). Slurm tests run one after
        # another on one worker: they share the dev cluster's nodes, and some scancel or kill
        # every job of theirs. Every other test goes with its module (a module's fixtures, often
        # a trained sweep, are built once), beside them. PostgreSQL tests each use a schema of
        # their own, so they need no such care.
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        group = "slurm" if item.get_closest_marker("slurm") else SHARED_SWEEP.get(module, module)
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def _builtin_methods_only():
    """The method registry as it was before each test: an in-process launch of a spec that
    declares a lab's method registers it for the whole process (the last spec read wins, as in
    one `tp-sweep` run), and a later test of the same worker would find it among the built-ins."""
    from core import method_lookup, methods

    saved = dict(methods.METHODS), dict(methods.CRITERIA), method_lookup._entry_points_read
    yield
    methods.METHODS.clear()
    methods.METHODS.update(saved[0])
    methods.CRITERIA.clear()
    methods.CRITERIA.update(saved[1])
    method_lookup._entry_points_read = saved[2]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread for in-process torch work: on 2 shared cores, OpenMP threads spinning
    against the trainer subprocesses of other tests made model tests 10-20x slower (deit_tiny:
    100 s with 2 threads, 6 s with 1). Subprocesses (torchrun jobs) set their own."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The dev Slurm cluster, already running (started by .ci/run or `tp-sweep cluster up`)."""
    require_service("Slurm dev cluster", _slurm_problem())


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a real PostgreSQL database for tests (TP_TEST_PG_URL, set by .ci/run)."""
    url = os.environ.get("TP_TEST_PG_URL")
    if not url:
        require_service("PostgreSQL", "TP_TEST_PG_URL is not set (see .ci/run)")
    import sqlalchemy as sa

    try:
        eng = sa.create_engine(url)
        with eng.connect() as conn:
            conn.execute(sa.text("select 1"))
        eng.dispose()
    except Exception as exc:  # noqa: BLE001 - any connection failure means the service is missing
        require_service("PostgreSQL", f"cannot connect to TP_TEST_PG_URL: {exc}")
    return url


@pytest.fixture
def secret_pg(postgres_url):
    """A role with a distinctive password (sweeputil.SECRET) and a schema of its own in the test
    database: its URL, for tests that look for the password where it must not be."""
    import uuid

    from tests.sweeputil import SECRET, admin_sql

    role = "tp_secret_" + uuid.uuid4().hex[:6]
    admin_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'")
    admin_sql(f"GRANT CREATE, CONNECT ON DATABASE tp_test TO {role}")
    admin_sql(f"CREATE SCHEMA {role} AUTHORIZATION {role}", db="tp_test")  # where the URL connects
    yield f"postgresql://{role}:{SECRET}@127.0.0.1:5432/tp_test?options=-csearch_path%3D{role}"
    admin_sql(f"DROP SCHEMA {role} CASCADE", db="tp_test")
    admin_sql(f"REVOKE ALL ON DATABASE tp_test FROM {role}")
    admin_sql(f"DROP ROLE {role}")


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """An uninterrupted run of `slow_spec("resume")`: its output folder and level ids (in training
    order: level 0, trunk level 1, the branch), to compare resumed runs with."""
    from tests.inprocess import level_ids
    from tests.sweeputil import slow_spec, tp, write_spec

    tmp = tmp_path_factory.mktemp("reference")
    path = write_spec(tmp, slow_spec("resume"))
    tp("launch", str(path), cwd=tmp, check=True)
    return tmp / "tp-runs", level_ids("resume", tmp)


# ---- no process left behind ----------------------------------------------------------------
# Folders of the private Slurm clusters this process's tests started (outside the session's tmp
# folder: munged must reach them). Only these: another pytest session on the same machine may
# have private clusters of its own running.
PRIVATE_CLUSTERS: list[str] = []


def _leftovers(base: str) -> list[str]:
    """Processes whose command line names this session's tmp folder (every job file, run folder
    and log of a test lives there) or the folder of a private cluster it started."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    me = str(os.getpid())
    mine = [base, *PRIVATE_CLUSTERS]
    return [line.strip() for line in out.splitlines() if any(m in line for m in mine) and line.split()[0] != me]


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if a test left a trainer, torchrun, submitit or srun process behind (they
    would hold CPUs and ports for whatever runs next); kill them so the next run starts clean."""
    import signal
    import time

    base = str(session.config._tmp_path_factory.getbasetemp())
    deadline = time.monotonic() + 30  # jobs of the last test may be exiting
    left = _leftovers(base)
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = _leftovers(base)
    if not left:
        return
    for line in left:
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    print("\nprocesses left behind by the tests (killed):\n  " + "\n  ".join(left))
    session.exitstatus = 1
