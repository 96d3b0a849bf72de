"""The results store: one SQLAlchemy engine and the few operations the product needs.

The orchestrator records plans and run states; the trainer reports through `RunRecorder`
(start an attempt, heartbeat, log an epoch, finish a level, finish the run) and never writes SQL.
SQLite is the default (WAL mode, so several local jobs can write at once); PostgreSQL on clusters.
"""
from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from db import migrate
from db.schema import Attempt, Epoch, Event, GridPoint, Level, Run, Sweep, SweepRun, utcnow

DEFAULT_URL = "sqlite:///tp-results.db"
ACTIVE_STATES = ("PENDING", "RUNNING")
RESUMABLE_STATES = ("PREEMPTED", "TIMEOUT", "LOST")
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED")


class StoreError(RuntimeError):
    """The store cannot be reached or used; the message names the (password-free) URL."""


def display_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password we could find either
        return "<unparsable database URL>"


def resolve_url(cli_url: str | None = None, spec_url: str | None = None) -> str:
    """--db, else TP_DB_URL, else the spec's db:, else SQLite in the working directory.
    A relative SQLite path is made absolute: jobs may start in another directory."""
    url = cli_url or os.environ.get("TP_DB_URL") or spec_url or DEFAULT_URL
    try:
        parsed = make_url(url)
    except Exception:
        return url  # Store() reports it
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not os.path.isabs(parsed.database):
        return parsed.set(database=os.path.abspath(parsed.database)).render_as_string(hide_password=False)
    return url


def _engine(url: str) -> sa.Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise StoreError(f"invalid database URL {display_url(url)!r}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001 - DB-API objects
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writing jobs
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is what we ship
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10}
                            if parsed.get_backend_name() == "postgresql" else {})


class Store:
    def __init__(self, url: str, *, migrate_schema: bool = True) -> None:
        self.url = url
        self.display_url = display_url(url)
        self.engine = _engine(url)
        try:
            if migrate_schema:
                migrate.upgrade(self.engine)
            else:
                with self.engine.connect() as conn:
                    conn.execute(sa.text("select 1"))
        except sa.exc.OperationalError as exc:
            raise StoreError(f"cannot reach the results store {self.display_url}: "
                             f"{str(exc.orig).strip().splitlines()[0]}") from None
        except sa.exc.ArgumentError as exc:
            raise StoreError(f"invalid database URL {self.display_url}: {exc}") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()

    # ---- sweeps and plans (orchestrator) -------------------------------------------------
    def get_sweep(self, name: str) -> Sweep | None:
        with self.session() as s:
            return s.scalar(sa.select(Sweep).where(Sweep.name == name))

    def sweep_names(self) -> list[str]:
        with self.session() as s:
            return list(s.scalars(sa.select(Sweep.name).order_by(Sweep.created_at)))

    def record_plan(self, plan: Any, spec: dict[str, Any], run_dirs: dict[str, str]) -> list[str]:
        """Upsert the sweep, its runs and grid points in one transaction; returns new run ids."""
        new: list[str] = []
        with self.session() as s:
            sweep = s.scalar(sa.select(Sweep).where(Sweep.name == plan.spec.name))
            if sweep is None:
                sweep = Sweep(name=plan.spec.name, spec=spec, executor=plan.spec.executor.kind,
                              output_dir=plan.spec.output_dir)
                s.add(sweep)
                s.flush()
            else:
                sweep.spec, sweep.executor = spec, plan.spec.executor.kind
            for r in plan.runs:
                if s.get(Run, r.run_id) is None:
                    s.add(Run(run_id=r.run_id, method=r.method, seed=r.seed, axes=r.axes,
                              sparsities=r.sparsities, densities=r.densities, config=r.config,
                              run_dir=run_dirs[r.run_id], state="PLANNED"))
                    s.flush()  # the run row first: events and links reference it
                    s.add(Event(run_id=r.run_id, state_from=None, state_to="PLANNED",
                                message=f"planned by sweep {plan.spec.name}"))
                    new.append(r.run_id)
                if s.get(SweepRun, (sweep.id, r.run_id)) is None:
                    s.add(SweepRun(sweep_id=sweep.id, run_id=r.run_id))
            s.flush()
            for p in plan.points:
                key = json.dumps(p.axes, sort_keys=True)
                exists = s.scalar(sa.select(GridPoint.id).where(
                    GridPoint.sweep_id == sweep.id, GridPoint.method == p.method,
                    GridPoint.sparsity == p.sparsity, GridPoint.seed == p.seed,
                    GridPoint.axes_key == key))
                if exists is None:
                    s.add(GridPoint(sweep_id=sweep.id, run_id=p.run_id, method=p.method,
                                    sparsity=p.sparsity, seed=p.seed, axes=p.axes, axes_key=key,
                                    level=p.level))
        return new

    def sweep_runs(self, name: str) -> list[Run]:
        with self.session() as s:
            q = (sa.select(Run).join(SweepRun, SweepRun.run_id == Run.run_id)
                 .join(Sweep, Sweep.id == SweepRun.sweep_id).where(Sweep.name == name)
                 .order_by(Run.method, Run.seed, Run.run_id))
            return list(s.scalars(q))

    def get_run(self, run_id: str) -> Run | None:
        with self.session() as s:
            return s.get(Run, run_id)

    def find_runs(self, prefix: str) -> list[Run]:
        with self.session() as s:
            return list(s.scalars(sa.select(Run).where(Run.run_id.startswith(prefix))))

    def set_state(self, run_id: str, to: str, *, job_id: str | None = None,
                  executor: str | None = None, message: str | None = None,
                  only_from: tuple[str, ...] | None = None) -> bool:
        """Move a run to `to` and write the event; with `only_from`, only from those states
        (a compare-and-set, so the controller never overwrites what a trainer just reported)."""
        with self.session() as s:
            run = s.get(Run, run_id, with_for_update=True)
            if run is None:
                raise StoreError(f"no run {run_id} in {self.display_url}")
            if only_from is not None and run.state not in only_from:
                return False
            s.add(Event(run_id=run_id, state_from=run.state, state_to=to,
                        job_id=job_id or run.job_id, message=message))
            run.state = to
            run.message = message
            if job_id is not None:
                run.job_id = job_id
            if executor is not None:
                run.executor = executor
            return True

    def events(self, run_id: str) -> list[Event]:
        with self.session() as s:
            return list(s.scalars(sa.select(Event).where(Event.run_id == run_id).order_by(Event.id)))

    def levels(self, run_id: str) -> list[Level]:
        with self.session() as s:
            return list(s.scalars(sa.select(Level).where(Level.run_id == run_id).order_by(Level.level)))

    def epochs(self, run_id: str) -> list[Epoch]:
        with self.session() as s:
            return list(s.scalars(sa.select(Epoch).where(Epoch.run_id == run_id)
                                  .order_by(Epoch.level, Epoch.epoch)))

    def attempts(self, run_id: str) -> list[Attempt]:
        with self.session() as s:
            return list(s.scalars(sa.select(Attempt).where(Attempt.run_id == run_id)
                                  .order_by(Attempt.attempt)))


