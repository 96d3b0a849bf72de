"""The sweep's supervisor as a small Slurm job of its own (`tp-sweep launch --supervise`).

The job runs `tp-sweep supervise SWEEP --db-file F` (1 CPU, little memory, its own time limit).
Before that limit Slurm sends USR2 (`--signal=USR2@signal_delay_s`): the wrapper stops the
supervisor (which gives its lease up) and requeues the job through submitit, and the requeued job
takes the lease again and picks up from the store. A supervisor that is killed (scancel, a dead
node) stops heartbeating; the next job of the sweep that ends sees the stale lease and submits a
replacement (`replace_if_stale`, called by slurm/job.py), so supervision needs no person.

Where the replacement comes from: launch records how to submit a supervisor (`submit`, JSON) in
the sweep's lease row and drops a marker file OUTPUT/_jobs/supervised/SWEEP, so that a job of an
unsupervised sweep never opens the store to ask.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from slurm import squeue
from slurm.procs import pid_alive
from slurm.squeue import outside_job_env

ALIVE = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "CONFIGURING",
    "COMPLETING",
    "RESIZING",
    "SUSPENDED",
    "SIGNALING",
    "STAGE_OUT",
}
MARKERS = "supervised"  # OUTPUT/_jobs/supervised/<sweep>: the sweep wants a supervisor


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def supervise_command(sweep: str, db_file: str) -> list[str]:
    return [sys.executable, "-m", "cli.tp_sweep", "supervise", sweep, "--db-file", db_file, "--in-slurm"]


class SupervisorJob(submitit.helpers.Checkpointable):
    """What the supervisor's Slurm job runs; `checkpoint` answers USR2 before its time limit."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def __call__(self, sweep: str, db_file: str, workdir: str) -> str:
        env = dict(os.environ)
        env["TP_SUPERVISOR_JOB"] = str(submitit.JobEnvironment().job_id)
        cmd = supervise_command(sweep, db_file)
        print("[tp] " + " ".join(cmd), flush=True)
        self._proc = subprocess.Popen(cmd, cwd=workdir, env=env, start_new_session=True, preexec_fn=_ignore_usr2)
        rc = self._proc.wait()
        if rc == 0:
            return "supervision ended"
        raise RuntimeError(f"tp-sweep supervise {sweep} exited with status {rc}; see the job log")

    def checkpoint(self, sweep: str, db_file: str, workdir: str) -> Any:
        """Stop the supervisor (SIGTERM: it finishes its action and gives the lease up), then be
        requeued. Runs in submitit's USR2 handler while __call__ waits (see slurm/job.py for why
        this waits through /proc)."""
        proc = self._proc
        if proc is not None and pid_alive(proc.pid):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            deadline = time.monotonic() + 60
            while pid_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        return submitit.helpers.DelayedSubmission(SupervisorJob(), sweep, db_file, workdir)


def submit_supervisor(params: dict[str, Any]) -> str:
    """Submit the supervisor job that `params` (the lease row's `submit`) describes; its id."""
    ex = submitit.SlurmExecutor(folder=Path(params["folder"]) / "%j", max_num_timeout=1_000_000)
    extra = {"open_mode": "append", **(params.get("extra") or {})}
    ex.update_parameters(
        job_name="tp-supervise",
        partition=params.get("partition"),
        nodes=1,
        ntasks_per_node=1,
        cpus_per_task=int(params.get("cpus", 1)),
        mem=f"{int(float(params.get('mem_gb', 1)) * 1024)}M",
        time=int(params.get("timeout_min", 240)),
        signal_delay_s=int(params.get("signal_delay_s", 60)),
        additional_parameters=extra,
    )
    with outside_job_env():
        job = ex.submit(SupervisorJob(), params["sweep"], params["db_file"], params["workdir"])
    return str(job.job_id)


def mark_supervised(output_dir: str, sweep: str) -> None:
    folder = Path(output_dir).expanduser().resolve() / "_jobs" / MARKERS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / sweep).touch()


def _scheduler_state(sched_id: str | None) -> str | None:
    if not sched_id or not re.fullmatch(r"\d+(_\d+)?", sched_id):
        return None
    return squeue.poll([sched_id]).get(sched_id)


def replace_if_stale(job_file: str, db_file: str, me: str | None = None) -> list[str]:
    """Submit a new supervisor for every supervised sweep of this job's output folder whose
    lease is stale and whose supervisor job is gone. Returns the new jobs' ids."""
    try:
        job = json.loads(Path(job_file).read_text())
        marks = Path(job["levels_dir"]).parent / "_jobs" / MARKERS
        sweeps = sorted(os.listdir(marks))
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not sweeps:
        return []
    url = Path(db_file).read_text().strip()
    from db.store import Store  # SQLAlchemy: only for supervised sweeps

    me = me or os.environ.get("SLURM_JOB_ID") or str(os.getpid())
    store = Store(url, migrate_schema=False)
    new: list[str] = []
    try:
        for sweep in sweeps:
            sched_id = submit_if_gone(
                store,
                sweep,
                f"job {job.get('job_id')}",
                me,
                f"job {job.get('job_id')} ended",
                job_id=job.get("job_id"),
            )
            if sched_id:
                print(
                    f"[tp] sweep {sweep}: the supervisor was gone; submitted a new one, job {sched_id}", flush=True
                )
                new.append(sched_id)
    finally:
        store.close()
    return new


def submit_if_gone(store: Any, sweep: str, actor: str, me: str, who: str, job_id: str | None = None) -> str | None:
    """Submit the sweep's supervisor job unless one holds the lease or is queued, running or
    requeued; of several callers at once, one submits (a compare-and-set on its job id).
    Returns the new job's id, None when none was needed."""
    from db import supervision  # SQLAlchemy (0.3 s)

    row = supervision.lease(store, sweep)
    if row is None or row.stopped or row.where != "slurm" or not row.submit or row.held:
        return None
    if _scheduler_state(row.sched_id) in ALIVE:
        return None  # queued, requeued or starting: it takes the lease when it runs
    placeholder = f"submitting-{me}"[:64]
    if not supervision.swap_sched_id(store, sweep, row.sched_id, placeholder):
        return None  # another caller got there first
    try:
        sched_id = submit_supervisor(row.submit)
    except Exception:
        supervision.swap_sched_id(store, sweep, placeholder, row.sched_id)
        raise
    supervision.swap_sched_id(store, sweep, placeholder, sched_id)
    if row.owner is None and row.heartbeat_at is None:
        why = "the sweep has no supervisor yet"
    else:
        gone = f"Slurm job {row.sched_id} is gone" if row.sched_id else "it ran elsewhere"
        why = f"the supervisor's lease is {'free' if row.owner is None else 'stale'} ({row.describe()}; {gone})"
    supervision.record(
        store,
        sweep,
        actor,
        "supervisor_job",
        f"{why}: {who} and submitted supervisor job {sched_id}",
        job_id=job_id,
    )
    return sched_id
