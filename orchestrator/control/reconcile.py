"""Bring the store in line with the disk and the scheduler: what `status`, `--watch`, launch and
resume call before they read it.

Light on purpose (no spec validation, planner or submitit): `status` imports it on every call.
The disk is the record and the store its index: a level finished on disk is imported wherever it
is met. Job states come from the scheduler in one call per refresh, whatever the number of jobs.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.layout import RESULT_FILE, LevelCheck, LevelDir, read_json_bounded, status_path
from db.reader import ACTIVE_STATES, StoreReader
from slurm.squeue import GONE  # the scheduler no longer knows the job

if TYPE_CHECKING:
    from db.store import Store  # types only

FINAL = LevelDir(Path(".")).final.name  # a level is finished once this file exists (and metrics.json)
RESULT = RESULT_FILE

# Slurm's end states, as the store names them, and the class of failure each is (the
# supervisor's policy acts by class: orchestrator/control/policy.py). A job the scheduler
# cancelled that `tp-sweep cancel` did not (it records CANCELLED first) was cancelled behind our
# back (an admin's scancel): LOST, like a job that vanished.
_SCHED_TO_STATE = {
    "TIMEOUT": "TIMEOUT",
    "PREEMPTED": "PREEMPTED",
    "CANCELLED": "LOST",
    "FAILED": "FAILED",
    "NODE_FAIL": "FAILED",
    "OUT_OF_MEMORY": "FAILED",
    "BOOT_FAIL": "FAILED",
    "DEADLINE": "TIMEOUT",
    "COMPLETED": "FAILED",  # COMPLETED yet still active here: never reported
}
_SCHED_FAILURE = {
    "TIMEOUT": "TIMEOUT",
    "DEADLINE": "TIMEOUT",
    "PREEMPTED": "PREEMPTED",
    "CANCELLED": "CANCELLED",
    "NODE_FAIL": "NODE_FAIL",
    "BOOT_FAIL": "BOOT_FAIL",
    "OUT_OF_MEMORY": "OUT_OF_MEMORY",
    "FAILED": "LOST",
    "COMPLETED": "LOST",  # the trainer never said why: it died without a word
}
_SCHED_ENDED = set(_SCHED_TO_STATE) | {GONE}
_SCHED_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING"}
SUBMIT_STALE_S = 600  # a job claimed for submission but never given a scheduler id
WATCHED = (*ACTIVE_STATES, "PREEMPTED")  # states the scheduler may still change


def _full(store: StoreReader) -> Store:
    """The Store behind a reader, for a write (db.store.full_store)."""
    from db.store import full_store  # the ORM (0.1 s): only once status has something to write

    return full_store(store)


def job_report(job: Any) -> dict[str, Any]:
    """What the trainer or its job wrapper (slurm/job.py) left beside the job file at its end:
    its state, message and progress; {} when nothing."""
    try:  # a regular file of at most 64 kB (a FIFO there must not hang status)
        data = read_json_bounded(status_path(job.job_file), 64 << 10, "the job's status file")
    except (OSError, ValueError):  # BadFile is a ValueError
        return {}
    return data if isinstance(data, dict) else {}


def wrapper_report(job: Any) -> dict[str, Any]:
    """What the job wrapper said when the trainer could not report itself (it was SIGKILLed:
    failure OUT_OF_MEMORY; submitit ended it at its time limit: TIMEOUT); {} when nothing."""
    data = job_report(job)
    return data if data.get("failure") else {}


def timeout_message(job: Any, said: dict[str, Any]) -> str:
    """What status shows of a job that reached its time limit: which slice (the job's attempts:
    its requeues and resubmissions) and how far its level got."""
    progress: dict[str, Any] = said["progress"] if isinstance(said.get("progress"), dict) else {}
    where = ""
    if isinstance(progress.get("epoch"), int) and isinstance(progress.get("epochs"), int):
        where = f", epoch {progress['epoch']} of {progress['epochs']}"
        if isinstance(progress.get("level_id"), str):
            where += f" of level {progress['level_id'][:12]}"
    slice_ = max(int(job.attempts or 0), 1)
    return f"time limit: slice {slice_}{where}; its checkpoint is saved (job {job.sched_id})"


def lost_after_s() -> float:
    """How long an active job may go without a heartbeat once the scheduler forgot it: then LOST."""
    return float(os.environ.get("TP_LOST_AFTER_S", "30"))


def sync_from_disk(
    store: StoreReader, level_dirs: dict[str, str], unfinished: bool = False, bad: dict[str, str] | None = None
) -> int:
    """Import levels finished on disk that the store does not have as finished yet (`unfinished`:
    the caller knows the store has none of them finished). Each folder is checked first
    (LevelDir.inspect: its name is the id its level.json holds, that id is the hash of the
    content, metrics.json is well-formed): a bad one is not imported, and lands in `bad` with
    the reason."""
    states = None if unfinished else _full(store).level_states(list(level_dirs))
    results = {}
    for lid, path in level_dirs.items():
        st = None if states is None else states.get(lid)
        if states is None or (st is not None and not st.finished):
            # Not finished: most such levels have no folder yet (one os.stat says so, where
            # looking for both files took two); an os.stat is a tenth of what LevelDir's paths cost.
            if not os.path.isdir(path) or not (
                os.path.exists(os.path.join(path, FINAL)) or os.path.exists(os.path.join(path, RESULT))
            ):
                continue
            check = LevelDir(Path(path)).inspect()
            if check.problem is None and os.path.basename(os.path.normpath(path)) != lid:
                check = LevelCheck(problem=f"the store expects it in {path}, a folder named otherwise")
            if check.problem is not None:
                if bad is not None:
                    bad[lid] = check.problem
            elif check.result is not None:
                results[lid] = check.result
    if results:
        _full(store).import_results(results)
    return len(results)


def check_folders(level_dirs: dict[str, str]) -> dict[str, str]:
    """Level folders about to be used (parents of levels to train): each one's problem, if any."""
    out = {}
    for lid, path in level_dirs.items():
        check = LevelDir(Path(path)).inspect()
        if check.problem is not None:
            out[lid] = check.problem
        elif check.result is None:
            out[lid] = "recorded as finished, but its folder holds no result"
    return out


