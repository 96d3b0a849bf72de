"""The supervisor's records in the store: the lease that keeps one supervisor per sweep, and the
actions supervisors take, each with its reason (`tp-sweep status` shows both).

A lease is one row per sweep (table supervisors). Taking it is a compare-and-set inside a
serialized transaction: it is free when nobody holds it, when its holder released it, or when
its heartbeat is older than its `lease_s` (the holder died: SIGKILL, a lost node). The holder
renews it on every pass of its loop; a renewal that finds another owner means the lease was taken
over, and the old holder stops. Times are the store's naive UTC, like every other table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from db.schema import Action, Job, Supervisor, utcnow
from db.store import Store, _rowcount


@dataclass(frozen=True)
class LeaseView:
    """A lease as read, with its age."""

    sweep: str
    owner: str | None
    host: str | None
    pid: int | None
    where: str
    sched_id: str | None
    lease_s: float
    heartbeat_at: dt.datetime | None
    started_at: dt.datetime | None
    stopped: str | None
    submit: dict[str, Any] | None

    def age_s(self, now: dt.datetime | None = None) -> float | None:
        if self.heartbeat_at is None:
            return None
        return ((now or utcnow()) - self.heartbeat_at).total_seconds()

    @property
    def held(self) -> bool:
        """Someone holds it and its heartbeat is fresh."""
        age = self.age_s()
        return self.owner is not None and age is not None and age <= self.lease_s

    def describe(self) -> str:
        where = f"Slurm job {self.sched_id}" if self.where == "slurm" and self.sched_id else self.where
        age = self.age_s()
        beat = "never" if age is None else f"{age:.0f} s ago"
        return f"{where} on {self.host or '?'} (pid {self.pid or '?'}), last heartbeat {beat}"


def _view(row: Supervisor) -> LeaseView:
    return LeaseView(
        row.sweep,
        row.owner,
        row.host,
        row.pid,
        row.where,
        row.sched_id,
        row.lease_s,
        row.heartbeat_at,
        row.started_at,
        row.stopped,
        row.submit,
    )


def lease(store: Store, sweep: str) -> LeaseView | None:
    with store.reading() as s:
        row = s.get(Supervisor, sweep)
        return None if row is None else _view(row)


def acquire(
    store: Store,
    sweep: str,
    owner: str,
    *,
    host: str,
    pid: int,
    where: str,
    sched_id: str | None,
    lease_s: float,
    submit: dict[str, Any] | None = None,
) -> tuple[bool, LeaseView | None]:
    """Take the sweep's lease for `owner`, or renew it if `owner` holds it. Returns (taken, the
    lease before: whom it was taken from, or who holds it)."""
    now = utcnow()
    with store.serialized() as s:
        row = s.get(Supervisor, sweep)
        before = None if row is None else _view(row)
        if row is not None and row.owner not in (None, owner) and before is not None and before.held:
            return False, before
        if row is None:
            row = Supervisor(sweep=sweep)
            s.add(row)
        row.owner, row.host, row.pid, row.where, row.lease_s = owner, host, pid, where, lease_s
        row.sched_id = sched_id if sched_id is not None else (row.sched_id if where == "slurm" else None)
        row.heartbeat_at, row.started_at, row.stopped, row.updated_at = now, now, None, now
        if submit is not None:
            row.submit = submit
        return True, before


def renew(store: Store, sweep: str, owner: str) -> bool:
    """The heartbeat; False when the lease is no longer ours (taken over)."""
    with store.session() as s:
        return (
            _rowcount(
                s.execute(
                    sa.update(Supervisor)
                    .where(Supervisor.sweep == sweep, Supervisor.owner == owner)
                    .values(heartbeat_at=utcnow())
                )
            )
            == 1
        )


def release(store: Store, sweep: str, owner: str, stopped: str | None = None) -> None:
    """Give the lease up: `stopped` says why supervision ended for good (None: a replacement,
    or this supervisor requeued, takes over at once)."""
    with store.session() as s:
        s.execute(
            sa.update(Supervisor)
            .where(Supervisor.sweep == sweep, Supervisor.owner == owner)
            .values(owner=None, stopped=stopped, updated_at=utcnow())
        )


def want_supervision(
    store: Store,
    sweep: str,
    where: str,
    lease_s: float,
    submit: dict[str, Any] | None,
    sched_id: str | None = None,
) -> None:
    """Record that the sweep wants a supervisor (launch --supervise): clears an old `stopped`,
    keeps any holder."""
    now = utcnow()
    with store.serialized() as s:
        row = s.get(Supervisor, sweep)
        if row is None:
            row = Supervisor(sweep=sweep, owner=None, heartbeat_at=None, started_at=None)
            s.add(row)
        row.where, row.lease_s, row.stopped, row.updated_at = where, lease_s, None, now
        if submit is not None:
            row.submit = submit
        if sched_id is not None:
            row.sched_id = sched_id


def swap_sched_id(store: Store, sweep: str, expect: str | None, new: str | None) -> bool:
    """Compare-and-set of the supervisor job's id: of two jobs ending at once, one replaces it."""
    with store.session() as s:
        q = sa.update(Supervisor).where(Supervisor.sweep == sweep)
        q = q.where(Supervisor.sched_id.is_(None) if expect is None else Supervisor.sched_id == expect)
        return _rowcount(s.execute(q.values(sched_id=new, updated_at=utcnow()))) == 1


