"""The controller: record a plan, submit what needs running, reconcile states with the scheduler.

Data flows one way: spec -> plan -> store -> executor; the trainer then reports to the store and
`status` reads it back, asking the scheduler only about runs the store believes are active.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from db.schema import Run
from db.store import ACTIVE_STATES, RESUMABLE_STATES, Store
from orchestrator.plan import SweepPlan
from orchestrator.spec import ExecutorSpec, SweepSpec, parse_spec

# Slurm's end states, as the store names them.
_SCHED_TO_STATE = {
    "TIMEOUT": "TIMEOUT", "PREEMPTED": "PREEMPTED", "CANCELLED": "CANCELLED",
    "FAILED": "FAILED", "NODE_FAIL": "FAILED", "OUT_OF_MEMORY": "FAILED", "BOOT_FAIL": "FAILED",
    "DEADLINE": "TIMEOUT", "COMPLETED": "FAILED",  # COMPLETED yet still active here: never reported
}
_SCHED_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING"}


def lost_after_s() -> float:
    """How long an active run may go without a heartbeat once its job is gone before it is LOST."""
    return float(os.environ.get("TP_LOST_AFTER_S", "30"))


class SubmitError(RuntimeError):
    """The scheduler refused or could not be reached; the runs stay as they were (PLANNED...)."""


@dataclass
class LaunchResult:
    sweep: str
    new_runs: list[str]
    submitted: dict[str, str] = field(default_factory=dict)  # run_id -> job id
    skipped: dict[str, int] = field(default_factory=dict)    # state -> runs left alone
    failed: dict[str, str] = field(default_factory=dict)     # run_id -> message (blocking executors)


def write_run_dirs(plan: SweepPlan, base: Path) -> dict[str, str]:
    """RUN_DIR/run.json for every run: all a job needs besides the store URL."""
    dirs = {}
    for run in plan.runs:
        d = (base / run.run_id).resolve()
        d.mkdir(parents=True, exist_ok=True)
        desc = d / "run.json"
        if not desc.exists():
            tmp = desc.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(run.description(), indent=1, sort_keys=True))
            os.replace(tmp, desc)
        dirs[run.run_id] = str(d)
    return dirs


def executor_for(spec: SweepSpec, kind: str | None = None):
    from slurm.executors import make_executor

    kind = kind or spec.executor.kind
    return make_executor(kind, spec.executor, Path(spec.output_dir).resolve() / "_jobs" / spec.name)


def stored_spec(store: Store, sweep: str) -> SweepSpec:
    row = store.get_sweep(sweep)
    if row is None:
        raise LookupError(f"no sweep named {sweep!r} in {store.display_url}")
    return parse_spec(row.spec, f"stored spec of {sweep}")


def reconcile(store: Store, runs: list[Run], executor_kind: str | None = None,
              spec: ExecutorSpec | None = None) -> list[Run]:
    """Bring the store's view of active runs in line with what the scheduler knows."""
    from slurm.executors import GONE, make_executor

    watched = [r for r in runs if r.job_id and r.state in (*ACTIVE_STATES, "PREEMPTED")]
    by_kind: dict[str, list[Run]] = {}
    for r in watched:
        by_kind.setdefault(r.executor or executor_kind or "local", []).append(r)
    changed = False
    for kind, rs in by_kind.items():
        if kind == "debug":
            continue
        states = make_executor(kind, spec or ExecutorSpec(), Path(".")).poll([r.job_id for r in rs])
        now = time.time()
        for r in rs:
            sched = states.get(r.job_id, GONE)
            if r.state == "PREEMPTED":
                if sched in _SCHED_QUEUED or sched == "RUNNING":
                    changed |= store.set_state(r.run_id, "PENDING", message="requeued by the scheduler",
                                               only_from=("PREEMPTED",))
                continue
            if sched in _SCHED_TO_STATE:
                msg = f"scheduler reports job {r.job_id} {sched}"
                if sched == "COMPLETED":
                    msg += " but the trainer never reported a result"
                changed |= store.set_state(r.run_id, _SCHED_TO_STATE[sched], message=msg,
                                           only_from=ACTIVE_STATES)
            elif sched == GONE:
                beat = r.heartbeat_at or r.updated_at  # naive UTC, as the store writes it
                age = now - beat.replace(tzinfo=dt.timezone.utc).timestamp()
                if age > lost_after_s():
                    changed |= store.set_state(
                        r.run_id, "LOST", only_from=ACTIVE_STATES,
                        message=f"job {r.job_id} is gone and the last heartbeat is {age:.0f} s old")
    if changed:
        return [store.get_run(r.run_id) for r in runs]
    return runs


