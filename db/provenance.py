"""Where and how a sweep ran, as the store records it, for the HTML report: the sweep's row, the
hosts its jobs' attempts ran on, and the code its levels recorded."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from db import tables
from db.queries import sweep_id
from db.reader import StoreReader
from db.tables import iso_seconds


def provenance(store: StoreReader, sweep: str, most_hosts: int = 20) -> dict[str, Any]:
    """What the store records about where and how the sweep ran: the sweep row (created, executor,
    output folder), the hosts its jobs' attempts ran on (with counts) and their world sizes, and
    any per-level provenance column a later schema adds (`levels.provenance`: its distinct values
    with the number of levels each)."""
    with store.read_connection() as conn:
        sid = sweep_id(conn, store, sweep)
        sw = conn.execute(
            sa.select(tables.sweeps.c.created_at, tables.sweeps.c.executor, tables.sweeps.c.output_dir).where(
                tables.sweeps.c.id == sid
            )
        ).one()
        hosts = conn.execute(
            sa.select(tables.attempts.c.host, sa.func.count(), sa.func.max(tables.attempts.c.world_size))
            .join(tables.jobs, tables.jobs.c.job_id == tables.attempts.c.job_id)
            .where(tables.jobs.c.sweep == sweep)
            .group_by(tables.attempts.c.host)
            .order_by(sa.func.count().desc(), tables.attempts.c.host)
        ).all()
        level_cols = {c["name"] for c in sa.inspect(conn).get_columns("levels")}
        per_level = None
        if "provenance" in level_cols:
            col: sa.ColumnClause[Any] = sa.column("provenance")
            # Grouped as text: PostgreSQL has no equality operator for json.
            text = sa.cast(col, sa.Text)
            q = (
                sa.select(text, sa.func.count())
                .select_from(sa.table("levels", col, sa.column("level_id")))
                .where(
                    sa.column("level_id").in_(
                        sa.select(tables.run_levels.c.level_id)
                        .join(tables.sweep_runs, tables.sweep_runs.c.run_id == tables.run_levels.c.run_id)
                        .where(tables.sweep_runs.c.sweep_id == sid)
                    )
                )
                .group_by(text)
                .order_by(sa.func.count().desc())
                .limit(50)
            )
            per_level = [{"provenance": v, "levels": int(n)} for v, n in conn.execute(q)]
    return {
        "created_at": iso_seconds(sw.created_at),
        "executor": sw.executor,
        "output_dir": sw.output_dir,
        "hosts": [{"host": h, "attempts": int(n), "world_size": w} for h, n, w in hosts[:most_hosts]],
        "hosts_total": len(hosts),
        "attempts": sum(int(n) for _, n, _ in hosts),
        "level_provenance": per_level,
    }
