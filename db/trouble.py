"""What went wrong in a sweep, for the HTML report: its jobs that failed, were lost, timed out,
were preempted or cancelled, or needed a retry, with their messages and state changes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from db import tables
from db.engine import among
from db.queries import sweep_id
from db.reader import StoreReader
from db.tables import iso_seconds

TROUBLE_STATES = ("FAILED", "LOST", "TIMEOUT", "PREEMPTED", "CANCELLED")


def job_trouble(store: StoreReader, sweep: str, most: int = 200, events_per_job: int = 20) -> dict[str, Any]:
    """The jobs in charge of the sweep's levels that FAILED, were LOST, TIMEOUT, PREEMPTED or
    CANCELLED, or were retried (more than one attempt), at most `most` of them (worst state
    first), each with its last message, the runs it serves and its last `events_per_job` state
    changes. `counts`: every such job by state, and `retried`; `shown` < `total` when cut."""
    with store.read_connection() as conn:
        sid = sweep_id(conn, store, sweep)
        # Few jobs are in trouble: find them first (a pass over jobs), then keep the sweep's.
        cand = {
            r.job_id: r
            for r in conn.execute(
                sa.select(
                    tables.jobs.c.job_id,
                    tables.jobs.c.state,
                    tables.jobs.c.sched_id,
                    tables.jobs.c.attempts,
                    tables.jobs.c.message,
                    tables.jobs.c.updated_at,
                    tables.jobs.c.executor,
                ).where(sa.or_(tables.jobs.c.state.in_(TROUBLE_STATES), tables.jobs.c.attempts > 1))
            )
        }
        ids = sorted(cand)
        # Their levels, those levels' runs, and which of those runs are the sweep's: three index
        # lookups (a join lets SQLite walk every level of the sweep instead: 2 s on 150,000).
        levels_q = sa.select(tables.levels.c.level_id, tables.levels.c.job_id).where(
            among(conn, tables.levels.c.job_id, ids)
        )
        job_of: dict[str, str] = {lid: jid for lid, jid in conn.execute(levels_q) if jid is not None}
        run_jobs: dict[str, set[str]] = {}
        runs_q = sa.select(tables.run_levels.c.run_id, tables.run_levels.c.level_id).where(
            among(conn, tables.run_levels.c.level_id, job_of)
        )
        for run_id, level_id in conn.execute(runs_q):
            run_jobs.setdefault(run_id, set()).add(job_of[level_id])
        mine: dict[str, set[str]] = {}
        mine_q = sa.select(tables.sweep_runs.c.run_id).where(
            tables.sweep_runs.c.sweep_id == sid, among(conn, tables.sweep_runs.c.run_id, run_jobs)
        )
        for (run_id,) in conn.execute(mine_q):
            for job_id in run_jobs[run_id]:
                mine.setdefault(job_id, set()).add(run_id)
        jobs = [cand[j] for j in mine]
        # In TROUBLE_STATES' order: `mine` is a dict filled from sets, so the jobs' order is not
        # the same from one run to the next, and the counts must not follow it.
        counts = {st: n for st in TROUBLE_STATES if (n := sum(1 for j in jobs if j.state == st))}
        retried = sum(1 for j in jobs if (j.attempts or 0) > 1)
        rank = {st: i for i, st in enumerate(TROUBLE_STATES)}
        jobs.sort(key=lambda j: (rank.get(j.state, len(rank)), -(j.attempts or 0), j.job_id))
        shown = jobs[:most]
        run_ids = sorted({r for j in shown for r in mine[j.job_id]})
        named = sa.select(tables.runs.c.run_id, tables.runs.c.method, tables.runs.c.seed).where(
            among(conn, tables.runs.c.run_id, run_ids)
        )
        runs: dict[str, tuple[str, int]] = {r: (m, sd) for r, m, sd in conn.execute(named)}
        events: dict[str, list[dict[str, Any]]] = {}
        events_q = (
            sa.select(
                tables.events.c.job_id,
                tables.events.c.at,
                tables.events.c.state_from,
                tables.events.c.state_to,
                tables.events.c.sched_id,
                tables.events.c.message,
            )
            .where(among(conn, tables.events.c.job_id, [j.job_id for j in shown]))
            .order_by(tables.events.c.at, tables.events.c.id)
        )
        for e in conn.execute(events_q):
            events.setdefault(e.job_id, []).append(
                {
                    "at": iso_seconds(e.at),
                    "from": e.state_from,
                    "to": e.state_to,
                    "sched_id": e.sched_id,
                    "message": e.message,
                }
            )
    out = []
    for j in shown:
        evs = events.get(j.job_id, [])
        serves = sorted(mine[j.job_id], key=lambda r: (runs.get(r, ("", 0)), r))
        out.append(
            {
                "job": j.job_id,
                "state": j.state,
                "sched_id": j.sched_id,
                "attempts": j.attempts or 0,
                "executor": j.executor,
                "message": j.message,
                "updated_at": iso_seconds(j.updated_at),
                "runs": [
                    {"run_id": r, "method": runs.get(r, ("?", 0))[0], "seed": runs.get(r, ("?", 0))[1]}
                    for r in serves
                ],
                "events": evs[-events_per_job:],
                "events_total": len(evs),
            }
        )
    return {"counts": counts, "retried": retried, "total": len(jobs), "shown": len(out), "jobs": out}
