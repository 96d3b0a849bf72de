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
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from db.engine import rowcount
from db.reader import StoreReader
from db.tables import actions as action_rows
from db.tables import jobs, supervisors, utcnow

if TYPE_CHECKING:
    from db.store import Store  # types only


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


def _view(row: Any) -> LeaseView:
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


def _lease_row(conn: Any, sweep: str) -> Any:
    return conn.execute(sa.select(supervisors).where(supervisors.c.sweep == sweep)).first()


def lease(store: StoreReader, sweep: str) -> LeaseView | None:
    with store.read_connection() as conn:
        row = _lease_row(conn, sweep)
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
        row = _lease_row(s, sweep)
        before = None if row is None else _view(row)
        if row is not None and row.owner not in (None, owner) and before is not None and before.held:
            return False, before
        values: dict[str, Any] = {
            "owner": owner,
            "host": host,
            "pid": pid,
            "where": where,
            "lease_s": lease_s,
            "sched_id": sched_id if sched_id is not None else (row.sched_id if row and where == "slurm" else None),
            "heartbeat_at": now,
            "started_at": now,
            "stopped": None,
            "updated_at": now,
        }
        if submit is not None:
            values["submit"] = submit
        _put_lease(s, sweep, row is None, values)
        return True, before


def _put_lease(s: Any, sweep: str, new: bool, values: dict[str, Any]) -> None:
    if new:
        s.execute(sa.insert(supervisors).values(sweep=sweep, **values))
    else:
        s.execute(sa.update(supervisors).where(supervisors.c.sweep == sweep).values(**values))


def renew(store: Store, sweep: str, owner: str) -> bool:
    """The heartbeat; False when the lease is no longer ours (taken over)."""
    with store.session() as s:
        return (
            rowcount(
                s.execute(
                    sa.update(supervisors)
                    .where(supervisors.c.sweep == sweep, supervisors.c.owner == owner)
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
            sa.update(supervisors)
            .where(supervisors.c.sweep == sweep, supervisors.c.owner == owner)
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
        row = _lease_row(s, sweep)
        values: dict[str, Any] = {"where": where, "lease_s": lease_s, "stopped": None, "updated_at": now}
        if row is None:
            values.update(owner=None, heartbeat_at=None, started_at=None)
        if submit is not None:
            values["submit"] = submit
        if sched_id is not None:
            values["sched_id"] = sched_id
        _put_lease(s, sweep, row is None, values)


def swap_sched_id(store: Store, sweep: str, expect: str | None, new: str | None) -> bool:
    """Compare-and-set of the supervisor job's id: of two jobs ending at once, one replaces it."""
    with store.session() as s:
        q = sa.update(supervisors).where(supervisors.c.sweep == sweep)
        q = q.where(supervisors.c.sched_id.is_(None) if expect is None else supervisors.c.sched_id == expect)
        return rowcount(s.execute(q.values(sched_id=new, updated_at=utcnow()))) == 1


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
    progress: int | None = None,
) -> None:
    with store.session() as s:
        s.execute(
            sa.insert(action_rows).values(
                sweep=sweep,
                actor=actor,
                action=action,
                reason=reason[:4000],
                job_id=job_id,
                failure=failure,
                level_id=level_id,
                node=node,
                progress=progress,
            )
        )


def actions(
    store: StoreReader, sweep: str, limit: int | None = 20, *, job_id: str | None = None, action: str | None = None
) -> list[Any]:
    """The sweep's actions, newest last (the last `limit` of them), as rows."""
    a = action_rows.c
    with store.read_connection() as conn:
        q = sa.select(action_rows).where(a.sweep == sweep)
        if job_id is not None:
            q = q.where(a.job_id == job_id)
        if action is not None:
            q = q.where(a.action == action)
        q = q.order_by(a.id.desc())
        if limit is not None:
            q = q.limit(limit)
        return list(reversed(list(conn.execute(q))))


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
        q = sa.update(jobs).where(jobs.c.job_id == job_id)
        if only_state is not None:
            q = q.where(jobs.c.state == only_state)
        return rowcount(s.execute(q.values(**values))) == 1


def count_retry(store: Store, job_id: str) -> None:
    """One more resubmission of the job by a supervisor (its budget and backoff count these)."""
    with store.session() as s:
        s.execute(
            sa.update(jobs)
            .where(jobs.c.job_id == job_id)
            .values(retries=jobs.c.retries + 1, verdict=None, retry_at=None)
        )


def summary(store: StoreReader, sweep: str, n: int = 8) -> dict[str, Any] | None:
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
