"""What Slurm's squeue says about jobs, in one call whatever their number, and how to call sbatch
from inside a job as if from outside it. Standard library only: the executors (slurm/executors.py)
and the supervisor's own job (slurm/supervisor_job.py) both watch jobs through here, so neither
imports the other (like submitit's SlurmInfoWatcher, without its thread)."""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

GONE = "GONE"  # the scheduler no longer knows the job
_KEEP = ("SLURM_CONF",)
# Up to this many job ids go to squeue by name (-j); more, and it lists the user's jobs instead.
MAX_IDS_PER_CALL = 2000


def poll(job_ids: list[str], max_ids: int = MAX_IDS_PER_CALL) -> dict[str, str]:
    """{job id: state} for every id, GONE for those squeue does not list. One squeue call for all
    of them, whatever their number. `--states=all` also lists jobs that ended but that slurmctld
    still remembers (MinJobAge), with their end state, which a plain squeue leaves out (before:
    one scontrol call per such job)."""
    if not job_ids:
        return {}
    out: dict[str, str] = {jid: GONE for jid in job_ids}
    masters = sorted({jid.split("_")[0] for jid in job_ids})
    which = ["-j", ",".join(masters)] if len(masters) <= max_ids else ["-u", getpass.getuser()]
    sq = subprocess.run(
        ["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%r", *which],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for line in sq.stdout.splitlines():
        jid, state, reason = (line.split("|") + ["", ""])[:3]
        if jid in out:
            # A job waiting on one that failed waits forever: report it so the controller
            # can take it back (it stays PLANNED until its prerequisite is retried).
            out[jid] = "DEPENDENCY_FAILED" if reason.strip() == "DependencyNeverSatisfied" else state.strip()
    return out


@contextmanager
def outside_job_env() -> Iterator[None]:
    """Submit as if from outside any job: a supervisor (itself a Slurm job) or a job wrapper
    submitting a new supervisor would otherwise export its own job's SLURM_* and SUBMITIT_*
    variables (sbatch --export=ALL), and the new job's submitit would take the old job's id from
    SLURM_ARRAY_JOB_ID and look for the wrong pickle."""
    saved = {
        k: v
        for k, v in os.environ.items()
        if (k.startswith(("SLURM_", "SUBMITIT_", "SLURMD_")) and k not in _KEEP)
    }
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)
