"""The results store as `tp-sweep status` reads it: the connection, the schema check, and the
reads status needs, through db/tables.py's Core tables alone.

Why a class of its own: SQLAlchemy's ORM and the mapped classes (db/schema.py) cost 0.1 s to
import, a tenth of a 10,000-run status. `StoreReader` never imports them; `Store` (db/store.py)
is a StoreReader with the ORM writes and entity reads on top. A reader that has to write (status
imports a level it found finished on disk, or marks a job LOST) asks `db.store.full_store(reader)`
for the Store, which shares its engine and is made only then (the reader never imports db.store:
the import goes one way, store on reader).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import sqlalchemy as sa

from core.errors import UserError
from core.levels import skipped_epochs
from db import migrate, tables
from db.engine import StoreError, among, display_url, make_engine
from db.tables import as_text

ACTIVE_STATES = ("PENDING", "RUNNING")
# Which job state a run shows when several jobs work on it: what needs attention first.
RUN_STATE_PRIORITY = (
    "RUNNING",
    "PREEMPTED",
    "TIMEOUT",
    "LOST",
    "FAILED",
    "PENDING",
    "CANCELLED",
    "PRUNED",
    "PLANNED",
)
RESUMABLE_STATES = ("PREEMPTED", "TIMEOUT", "LOST")
# The order runs are counted in, everywhere they are (status, its JSON, the report).
STATE_ORDER = (
    "PLANNED",
    "PENDING",
    "RUNNING",
    "COMPLETED",
    "PRUNED",
    "PREEMPTED",
    "TIMEOUT",
    "FAILED",
    "LOST",
    "CANCELLED",
)
# PRUNED: a search's pruner stopped the trial's job (orchestrator/search/driver.py), normal work.
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "PRUNED")


class QueryError(UserError, ValueError):
    """A read that cannot be answered as asked (unknown sweep, bad --where or --group-by): exit 2."""


class Unfinished(NamedTuple):
    """An unfinished level of a run, and the job in charge of it (state None: no job). A named
    tuple: a 10,000-run status makes tens of thousands, four times faster than a dataclass."""

    run_id: str
    level_id: str
    position: int  # in the run's training order
    depth: int
    epoch: int  # epochs done
    level_dir: str
    job_id: str | None
    state: str | None
    attempts: int
    skipped: int = 0  # epochs of the schedule it does not train (imp_wr resumes at step k)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class StoreReader:
    def __init__(self, url: str, *, migrate_schema: bool = True) -> None:
        self.url = url
        self.display_url = display_url(url)
        self.engine = make_engine(url)
        self._full: StoreReader | None = None  # its Store, once made (db.store.full_store)
        try:
            if migrate_schema:
                migrate.upgrade(self.engine)
            else:
                with self.engine.connect() as conn:
                    conn.execute(sa.text("select 1"))
        except sa.exc.OperationalError as exc:
            self.engine.dispose()
            raise StoreError(f"cannot reach the results store {self.display_url}: {_first_line(exc)}") from None
        except sa.exc.DatabaseError as exc:  # e.g. a --db file that is not a database
            self.engine.dispose()
            raise StoreError(f"cannot use the results store {self.display_url}: {_first_line(exc)}") from None
        except sa.exc.ArgumentError as exc:
            self.engine.dispose()
            raise StoreError(f"invalid database URL {self.display_url}: {_first_line(exc)}") from None

    @contextmanager
    def read_connection(self) -> Iterator[sa.Connection]:
        """A read-only transaction (SQLite: no write lock; status and query read big sweeps)."""
        with self.engine.connect().execution_options(tp_read_only=True) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SET LOCAL random_page_cost = 1.1"))
            yield conn

    def close(self) -> None:
        self.engine.dispose()

    # ---- sweeps --------------------------------------------------------------------------
    def sweep_spec(self, name: str) -> dict[str, Any] | None:
        """The sweep's stored spec ({} when it has none), or None when there is no such sweep."""
        sw = tables.sweeps.c
        with self.read_connection() as conn:
            row = conn.execute(sa.select(sw.spec).where(sw.name == name)).first()
        if row is None:
            return None
        spec = _json(row.spec)
        return spec if isinstance(spec, dict) else {}

    def sweep_points(self, name: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]] | None:
        """The sweep's grid points (method, sparsity, seed, axes_key, run_id) and the resolved
        config of each run they name; None when there is no such sweep. What a relaunch under
        the same name is compared with."""
        sw, gp, runs = tables.sweeps.c, tables.grid_points.c, tables.runs.c
        with self.read_connection() as conn:
            sweep_id = conn.scalar(sa.select(sw.id).where(sw.name == name))
            if sweep_id is None:
                return None
            points = [
                dict(r._mapping)
                for r in conn.execute(
                    sa.select(gp.method, gp.sparsity, gp.seed, gp.axes_key, gp.run_id).where(
                        gp.sweep_id == sweep_id
                    )
                )
            ]
            ids = sorted({p["run_id"] for p in points})
            configs = {
                r.run_id: _json(r.config)
                for r in conn.execute(sa.select(runs.run_id, runs.config).where(among(conn, runs.run_id, ids)))
            }
        return points, configs

    def sweep_names(self) -> list[str]:
        sw = tables.sweeps.c
        with self.read_connection() as conn:
            return list(conn.scalars(sa.select(sw.name).order_by(sw.created_at, sw.id)))

    # ---- levels and jobs -----------------------------------------------------------------
    def unfinished_levels(self, sweep: str) -> list[Unfinished]:
        """The unfinished levels of the sweep's runs (a row per run and level) with their jobs,
        found through the index on levels.finished_at: cheap however many levels are finished.
        The sweep is a correlated EXISTS on each row, not a join: joined, SQLite walks all of
        the sweep's levels instead, and dropping other sweeps' rows afterwards cost 0.15 s with a
        second sweep of 23,500 untrained levels in the store (0.09 s with EXISTS)."""
        lv, rl, job, sr = tables.levels.c, tables.run_levels.c, tables.jobs.c, tables.sweep_runs.c
        with self.read_connection() as conn:
            sid = conn.scalar(sa.select(tables.sweeps.c.id).where(tables.sweeps.c.name == sweep))
            if sid is None:
                return []
            q = (
                sa.select(
                    rl.run_id,
                    lv.level_id,
                    rl.position,
                    lv.depth,
                    lv.epoch,
                    lv.level_dir,
                    lv.job_id,
                    job.state,
                    job.attempts,
                    as_text(lv.step),  # decoded once per distinct step below, not per row
                )
                .select_from(tables.levels)
                .join(tables.run_levels, rl.level_id == lv.level_id)
                .outerjoin(tables.jobs, job.job_id == lv.job_id)
                .where(lv.finished_at.is_(None), sa.exists().where(sr.sweep_id == sid, sr.run_id == rl.run_id))
            )
            skipped: dict[str | None, int] = {}

            def skipped_of(step: Any) -> int:
                if isinstance(step, dict):  # PostgreSQL's driver decodes JSON itself
                    return skipped_epochs(step)
                if step not in skipped:
                    skipped[step] = skipped_epochs(_json(step))
                return skipped[step]

            return [
                Unfinished(
                    run_id,
                    level_id,
                    pos,
                    depth,
                    int(epoch or 0),
                    level_dir,
                    job_id,
                    state,
                    attempts or 0,
                    skipped_of(step),
                )
                for run_id, level_id, pos, depth, epoch, level_dir, job_id, state, attempts, step in conn.execute(
                    q
                ).all()
            ]

    def job_rows(self, job_ids: list[str]) -> list[Any]:
        """These jobs as rows (a job's columns as attributes, like the ORM's Job, read-only), in
        no particular order."""
        with self.read_connection() as conn:
            return list(conn.execute(sa.select(tables.jobs).where(among(conn, tables.jobs.c.job_id, job_ids))))


def _json(value: Any) -> Any:
    """A JSON column as a value (a driver may hand it over as text)."""
    return json.loads(value) if isinstance(value, str) else value