class RunRecorder:
    """The trainer's whole view of the store (rank 0 only). Every write is idempotent per
    (run, level, epoch) so a resumed job that replays an epoch overwrites instead of duplicating."""

    def __init__(self, url: str, run_id: str) -> None:
        self.store = Store(url)
        self.run_id = run_id
        self.attempt_id: int | None = None

    def start_attempt(self, job_id: str | None, world_size: int, resumed_from: str | None) -> int:
        with self.store.session() as s:
            run = s.get(Run, self.run_id)
            if run is None:
                raise StoreError(f"run {self.run_id} is not recorded in {self.store.display_url}")
            run.attempts += 1
            att = Attempt(run_id=self.run_id, attempt=run.attempts, job_id=job_id,
                          host=socket.gethostname(), world_size=world_size, resumed_from=resumed_from)
            s.add(att)
            msg = f"attempt {run.attempts}" + (f", resumed from {resumed_from}" if resumed_from else "")
            s.add(Event(run_id=self.run_id, state_from=run.state, state_to="RUNNING",
                        job_id=job_id, message=msg))
            run.state, run.heartbeat_at, run.message = "RUNNING", utcnow(), None
            if job_id:
                run.job_id = job_id
            s.flush()
            self.attempt_id = att.id
            return run.attempts

    def heartbeat(self, level: int, epoch: int) -> None:
        with self.store.session() as s:
            s.execute(sa.update(Run).where(Run.run_id == self.run_id)
                      .values(level=level, epoch=epoch, heartbeat_at=utcnow()))

    def log_epoch(self, level: int, epoch: int, metrics: dict[str, float]) -> None:
        with self.store.session() as s:
            s.merge(Epoch(run_id=self.run_id, level=level, epoch=epoch, **metrics))
            s.execute(sa.update(Run).where(Run.run_id == self.run_id)
                      .values(level=level, epoch=epoch + 1, heartbeat_at=utcnow()))

    def finish_level(self, level: int, metrics: dict[str, Any]) -> None:
        with self.store.session() as s:
            s.merge(Level(run_id=self.run_id, level=level, **metrics))

    def finish_run(self, state: str, message: str | None = None) -> None:
        with self.store.session() as s:
            run = s.get(Run, self.run_id)
            if run.state == "CANCELLED" and state != "COMPLETED":
                # The user cancelled it: the trainer's own stop (scancel sends SIGTERM, which it
                # saves on) must not turn it back into a resumable PREEMPTED run.
                message = f"stopped after cancel ({state}: {message})"
                state = "CANCELLED"
            s.add(Event(run_id=self.run_id, state_from=run.state, state_to=state,
                        job_id=run.job_id, message=message))
            run.state, run.message, run.heartbeat_at = state, message, utcnow()
            if self.attempt_id is not None:
                att = s.get(Attempt, self.attempt_id)
                att.ended_at, att.outcome = utcnow(), state

    def close(self) -> None:
        self.store.close()


def level_summary(store: Store, run_ids: list[str]) -> tuple[dict[str, int], dict[str, float]]:
    """Per run: levels finished, and the test accuracy of the last finished level."""
    done: dict[str, int] = {}
    last: dict[str, float] = {}
    with store.session() as s:
        rows = s.execute(sa.select(Level.run_id, Level.level, Level.test_acc)
                         .where(Level.run_id.in_(run_ids)).order_by(Level.run_id, Level.level))
        for run_id, level, acc in rows:
            done[run_id] = level + 1
            if acc is not None:
                last[run_id] = acc
    return done, last
