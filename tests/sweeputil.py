"""Helpers for tests that launch real sweeps: tiny specs and the CLI run in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

# The in-process stand-ins, where the tests have always found these helpers.
from tests.inprocess import launch_here, status_json

REPO = Path(__file__).resolve().parents[1]
TP = [sys.executable, "-m", "cli.tp_sweep"]


def tiny_spec(name: str, **over: Any) -> dict[str, Any]:
    """A sweep that trains in seconds: a 32-unit MLP on digits, one epoch per level."""
    spec: dict[str, Any] = {
        "name": name,
        "trainer": {
            "config": "digits_mlp",
            "overrides": {"schedule.epochs": 1, "model.hidden": [32], "data.batch_size": 128, "prune.rate": 0.5},
        },
        "grid": {"method": ["dense", "imp"], "sparsity": [0.5, 0.75], "seed": [0]},
        "executor": {
            "kind": "local",
            "procs_per_node": 1,
            "cpus_per_task": 1,
            "mem_gb": 1,
            "timeout_min": 10,
            "array_parallelism": 2,
            "signal_delay_s": 10,
        },
    }
    for key, value in over.items():
        node = spec
        parts = key.split("__")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return spec


def roles_spec(tmp: Path, control: str) -> dict[str, Any]:
    """imp and a control at target 0.2 under prune.rate 0.2 and 0.5: one level (density 0.8 from
    level 0) is trunk level 1 to the runs at 0.2 and a branch to those at 0.5."""
    return {
        "name": "roles",
        "output_dir": str(tmp / "runs"),
        "reuse": "any",
        "trainer": {"config": "digits_mlp"},
        "grid": {"method": ["imp", control], "sparsity": [0.2], "prune.rate": [0.2, 0.5]},
    }


def write_spec(tmp: Path, spec: dict[str, Any]) -> Path:
    path = tmp / f"{spec.get('name', 'unnamed')}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def tp(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600, check: bool = False
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run([*TP, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"tp-sweep {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def launch_on_one_cpu(folder: Path, spec: dict[str, Any]) -> None:
    """Launch `spec` in `folder` on the local executor pinned to one CPU, as a Slurm job of
    cpus_per_task 1 runs: the thread count changes float summation order, so an uninterrupted
    reference must use the same one to compare bit for bit."""
    subprocess.run(
        ["taskset", "-c", "0", *TP, "launch", str(write_spec(folder, spec))],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        capture_output=True,
    )


def wait_for(pred, timeout: float, what: str, poll: float = 0.2):
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def first_run_ended(sweep: str, folder: Path, timeout: float, what: str) -> dict[str, Any]:
    """The sweep's first run once it has ended (COMPLETED, FAILED or LOST), polled every 2 s;
    the assertion names `what` when it has not within `timeout`."""
    ended = ("COMPLETED", "FAILED", "LOST")
    return wait_for(
        lambda: (lambda r: r if r["state"] in ended else None)(status_json(sweep, folder)["runs"][0]),
        timeout,
        what,
        poll=2,
    )


def final_weights(level_dir: Path):
    import torch

    return torch.load(level_dir / "final.pt", weights_only=True)["model"]


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def same_levels(a: Path, b: Path, ids: list[str]) -> bool:
    """The levels `ids` under two output folders hold bit-identical trained weights."""
    return all(same_weights(final_weights(a / "levels" / lid), final_weights(b / "levels" / lid)) for lid in ids)


# slow_spec's levels by depth: 0 dense, 1 trunk (sparsity 0.5), 2 a branch from it to 0.7.
TRUNK, BRANCH = 1, 2


def slow_spec(name: str, procs: int = 2):
    """Long enough (a few seconds per level) that a signal lands mid-level. One job trains level 0,
    trunk level 1 (0.5 at rate 0.5) and the branch from it to sparsity 0.7."""
    spec = tiny_spec(name, executor__procs_per_node=procs, executor__cpus_per_task=procs)
    spec["trainer"]["overrides"].update({"model.hidden": [256, 256], "data.batch_size": 16, "schedule.epochs": 6})
    spec["grid"] = {"method": ["imp"], "sparsity": [0.5, 0.7], "seed": [0]}
    return spec


def run_progress(tmp: Path) -> tuple[int, int]:
    """(depth, epochs done) of the level the one running job trains, from tmp/tp-results.db;
    (-1, -1) before its first epoch ends."""
    import sqlalchemy as sa

    db = tmp / "tp-results.db"
    if not db.exists():
        return (-1, -1)
    eng = sa.create_engine(f"sqlite:///{db}")
    try:
        with eng.connect() as c:
            row = c.execute(
                sa.text(
                    "select l.depth, l.epoch from jobs j join levels l "
                    "on l.level_id = j.level_id where j.level_id is not null"
                )
            ).first()
    except sa.exc.OperationalError:
        return (-1, -1)
    finally:
        eng.dispose()
    return tuple(row) if row else (-1, -1)


def epochs_trained(tmp: Path, sweep: str) -> int:
    """Epochs the sweep's jobs trained, counted from their logs (one line per epoch)."""
    return sum(
        p.read_text(errors="replace").count("] train_loss ")
        for p in (tmp / "tp-runs" / "_jobs" / sweep).glob("*/*_log.out")
    )


PORT_LOCKS = "/tmp/tp-test-ports"  # one lock file per port, shared by every test process here
_held: dict[int, int] = {}  # port -> lock fd, held until this process exits


