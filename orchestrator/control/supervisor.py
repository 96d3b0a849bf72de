"""The sweep's autopilot (`tp-sweep supervise SWEEP`): reconcile, act by policy, sleep; until the
sweep is finished or nothing more can be done, and it says which.

One supervisor per sweep, held by a lease in the store (db/supervision.py): a second one finds
it held and leaves; one whose holder stopped heartbeating (killed, its node lost) takes it over.
Everything it knows is in the store, so it can be killed at any point and started again (or
replaced, slurm/supervisor_job.py): a job it had claimed but not submitted goes back to PLANNED
once the lease it was claimed under is stale; a verdict it recorded is carried out by the next.

Each pass:
1. levels finished on disk are imported; job states come from the scheduler (reconcile);
2. each failed job is judged once by policy (orchestrator/control/policy.py): retry, when and
   with which sbatch settings, or final; both are recorded with their reason;
3. an Optuna search (if the sweep has one) asks and tells (the `hook`: the search driver);
4. PLANNED jobs and due retries are submitted, within the cluster's limits (slurm/limits.py);
   what does not fit waits, with the reason, for the next pass.
It is safe beside `resume`, `cancel` and `launch`: every submission is a compare-and-set on the
job's state, and cancelled jobs are never touched.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db import supervision
from db.reader import ACTIVE_STATES
from db.schema import Job
from db.store import Store
from db.tables import utcnow
from orchestrator.control.controller import LaunchResult, stored_spec
from orchestrator.control.policy import FAILED_STATES, NODE_CLASSES, Decision, History, decide, failure_class
from orchestrator.control.reconcile import (
    job_report,
    reconcile_jobs,
    store_level_dirs,
    sweep_level_ids,
    sync_from_disk,
)
from orchestrator.control.submit import LocalDriver, SubmitError, db_url_file, executor_for, submit_jobs
from orchestrator.plan.spec import SupervisorSpec, SweepSpec

LIMITS_TTL_S = 600.0  # how long the cluster's limits (scontrol, sacctmgr) are read once for


@dataclass
class Outcome:
    finished: bool  # the sweep is done
    reason: str
    ran: bool = True  # False: another supervisor holds the lease, this one did nothing


@dataclass
class Pass:
    """What one pass saw."""

    active: int = 0  # PENDING, RUNNING, or PREEMPTED and requeued by the scheduler
    retrying: int = 0  # failed, with a retry due later
    final: list[Job] = field(default_factory=list)
    cancelled: int = 0
    planned: int = 0
    submitted: int = 0
    waiting_room: int = 0  # PLANNED for lack of room (QOS, MaxJobCount)
    submit_failed: bool = False  # the scheduler refused or did not answer: tried again next pass
    blocked: dict[str, str] = field(default_factory=dict)  # PLANNED for good: job -> why


def node_failures(failures: list[tuple[str | None, str | None, str]]) -> dict[str, int]:
    """Node -> node-class failures, from (failure class, node, reason) of each failure action.
    One scheduler job's failure counts once, however many chains it trained (executor.pack):
    they fail together, each with the same reason, naming that job."""
    out: dict[str, int] = {}
    seen = set()
    for failure, node, reason in failures:
        if failure in NODE_CLASSES and node and (node, reason[:4000]) not in seen:
            seen.add((node, reason[:4000]))
            out[node] = out.get(node, 0) + 1
    return out


class Supervisor:
    def __init__(
        self,
        store: Store,
        sweep: str,
        *,
        where: str = "local",
        sched_id: str | None = None,
        poll_s: float | None = None,
        lease_s: float | None = None,
        out: Callable[[str], None] | None = None,
        hook: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
    ) -> None:
        """`stop`: set (by a signal handler, another thread) to stop after the action under way
        and free the lease."""
        self.store, self.sweep = store, sweep
        self.spec = stored_spec(store, sweep)
        conf = self.spec.supervisor or SupervisorSpec()
        self.poll_s = poll_s if poll_s is not None else conf.poll_s
        self.lease_s = lease_s if lease_s is not None else conf.lease_s
        self.where, self.sched_id = where, sched_id
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.owner = f"{where}:{sched_id or '-'}:{self.host}:{self.pid}:{uuid.uuid4().hex[:6]}"[:128]
        self.actor = f"supervisor {sched_id or ''}@{self.host}:{self.pid}".replace(" @", "@")
        self.out = out or (lambda line: None)
        self.hook = hook  # the search driver: .step() -> done?
        self.sleep = sleep
        self.kind = self.spec.executor.kind
        self.stop = stop or threading.Event()
        self.result = LaunchResult(sweep)
        self.local: LocalDriver | None = None
        self._limits: tuple[float, Any] | None = None
        self._said: dict[str, str] = {}  # the last wait reason recorded per topic

    # ---- the lease and the loop -------------------------------------------------------------
    def act(self, action: str, reason: str, **kw: Any) -> None:
        supervision.record(self.store, self.sweep, self.actor, action, reason, **kw)
        job = kw.get("job_id")
        self.out(f"{time.strftime('%H:%M:%S')} {action}{' ' + job if job else ''}: {reason}")

    def run(self, once: bool = False) -> Outcome:
        taken, before = supervision.acquire(
            self.store,
            self.sweep,
            self.owner,
            host=self.host,
            pid=self.pid,
            where=self.where,
            sched_id=self.sched_id,
            lease_s=self.lease_s,
        )
        if not taken:
            assert before is not None
            return Outcome(False, f"already supervised by {before.describe()}", ran=False)
        took = (
            f"; took over from {before.describe()}"
            if before is not None and before.owner and before.owner != self.owner
            else ""
        )
        self.act(
            "start",
            f"supervising on {self.host} (pid {self.pid}"
            f"{', Slurm job ' + self.sched_id if self.sched_id else ''}), a pass every "
            f"{self.poll_s:g} s, lease {self.lease_s:g} s{took}",
        )
        import sqlalchemy as sa  # SQLAlchemy (0.3 s)

        stopped: str | None = None
        outage_since: float | None = None
        try:
            while True:
                try:
                    if not supervision.renew(self.store, self.sweep, self.owner):
                        now = supervision.lease(self.store, self.sweep)
                        self.out(f"lease lost to {now.describe() if now else 'nobody'}; stopping")
                        return Outcome(False, "the lease was taken over by another supervisor", ran=True)
                    outcome = self.step()
                    if outage_since is not None:
                        away = time.monotonic() - outage_since
                        self.act("store_back", f"the store answers again after {away:.0f} s")
                        outage_since = None
                except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                    # The store restarting (PostgreSQL, a network blip): jobs train on and keep
                    # their writes; wait for it, pass after pass. If it stays away longer than
                    # the lease, another supervisor may take over once it is back: renew() says so.
                    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                    if outage_since is None:
                        outage_since = time.monotonic()
                        self.out(
                            f"store unreachable ({text[0] if text else type(exc).__name__}); "
                            "trying again every pass"
                        )
                    outcome = None
                if outcome is not None:
                    stopped = outcome.reason
                    self.act("stop", outcome.reason)
                    return outcome
                if once:
                    return Outcome(False, "one pass done (--once)")
                if self._nap():
                    self.act("pause", "stopped by a signal; the lease is free for the next supervisor")
                    return Outcome(False, "stopped by a signal")
        finally:
            try:
                supervision.release(self.store, self.sweep, self.owner, stopped)
            except (sa.exc.OperationalError, sa.exc.InterfaceError):
                pass  # the store is away: the lease goes stale by itself

    @property
    def stop_requested(self) -> bool:
        return self.stop.is_set()

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        if value:
            self.stop.set()
        else:
            self.stop.clear()

    def _nap(self) -> bool:
        end = time.monotonic() + self.poll_s
        while not self.stop_requested and time.monotonic() < end:
            self.sleep(min(0.2, max(0.0, end - time.monotonic())))
        return self.stop_requested

    # ---- one pass -----------------------------------------------------------------------------
    def jobs(self) -> dict[str, Job]:
        level_ids = sweep_level_ids(self.store, self.sweep)
        sync_from_disk(self.store, store_level_dirs(self.store, level_ids))
        self.level_ids = level_ids
        return self.store.jobs_of_levels(level_ids)

    def step(self) -> Outcome | None:
        if self.local is not None:
            self.local.step()
        jobs = self.jobs()
        stale_s = min(self.lease_s, 600.0)
        fresh = {
            j.job_id: j
            for j in reconcile_jobs(self.store, list(jobs.values()), self.spec.executor, submit_stale_s=stale_s)
        }
        p = Pass()
        due: list[Job] = []
        now = utcnow()
        for j in fresh.values():
            cls = failure_class(j.state, j.failure) if j.state in FAILED_STATES else None
            if j.state in ACTIVE_STATES or (j.state == "PREEMPTED" and cls is None):
                p.active += 1
            elif j.state == "CANCELLED":
                p.cancelled += 1
            elif j.state == "PLANNED":
                p.planned += 1
            elif cls is not None:
                if j.verdict is None:
                    self.judge(j, cls, fresh)
                    j = self.store.jobs([j.job_id])[j.job_id]
                if j.verdict == "final":
                    p.final.append(j)
                elif j.verdict == "retry":
                    if j.retry_at is None or j.retry_at <= now:
                        due.append(j)
                    else:
                        p.retrying += 1
        search_done = self.hook.step() if self.hook is not None else None
        planned = (
            [
                j
                for j in self.store.jobs_of_levels(sweep_level_ids(self.store, self.sweep)).values()
                if j.state == "PLANNED"
            ]
            if self.hook is not None
            else [j for j in fresh.values() if j.state == "PLANNED"]
        )
        self.submit(planned, due, p)
        if self.local is not None and self.local.busy:
            p.active += 1
        return self.verdict(p, search_done)

    def judge(self, j: Job, cls: str, jobs: dict[str, Job]) -> Decision:
        # The node the job says it failed on (a rendezvous that never completed: no attempt of
        # its trainer was recorded), else the last one its trainer started on.
        said = job_report(j).get("node")
        node = said if isinstance(said, str) and said else self.store_node(j.job_id)
        progress = saved_steps(j)
        said_failed = f"{j.state} ({cls}){' on node ' + node if node else ''}: {j.message or '-'}"
        history = self.history(j, cls, node, jobs, progress, said_failed)
        d = decide(
            cls,
            retries=j.retries,
            level=j.level_id,
            node=node,
            message=j.message,
            sbatch=j.sbatch,
            policy=self.spec.retry,
            executor=self.spec.executor,
            history=history,
        )
        self.act(
            "failure",
            said_failed,
            job_id=j.job_id,
            failure=cls,
            level_id=j.level_id,
            node=node,
            progress=progress,
        )
        now = utcnow()
        message = d.reason[:2000]
        supervision.judge(
            self.store,
            j.job_id,
            failure=cls,
            verdict=d.verdict,
            retry_at=d.retry_at(now),
            message=message,
            sbatch=d.sbatch if d.sbatch is not None else j.sbatch,
            only_state=j.state,
        )
        self.act(
            "retry" if d.verdict == "retry" else "give_up",
            d.reason,
            job_id=j.job_id,
            failure=cls,
            level_id=j.level_id,
            node=node,
        )
        return d

    def store_node(self, job_id: str) -> str | None:
        import sqlalchemy as sa  # SQLAlchemy (0.3 s)

        from db.schema import Attempt  # the ORM (SQLAlchemy, 0.4 s)

        with self.store.reading() as s:
            return s.scalar(
                sa.select(Attempt.host).where(Attempt.job_id == job_id).order_by(Attempt.id.desc()).limit(1)
            )

    def history(
        self,
        j: Job,
        cls: str,
        node: str | None,
        jobs: dict[str, Job],
        progress: int | None = None,
        said_failed: str | None = None,
    ) -> History:
        past = supervision.actions(self.store, self.sweep, None, action="failure")
        resubmits = supervision.actions(self.store, self.sweep, None, action="resubmit")
        h = History(sweep_retries=sum(1 for a in resubmits if a.failure != "PREEMPTED"))
        same = [a for a in past if a.job_id == j.job_id and a.failure == cls and a.level_id == j.level_id]
        if cls == "TIMEOUT":
            # A level longer than the time limit times out slice after slice: only the slices
            # that saved no more than the one before count as the same failure again.
            h.same_failures = stalled_slices([a.progress for a in same], progress)
            h.stalled_at = progress
        else:
            h.same_failures = len(same)
        now = [(cls, node, said_failed or "")] if cls in NODE_CLASSES and node else []
        h.node_failures = node_failures([(a.failure, a.node, a.reason) for a in past] + now)
        if self.kind != "slurm":
            h.node_failures = {}  # local jobs have no node to avoid
        elif cls in NODE_CLASSES and node:
            from slurm.limits import partition_nodes  # scontrol and sacctmgr calls: only where a cluster is asked

            h.partition_nodes = partition_nodes(self.spec.executor.partition)
        return h

    def limits(self) -> Any:
        if self.kind != "slurm":
            return None
        if self._limits is None or time.monotonic() - self._limits[0] > LIMITS_TTL_S:
            from slurm.limits import read_limits  # scontrol and sacctmgr calls: only where a cluster is asked

            self._limits = (time.monotonic(), read_limits(self.spec.executor.sbatch_options()))
        return self._limits[1]

    def submit(self, planned: list[Job], due: list[Job], p: Pass) -> None:
        todo = due + planned
        if not todo:
            return
        reasons = {j.job_id: (j.failure, j.sbatch) for j in due}
        self.result = LaunchResult(self.sweep)
        try:
            if self.kind in ("local", "debug"):
                if self.local is None:
                    ex = executor_for(self.spec, self.kind)
                    self.local = LocalDriver(
                        self.store, self.spec, ex, db_url_file(self.store.url, self.spec.output_dir), self.result
                    )
                self.local.result = self.result
                self.local.add(todo)
                self.local.step()
            else:
                submit_jobs(self.store, self.spec, todo, self.kind, self.result, limits=self.limits())
        except SubmitError as exc:
            p.submit_failed = True
            self.say("submit", "submit_failed", f"{exc}; tried again next pass")
        for job_id, sched in self.result.submitted.items():
            if job_id in reasons:
                failure, sbatch = reasons[job_id]
                if failure != "PREEMPTED":
                    supervision.count_retry(self.store, job_id)
                with_ = "".join(
                    f" --mem={float(v):g}G" if k == "mem_gb" else f" --{k}={v}"
                    for k, v in sorted((sbatch or {}).items())
                )
                self.act(
                    "resubmit",
                    f"after {failure}, as {sched}{' with' + with_ if with_ else ''}",
                    job_id=job_id,
                    failure=failure,
                )
        new = [j for j in self.result.submitted if j not in reasons]
        if new:
            self.act(
                "submit",
                f"{len(new)} planned job{'s' if len(new) > 1 else ''} submitted "
                f"({', '.join(self.result.submitted[j] for j in new[:8])}"
                f"{', ...' if len(new) > 8 else ''})",
            )
        p.submitted = len(self.result.submitted)
        room = {j: w for j, w in self.result.waiting.items() if w.startswith("waits for room")}
        p.waiting_room = len(room)
        if room:
            self.say("room", "wait", f"{len(room)} jobs wait for room: {next(iter(room.values()))}")
        p.blocked = {j: w for j, w in self.result.waiting.items() if j not in room}
        if self.result.limited and not room:
            p.waiting_room = len(self.result.waiting)

    def say(self, topic: str, action: str, reason: str) -> None:
        """An action recorded once per change of reason, not every pass."""
        if self._said.get(topic) != reason:
            self._said[topic] = reason
            self.act(action, reason)

    def verdict(self, p: Pass, search_done: bool | None) -> Outcome | None:
        if self.hook is not None:
            if search_done and not p.active and not p.retrying and not p.submitted:
                return Outcome(
                    True,
                    "finished: the search ran all its trials"
                    + (f"; {len(p.final)} jobs failed for good" if p.final else ""),
                )
            if search_done is False:
                return None
        unfinished = self.store.level_states(self.level_ids)
        left = sum(1 for st in unfinished.values() if not st.finished)
        if left == 0 and self.hook is None:
            return Outcome(True, f"finished: all {len(unfinished)} levels of the sweep are done")
        if p.active or p.retrying or p.submitted or p.waiting_room or p.submit_failed:
            return None  # a controller restarting is no reason to give up: sbatch again next pass
        if self.local is not None and self.local.busy:
            return None
        parts = []
        if p.final:
            parts.append(
                f"{len(p.final)} job{'s' if len(p.final) > 1 else ''} failed for good ("
                + "; ".join(f"{j.job_id[:12]}: {_clip(j.message or j.state, 300)}" for j in p.final[:3])
                + (", ..." if len(p.final) > 3 else "")
                + ")"
            )
        if p.cancelled:
            parts.append(f"{p.cancelled} jobs cancelled (tp-sweep cancel)")
        if p.blocked:
            parts.append(f"{len(p.blocked)} jobs wait for them")
        what = "; ".join(parts) or "no job can train what is left"
        return Outcome(
            False,
            f"nothing more can be done: {left} level{'s' if left != 1 else ''} "
            f"unfinished; {what}. "
            "Fix the cause, then `tp-sweep resume --include-failed` (and supervise again)",
        )


def saved_steps(j: Job) -> int | None:
    """The steps the job's level had saved when the job ended, as its trainer reported them
    (trainer/job.py); None when it did not say (killed, or an older trainer)."""
    progress = job_report(j).get("progress")
    step = progress.get("step") if isinstance(progress, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def stalled_slices(before: list[int | None], now: int | None) -> int:
    """How many of the last slices in a row, ending with this one, saved no more steps than the
    slice before them: the time-outs that count toward retry.same_error_limit. A slice whose
    progress is unknown is taken as stalled (it cannot show it moved)."""
    seq = [*before, now]
    n = 0
    for prev, cur in zip(reversed(seq[:-1]), reversed(seq[1:])):
        if cur is not None and prev is not None and cur > prev:
            break
        n += 1
    return n


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


# ---- starting a sweep's supervision (launch --supervise) ----------------------------------------
def supervisor_params(store: Store, spec: SweepSpec) -> dict[str, Any]:
    """How to submit the sweep's supervisor job (kept in its lease row, for replacements)."""
    sup = spec.supervisor or SupervisorSpec()
    out = Path(spec.output_dir).expanduser().resolve()
    return {
        "sweep": spec.name,
        "db_file": db_url_file(store.url, spec.output_dir),
        "workdir": os.getcwd(),
        "folder": str(out / "_jobs" / spec.name / "supervisor"),
        "partition": sup.partition or spec.executor.partition,
        "timeout_min": sup.timeout_min,
        "signal_delay_s": sup.signal_delay_s,
        "cpus": sup.cpus,
        "mem_gb": sup.mem_gb,
        "extra": sup.extra if sup.extra is not None else spec.executor.sbatch_options(),
    }


def want_supervision(store: Store, spec: SweepSpec, where: str) -> None:
    """Record that the sweep is to be supervised, here (local) or as a Slurm job, with the
    parameters a replacement supervisor job is submitted with."""
    sup = spec.supervisor or SupervisorSpec()
    params = supervisor_params(store, spec) if where == "slurm" else None
    supervision.want_supervision(store, spec.name, where, sup.lease_s, params)


def start_supervisor_job(store: Store, spec: SweepSpec, me: str) -> str | None:
    """Record the sweep as supervised on Slurm and submit its supervisor job unless one holds the
    lease or is queued; the new job's id, None when none was needed. sbatch's errors propagate."""
    from slurm.supervisor_job import mark_supervised, submit_if_gone  # submitit (0.2 s): Slurm only

    want_supervision(store, spec, "slurm")
    mark_supervised(spec.output_dir, spec.name)
    return submit_if_gone(store, spec.name, "tp-sweep launch", me, "tp-sweep launch --supervise")