def sweep_level_ids(store: Store, sweep: str) -> list[str]:
    import sqlalchemy as sa  # SQLAlchemy (0.3 s)

    from db.schema import RunLevel, Sweep, SweepRun  # SQLAlchemy, 0.3 s

    with store.reading() as s:
        q = (
            sa.select(RunLevel.level_id)
            .join(SweepRun, SweepRun.run_id == RunLevel.run_id)
            .join(Sweep, Sweep.id == SweepRun.sweep_id)
            .where(Sweep.name == sweep)
            .distinct()
        )
        return list(s.scalars(q))


def store_level_dirs(store: Store, level_ids: list[str]) -> dict[str, str]:
    import sqlalchemy as sa  # SQLAlchemy (0.3 s)

    from db.schema import Level  # SQLAlchemy, 0.3 s

    out: dict[str, str] = {}
    with store.reading() as s:
        for i in range(0, len(level_ids), 900):
            out.update(
                s.execute(
                    sa.select(Level.level_id, Level.level_dir).where(
                        Level.level_id.in_(level_ids[i : i + 900]), Level.finished_at.is_(None)
                    )
                ).all()
            )
    return out


def reconcile_sweep(store: StoreReader, sweep: str, rows: list[Any] | None = None) -> list[Any] | None:
    """What status and watch call: results from disk, then job states from the scheduler.
    `rows`: store.unfinished_levels(sweep), when the caller has them. Returns those unfinished
    levels when it wrote nothing to the store, for status to use again; None when it imported
    results or moved a job's state.

    Only the unfinished levels a trainer may have finished unseen are looked for on disk: those
    with no job or a PLANNED one (another store on the same output folder may have trained them),
    a RUNNING one, or a PENDING one that has started before (requeued). A level whose job stopped
    (FAILED, LOST, PREEMPTED...) waits for launch or resume, which look at every level: on a sweep
    of 150,000 levels that is the difference between a few folders and all of them."""
    rows = store.unfinished_levels(sweep) if rows is None else rows
    check = {
        r.level_id: r.level_dir
        for r in rows
        if r.state in (None, "PLANNED", "RUNNING") or (r.state == "PENDING" and r.attempts)
    }
    imported = sync_from_disk(store, check, unfinished=True)
    watch = sorted({r.job_id for r in rows if r.job_id and r.state in WATCHED})
    jobs = store.job_rows(watch)  # rows, not the ORM's: status never imports it unless it writes
    moved = reconcile_jobs(store, jobs) is not jobs  # the same list back: no job changed
    return None if imported or moved else rows