# ---- actions ---------------------------------------------------------------------------------
def record(
    store: Store,
    sweep: str,
    actor: str | None,
    action: str,
    reason: str,
    *,
    job_id: str | None = None,
    failure: str | None = None,
    level_id: str | None = None,
    node: str | None = None,
) -> None:
    with store.session() as s:
        s.add(
            Action(
                sweep=sweep,
                actor=actor,
                action=action,
                reason=reason[:4000],
                job_id=job_id,
                failure=failure,
                level_id=level_id,
                node=node,
            )
        )


def actions(
    store: Store, sweep: str, limit: int | None = 20, *, job_id: str | None = None, action: str | None = None
) -> list[Action]:
    """The sweep's actions, newest last (the last `limit` of them)."""
    with store.reading() as s:
        q = sa.select(Action).where(Action.sweep == sweep)
        if job_id is not None:
            q = q.where(Action.job_id == job_id)
        if action is not None:
            q = q.where(Action.action == action)
        q = q.order_by(Action.id.desc())
        if limit is not None:
            q = q.limit(limit)
        return list(reversed(list(s.scalars(q))))


# ---- the supervisor's marks on jobs ----------------------------------------------------------
def judge(
    store: Store,
    job_id: str,
    *,
    failure: str | None,
    verdict: str | None,
    retry_at: dt.datetime | None = None,
    message: str | None = None,
    sbatch: dict[str, Any] | None = None,
    only_state: str | None = None,
) -> bool:
    """Record the supervisor's verdict on a job's failure (and, for a retry, when and how)."""
    values: dict[str, Any] = {"failure": failure, "verdict": verdict, "retry_at": retry_at}
    if message is not None:
        values["message"] = message
    if sbatch is not None:
        values["sbatch"] = sbatch
    with store.session() as s:
        q = sa.update(Job).where(Job.job_id == job_id)
        if only_state is not None:
            q = q.where(Job.state == only_state)
        return _rowcount(s.execute(q.values(**values))) == 1


def count_retry(store: Store, job_id: str) -> None:
    """One more resubmission of the job by a supervisor (its budget and backoff count these)."""
    with store.session() as s:
        s.execute(
            sa.update(Job).where(Job.job_id == job_id).values(retries=Job.retries + 1, verdict=None, retry_at=None)
        )


def summary(store: Store, sweep: str, n: int = 8) -> dict[str, Any] | None:
    """Where the sweep's supervisor runs, its last heartbeat and its last `n` actions (status)."""
    row = lease(store, sweep)
    acts = actions(store, sweep, n)
    if row is None and not acts:
        return None
    out: dict[str, Any] = {
        "where": None,
        "sched_id": None,
        "host": None,
        "pid": None,
        "heartbeat_age_s": None,
        "held": False,
        "stopped": None,
        "lease_s": None,
    }
    if row is not None:
        age = row.age_s()
        out.update(
            where=row.where,
            sched_id=row.sched_id,
            host=row.host,
            pid=row.pid,
            heartbeat_age_s=None if age is None else round(age, 1),
            held=row.held,
            stopped=row.stopped,
            lease_s=row.lease_s,
        )
    out["actions"] = [
        {
            "at": a.at.isoformat(timespec="seconds"),
            "action": a.action,
            "job": a.job_id,
            "failure": a.failure,
            "node": a.node,
            "by": a.actor,
            "reason": a.reason,
        }
        for a in acts
    ]
    return out