def _ports_in_use() -> set[int]:
    """Local ports of every TCP socket on the machine, in any state: a listener, but also a
    connection still closing (FIN_WAIT, TIME_WAIT) that a daemon's bind may trip over."""
    used = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().split("\n")[1:]
        except OSError:
            continue
        used.update(int(row.split()[1].rsplit(":", 1)[1], 16) for row in rows if row.strip())
    return used


def _lock_port(port: int) -> bool:
    import fcntl

    if port not in _held:
        fd = os.open(os.path.join(PORT_LOCKS, f"{port}.lock"), os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False  # another test process holds it
        _held[port] = fd
    return True


def free_port_block(n: int, start: int = 17817) -> int:
    """A base port with n+1 free ports after it, away from the main dev cluster's 6817..., for a
    private Slurm cluster (slurmctld on the base, slurmd k on base + k).

    Free means: no socket of any state uses one of its ports, a bind succeeds, and no other
    process holds their lock files. The locks are held until this process exits, so the two
    xdist workers of a run, or two test runs on one machine, never share a port, however their
    tests interleave (a port check alone races: both see the block free, one daemon loses)."""
    import socket

    os.makedirs(PORT_LOCKS, mode=0o1777, exist_ok=True)
    for base in range(start, 60000, 37):
        block = range(base, base + n + 1)
        if not all(_lock_port(p) for p in block) or set(block) & _ports_in_use():
            continue
        try:
            for p in block:
                with socket.socket() as s:
                    s.bind(("0.0.0.0", p))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port block")


# ---- adversarial helpers -------------------------------------------------------------------
SECRET = "Zq7-pw-" + __import__("uuid").uuid4().hex[:10]  # a password no file may hold by chance


def admin_sql(sql: str, port: int = 5432, db: str = "postgres") -> str:
    """SQL as PostgreSQL's superuser (tests run as root, like .ci/run)."""
    import shutil

    from tests.conftest import require_service

    if os.geteuid() != 0 or shutil.which("runuser") is None:
        require_service("PostgreSQL superuser", "needs root to create roles")
    out = subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-p", str(port), "-d", db, "-qtAc", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@contextmanager
def pg_schema(postgres_url: str, name: str) -> Iterator[str]:
    """A store URL on an empty PostgreSQL schema of its own (dropped afterwards), so a test's
    tables never meet another test's."""
    import sqlalchemy as sa

    admin = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as c:
        c.execute(sa.text(f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"))
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()


def grep_tree(root, needle: bytes) -> list[str]:
    """Every file under `root` whose bytes contain `needle`."""
    hits = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                with open(p, "rb") as fh:
                    if needle in fh.read():
                        hits.append(p)
            except OSError:
                pass
    return hits


# ---- one small finished sweep, shared by the modules that only read it ------------------------
_FINISHED: dict[tuple[str, str], tuple[Path, str]] = {}


def share_spec(name: str = "share") -> dict[str, Any]:
    """dense, imp and random at 0.5 and 0.75 over two seeds, two epochs a level (learning curves
    need more than one point): 6 runs, 10 level trainings."""
    spec = tiny_spec(name)
    spec["trainer"]["overrides"]["schedule.epochs"] = 2
    spec["grid"] = {"method": ["dense", "imp", "random"], "sparsity": [0.5, 0.75], "seed": [0, 1]}
    return spec


def finished_sweep(tmp_path_factory, name: str = "share") -> tuple[Path, str]:
    """(folder holding tp-results.db and tp-runs/, store URL) of share_spec(name) trained to the
    end, once per test session however many modules ask (the report and notebook tests)."""
    key = (str(tmp_path_factory.getbasetemp()), name)
    if key not in _FINISHED:
        tmp = tmp_path_factory.mktemp(name)
        launch_here(write_spec(tmp, {**share_spec(name), "output_dir": str(tmp / "tp-runs")}), tmp)
        _FINISHED[key] = (tmp, f"sqlite:///{tmp / 'tp-results.db'}")
    return _FINISHED[key]


def job_processes(sched_id: str, env: dict[str, str]) -> list[int]:
    """Every process of a running Slurm job (batch script, srun, submitit, trainer): found by
    SLURM_JOB_ID in their environment (any node of this machine). `env`: the cluster's client
    environment (SLURM_CONF)."""
    master = sched_id.split("_")[0]
    squeue = ["squeue", "-h", "-j", master, "-r", "-o", "%i %A"]
    sq = subprocess.run(squeue, env={**os.environ, **env}, capture_output=True, text=True).stdout
    jid = next((line.split()[1] for line in sq.splitlines() if line.split()[0] == sched_id), master)
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        # Job ids repeat across clusters (every private cluster's first job is 1): only this
        # cluster's, by its SLURM_CONF, which every job of a private cluster inherits.
        mine = "SLURM_CONF" not in env or f"SLURM_CONF={env['SLURM_CONF']}".encode() in environ
        if mine and f"SLURM_JOB_ID={jid}".encode() in environ:
            pids.append(int(pid))
    return pids


def kill_whole_job(sched_id: str, env: dict[str, str]) -> int:
    """SIGKILL every process of a running Slurm job, as a node that dies would."""
    import signal

    pids = job_processes(sched_id, env)
    for sig in (signal.SIGSTOP, signal.SIGKILL):  # freeze first: nobody saves or reports on the way out
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    return len(pids)