def reconcile_jobs(
    store: StoreReader, jobs: list[Any], spec: Any = None, submit_stale_s: float = SUBMIT_STALE_S
) -> list[Any]:
    """Bring the store's view of active jobs in line with what their scheduler knows.
    `submit_stale_s`: a job claimed for submission this long ago without a scheduler id was
    claimed by a process that died (a supervisor that took over a stale lease knows sooner)."""
    now = time.time()
    changed = False
    for j in jobs:  # claimed for submission by a launch that died before it got a scheduler id
        if j.state == "PENDING" and not j.sched_id and _age(j.updated_at, now) > submit_stale_s:
            changed |= _full(store).set_job_state(
                j.job_id, "PLANNED", only_from=("PENDING",), message="submission never completed"
            )
    watched = [j for j in jobs if j.sched_id and j.state in WATCHED]
    by_kind: dict[str, list[Any]] = {}
    for j in watched:
        by_kind.setdefault(j.executor or "local", []).append(j)
    for kind, js in by_kind.items():
        if kind == "debug":
            continue
        from slurm.executors import make_executor  # only when there is something to ask

        executor = make_executor(kind, spec, Path("."))  # poll and cancel need no parameters
        states = executor.poll([j.sched_id for j in js])
        for j in js:
            sched = states.get(j.sched_id, GONE)
            if j.state == "PREEMPTED":
                changed |= _preempted(store, j, sched, now)
                continue
            if sched == "DEPENDENCY_FAILED":
                executor.cancel([j.sched_id])
                changed |= _full(store).set_job_state(
                    j.job_id,
                    "PLANNED",
                    only_from=ACTIVE_STATES,
                    clear_sched=True,
                    message="a job it waits for failed; resume --include-failed retries both",
                )
            elif sched in _SCHED_TO_STATE:
                msg = f"scheduler reports job {j.sched_id} {sched}"
                if sched == "COMPLETED":
                    msg += " but the trainer never reported a result"
                if sched == "CANCELLED":
                    msg = f"job {j.sched_id} was cancelled outside tp-sweep (scancel?)"
                failure = _SCHED_FAILURE[sched]
                said = wrapper_report(j) if sched in ("FAILED", "COMPLETED") else {}
                state = _SCHED_TO_STATE[sched]
                if said.get("failure") == "TIMEOUT":  # submitit ended it at its time-limit warning
                    state, failure, msg = "TIMEOUT", "TIMEOUT", timeout_message(j, said)
                elif said:
                    failure, msg = str(said["failure"]), f"{said.get('message') or msg} (job {j.sched_id})"
                changed |= _full(store).set_job_state(
                    j.job_id, state, message=msg, only_from=ACTIVE_STATES, failure=failure
                )
            elif sched == GONE:
                age = _age(j.heartbeat_at or j.updated_at, now)
                if age > lost_after_s():
                    changed |= _full(store).set_job_state(
                        j.job_id,
                        "LOST",
                        only_from=ACTIVE_STATES,
                        failure="LOST",
                        message=f"job {j.sched_id} is gone and the last heartbeat is {age:.0f} s old",
                    )
    if changed:
        fresh = _full(store).jobs([j.job_id for j in jobs])
        return [fresh[j.job_id] for j in jobs]
    return jobs


def _preempted(store: StoreReader, j: Any, sched: str, now: float) -> bool:
    """A job whose trainer stopped on a signal and saved. The scheduler requeues it (then it is
    PENDING again), or it ended for good: preempted without requeue (PreemptMode=CANCEL), its
    time limit after max_requeues, cancelled behind our back. Those keep their checkpoint and
    get the failure class the supervisor resubmits them by."""
    if sched in _SCHED_QUEUED:
        return _full(store).set_job_state(
            j.job_id, "PENDING", message="requeued by the scheduler", only_from=("PREEMPTED",)
        )
    if sched == "RUNNING":
        # Still the stopped attempt (its wrapper has yet to exit, and may end it for good: a
        # time-out after its requeues), or already the requeued one, whose trainer says RUNNING
        # itself once it starts: nothing to conclude yet.
        return False
    if sched not in _SCHED_ENDED or j.failure:
        return False
    if sched == GONE and _age(j.updated_at, now) <= lost_after_s():
        return False
    said = wrapper_report(j) if sched in ("FAILED", "COMPLETED", GONE) else {}
    if sched in ("TIMEOUT", "DEADLINE") or said.get("failure") == "TIMEOUT":
        # Slurm's own limit, or submitit's handler ending the job at the warning (Slurm: FAILED);
        # the job wrapper says which (slurm/job.py timed_out_status).
        return _full(store).set_job_state(
            j.job_id,
            "TIMEOUT",
            only_from=("PREEMPTED",),
            failure="TIMEOUT",
            message=timeout_message(j, said or job_report(j)),
        )
    failure = {"PREEMPTED": "PREEMPTED", "CANCELLED": "CANCELLED"}.get(sched, "LOST")
    why = {
        "PREEMPTED": "was preempted and not requeued (PreemptMode=CANCEL)",
        "CANCELLED": "was cancelled outside tp-sweep (scancel?)",
        GONE: "is gone",
    }.get(sched, f"ended {sched}")
    return _full(store).set_job_state(
        j.job_id,
        "PREEMPTED",
        only_from=("PREEMPTED",),
        failure=failure,
        message=f"job {j.sched_id} {why}; its checkpoint is saved",
    )


def _age(when: dt.datetime | None, now: float) -> float:
    if when is None:
        return float("inf")
    return now - when.replace(tzinfo=dt.timezone.utc).timestamp()  # naive UTC, as the store writes