def submit_runs(store: Store, spec: SweepSpec, runs: list[Run], executor_kind: str,
                on_progress: Callable[[], None] | None = None) -> LaunchResult:
    """Submit `runs`; for blocking executors (local, debug), drive them to completion here."""
    from slurm.executors import JobRequest

    result = LaunchResult(spec.name, [])
    if not runs:
        return result
    ex = executor_for(spec, executor_kind)
    reqs = [JobRequest(r.run_id, r.run_dir, store.url) for r in runs]
    if not ex.blocking:
        try:
            jobs = ex.submit(reqs)
        except Exception as exc:  # sbatch missing, slurmctld down, a rejected option...
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise SubmitError(f"submission to {ex.kind} failed, nothing was submitted "
                              f"({len(reqs)} runs stay {runs[0].state}): {detail}") from None
        for req, job in zip(reqs, jobs):
            store.set_state(req.run_id, "PENDING", job_id=str(job.job_id), executor=ex.kind,
                            message=f"submitted to {ex.kind}")
            result.submitted[req.run_id] = str(job.job_id)
        return result
    cap = 1 if ex.kind == "debug" else spec.executor.array_parallelism
    queue, active = list(reqs), []
    while queue or active:
        while queue and len(active) < cap:
            req = queue.pop(0)
            job = ex.submit([req])[0]
            store.set_state(req.run_id, "PENDING", job_id=str(job.job_id), executor=ex.kind,
                            message=f"submitted to {ex.kind}")
            result.submitted[req.run_id] = str(job.job_id)
            active.append((req, job))
        for req, job in list(active):
            if ex.kind == "debug" or job.done():
                active.remove((req, job))
                exc = job.exception()
                if exc is not None:
                    result.failed[req.run_id] = str(exc).strip().splitlines()[-1][:500]
                # A trainer that died before reporting leaves its run active: say so.
                store.set_state(req.run_id, "FAILED", only_from=ACTIVE_STATES,
                                message=f"job {job.job_id} ended without reporting: "
                                        f"{result.failed.get(req.run_id, 'no result')}")
        if on_progress:
            on_progress()
        if active:
            time.sleep(0.5)
    return result


def launch(store: Store, plan: SweepPlan, spec_dict: dict[str, Any], executor_kind: str,
           on_progress: Callable[[], None] | None = None) -> LaunchResult:
    spec = plan.spec
    base = Path(spec.output_dir)
    run_dirs = write_run_dirs(plan, base)
    new = store.record_plan(plan, spec_dict, run_dirs)
    runs = reconcile(store, store.sweep_runs(spec.name), executor_kind, spec.executor)
    todo = [r for r in runs if r.state == "PLANNED" or r.state in RESUMABLE_STATES]
    result = submit_runs(store, spec, todo, executor_kind, on_progress)
    result.new_runs = new
    for r in runs:
        if r.run_id not in result.submitted:
            result.skipped[r.state] = result.skipped.get(r.state, 0) + 1
    return result


def resume(store: Store, sweep: str, include_failed: bool = False, executor_kind: str | None = None,
           on_progress: Callable[[], None] | None = None) -> LaunchResult:
    spec = stored_spec(store, sweep)
    runs = reconcile(store, store.sweep_runs(sweep), executor_kind, spec.executor)
    states = set(RESUMABLE_STATES) | ({"FAILED", "CANCELLED"} if include_failed else set())
    todo = [r for r in runs if r.state in states]
    result = submit_runs(store, spec, todo, executor_kind or spec.executor.kind, on_progress)
    for r in runs:
        if r.run_id not in result.submitted:
            result.skipped[r.state] = result.skipped.get(r.state, 0) + 1
    return result


def cancel(store: Store, runs: list[Run], spec: ExecutorSpec | None = None) -> list[str]:
    from slurm.executors import make_executor

    cancelled = []
    for r in runs:
        # Recorded first, so a trainer stopping on the scheduler's signal finds it cancelled.
        if not store.set_state(r.run_id, "CANCELLED", message="cancelled by tp-sweep cancel",
                               only_from=(*ACTIVE_STATES, "PLANNED", "PREEMPTED")):
            continue
        cancelled.append(r.run_id)
        if r.job_id and r.executor:
            make_executor(r.executor, spec or ExecutorSpec(), Path(".")).cancel([r.job_id])
    return cancelled
