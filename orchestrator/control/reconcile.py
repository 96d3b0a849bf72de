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
from typing import Any

from core.layout import RESULT_FILE, LevelCheck, LevelDir
from db.schema import Job
from db.store import ACTIVE_STATES, Store

FINAL = LevelDir(Path(".")).final.name  # a level is finished once this file exists (and metrics.json)
RESULT = RESULT_FILE

# Slurm's end states, as the store names them.
_SCHED_TO_STATE = {
    "TIMEOUT": "TIMEOUT", "PREEMPTED": "PREEMPTED", "CANCELLED": "CANCELLED",
    "FAILED": "FAILED", "NODE_FAIL": "FAILED", "OUT_OF_MEMORY": "FAILED", "BOOT_FAIL": "FAILED",
    "DEADLINE": "TIMEOUT", "COMPLETED": "FAILED",  # COMPLETED yet still active here: never reported
}
_SCHED_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING"}
SUBMIT_STALE_S = 600  # a job claimed for submission but never given a scheduler id
WATCHED = (*ACTIVE_STATES, "PREEMPTED")  # states the scheduler may still change


def lost_after_s() -> float:
    """How long an active job may go without a heartbeat once the scheduler forgot it: then LOST."""
    return float(os.environ.get("TP_LOST_AFTER_S", "30"))


def sync_from_disk(store: Store, level_dirs: dict[str, str], unfinished: bool = False,
                   bad: dict[str, str] | None = None) -> int:
    """Import levels finished on disk that the store does not have as finished yet (`unfinished`:
    the caller knows the store has none of them finished). Each folder is checked first
    (LevelDir.inspect: its name is the id its level.json holds, that id is the hash of the
    content, metrics.json is well-formed): a bad one is not imported, and lands in `bad` with
    the reason."""
    states = None if unfinished else store.level_states(list(level_dirs))
    results = {}
    for lid, path in level_dirs.items():
        st = None if states is None else states.get(lid)
        if states is None or (st is not None and not st.finished):
            if not (os.path.exists(os.path.join(path, FINAL)) or os.path.exists(os.path.join(path, RESULT))):
                continue  # not finished; an os.stat is a tenth of what LevelDir's paths cost
            check = LevelDir(Path(path)).inspect()
            if check.problem is None and os.path.basename(os.path.normpath(path)) != lid:
                check = LevelCheck(problem=f"the store expects it in {path}, a folder named otherwise")
            if check.problem is not None:
                if bad is not None:
                    bad[lid] = check.problem
            elif check.result is not None:
                results[lid] = check.result
    store.import_results(results)
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
    import sqlalchemy as sa

    from db.schema import RunLevel, Sweep, SweepRun  # SQLAlchemy, 0.3 s

    with store.reading() as s:
        q = (sa.select(RunLevel.level_id).join(SweepRun, SweepRun.run_id == RunLevel.run_id)
             .join(Sweep, Sweep.id == SweepRun.sweep_id).where(Sweep.name == sweep).distinct())
        return list(s.scalars(q))


def store_level_dirs(store: Store, level_ids: list[str]) -> dict[str, str]:
    import sqlalchemy as sa

    from db.schema import Level  # SQLAlchemy, 0.3 s

    out: dict[str, str] = {}
    with store.reading() as s:
        for i in range(0, len(level_ids), 900):
            out.update(s.execute(sa.select(Level.level_id, Level.level_dir).where(
                Level.level_id.in_(level_ids[i:i + 900]), Level.finished_at.is_(None))).all())
    return out


def reconcile_sweep(store: Store, sweep: str) -> list[Any] | None:
    """What status and watch call: results from disk, then job states from the scheduler.
    Returns the sweep's unfinished levels (store.unfinished_levels) when that did not change
    them, for status to use again; None when it imported some.

    Only the unfinished levels a trainer may have finished unseen are looked for on disk: those
    with no job or a PLANNED one (another store on the same output folder may have trained them),
    a RUNNING one, or a PENDING one that has started before (requeued). A level whose job stopped
    (FAILED, LOST, PREEMPTED...) waits for launch or resume, which look at every level: on a sweep
    of 150,000 levels that is the difference between a few folders and all of them."""
    rows = store.unfinished_levels(sweep)
    check = {r.level_id: r.level_dir for r in rows
             if r.state in (None, "PLANNED", "RUNNING") or (r.state == "PENDING" and r.attempts)}
    imported = sync_from_disk(store, check, unfinished=True)
    watch = sorted({r.job_id for r in rows if r.job_id and r.state in WATCHED})
    reconcile_jobs(store, list(store.jobs(watch).values()))
    return None if imported else rows


def reconcile_jobs(store: Store, jobs: list[Job], spec: Any = None) -> list[Job]:
    """Bring the store's view of active jobs in line with what their scheduler knows."""
    now = time.time()
    changed = False
    for j in jobs:  # claimed for submission by a launch that died before it got a scheduler id
        if j.state == "PENDING" and not j.sched_id and _age(j.updated_at, now) > SUBMIT_STALE_S:
            changed |= store.set_job_state(j.job_id, "PLANNED", only_from=("PENDING",),
                                           message="submission never completed")
    watched = [j for j in jobs if j.sched_id and j.state in WATCHED]
    by_kind: dict[str, list[Job]] = {}
    for j in watched:
        by_kind.setdefault(j.executor or "local", []).append(j)
    for kind, js in by_kind.items():
        if kind == "debug":
            continue
        from slurm.executors import GONE, make_executor  # only when there is something to ask

        executor = make_executor(kind, spec, Path("."))  # poll and cancel need no parameters
        states = executor.poll([j.sched_id for j in js])
        for j in js:
            sched = states.get(j.sched_id, GONE)
            if j.state == "PREEMPTED":
                if sched in _SCHED_QUEUED or sched == "RUNNING":
                    changed |= store.set_job_state(j.job_id, "PENDING", message="requeued by the scheduler",
                                                   only_from=("PREEMPTED",))
                continue
            if sched == "DEPENDENCY_FAILED":
                executor.cancel([j.sched_id])
                changed |= store.set_job_state(j.job_id, "PLANNED", only_from=ACTIVE_STATES, clear_sched=True,
                                               message="a job it waits for failed; resume --include-failed retries both")
            elif sched in _SCHED_TO_STATE:
                msg = f"scheduler reports job {j.sched_id} {sched}"
                if sched == "COMPLETED":
                    msg += " but the trainer never reported a result"
                changed |= store.set_job_state(j.job_id, _SCHED_TO_STATE[sched], message=msg,
                                               only_from=ACTIVE_STATES)
            elif sched == GONE:
                age = _age(j.heartbeat_at or j.updated_at, now)
                if age > lost_after_s():
                    changed |= store.set_job_state(
                        j.job_id, "LOST", only_from=ACTIVE_STATES,
                        message=f"job {j.sched_id} is gone and the last heartbeat is {age:.0f} s old")
    if changed:
        fresh = store.jobs([j.job_id for j in jobs])
        return [fresh[j.job_id] for j in jobs]
    return jobs


def _age(when: dt.datetime | None, now: float) -> float:
    if when is None:
        return float("inf")
    return now - when.replace(tzinfo=dt.timezone.utc).timestamp()  # naive UTC, as the store writes
