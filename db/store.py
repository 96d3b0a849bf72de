"""The results store, orchestrator side: plans, levels, jobs and their states.

The trainer reports through `db.recorder.JobRecorder` and never writes SQL itself; reads for
status and query live in `db.reader`, `db.summaries` and `db.queries`, on the Core tables.
Every write that two processes may race (two launches of one spec, a trainer and the
controller) is an upsert or a compare-and-set; the one step that must see a consistent picture
(deciding which levels still need a job, and claiming them) runs in a serialized transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.engine import StoreError, among, rowcount, upsert
from db.reader import ACTIVE_STATES, StoreReader
from db.schema import Epoch, Event, GridPoint, Job, Level, Run, RunLevel, Sweep, SweepRun
from db.tables import utcnow

_PG_PLAN_LOCK = 0x7470_706C  # "tppl": serializes planning transactions
RESULT_COLUMNS = (
    "achieved_sparsity",
    "test_acc",
    "test_top5",
    "test_loss",
    "best_test_acc",
    "train_loss",
    "train_acc",
    "epochs",
    "seconds",
    "network_sparsity",
    "params",
    "nonzero_params",
    "flops_dense",
    "flops",
    "resolution",
)
EPOCH_COLUMNS = (
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "test_top5",
    "lr",
    "steps",
    "seconds",
    "images_per_s",
)


@dataclass(frozen=True)
class LevelState:
    finished: bool
    job_id: str | None


class Store(StoreReader):
    """The results store with everything the orchestrator writes and reads as entities (the
    ORM); the Core reads it shares with `tp-sweep status` are StoreReader's."""

    @classmethod
    def sharing(cls, reader: StoreReader) -> Store:
        """The Store on a reader's engine (schema already checked), for a reader that has to write."""
        store = cls.__new__(cls)
        store.__dict__.update(reader.__dict__)
        store._full = store
        return store

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only transaction, as an ORM session (StoreReader.read_connection's)."""
        with self.read_connection() as conn, Session(bind=conn, expire_on_commit=False) as s:
            yield s

    @contextmanager
    def serialized(self) -> Iterator[Session]:
        """A transaction no other serialized one overlaps: PostgreSQL's advisory lock, SQLite's
        BEGIN IMMEDIATE, which every writing session takes (the database write lock, before the
        first read)."""
        with self.session() as s:
            if self.engine.dialect.name == "postgresql":
                s.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_PLAN_LOCK})
            yield s

    # ---- sweeps and plans ----------------------------------------------------------------
    def get_sweep(self, name: str) -> Sweep | None:
        with self.reading() as s:
            return s.scalar(sa.select(Sweep).where(Sweep.name == name))

    def record_plan(self, plan: Any, spec: dict[str, Any], levels_dir: str, replace: bool = False) -> None:
        """Upsert the sweep, its runs, levels and grid points: bulk statements, one transaction.
        The sweep keeps the grid points the plan does not list, unless `replace` (launch
        --replace): then it holds exactly the plan's (the runs it drops keep their rows)."""
        now = utcnow()
        with self.session() as s:
            conn = s.connection()
            upsert(
                conn,
                Sweep.__table__,
                [
                    {
                        "name": plan.spec.name,
                        "spec": spec,
                        "executor": plan.spec.executor.kind,
                        "output_dir": plan.output_dir,
                        "created_at": now,
                    }
                ],
                ["name"],
                ["spec", "executor", "output_dir"],
            )
            sweep_id = s.scalar(sa.select(Sweep.id).where(Sweep.name == plan.spec.name))
            upsert(
                conn,
                Run.__table__,
                [
                    {
                        "run_id": r.run_id,
                        "method": r.method,
                        "seed": r.seed,
                        "axes": r.axes,
                        "config": r.config,
                        "created_at": now,
                    }
                    for r in plan.runs
                ],
                ["run_id"],
            )
            upsert(
                conn,
                SweepRun.__table__,
                [{"sweep_id": sweep_id, "run_id": r.run_id} for r in plan.runs],
                ["sweep_id", "run_id"],
            )
            upsert(
                conn,
                Level.__table__,
                [
                    {
                        "level_id": lv.level_id,
                        "parent_id": lv.parent,
                        "root_id": lv.root,
                        "depth": lv.depth,
                        "kind": lv.kind,
                        "density": lv.density,
                        "step": lv.step,
                        "level_dir": f"{levels_dir}/{lv.level_id}",
                        "job_id": None,
                        "epoch": 0,
                        "epochs": 0,
                        "seconds": 0.0,
                        "created_at": now,
                    }
                    for lv in plan.levels.values()
                    if lv.level_id not in getattr(plan, "mask_only", ())
                ],  # never trained: no row
                ["level_id"],
            )
            upsert(
                conn,
                RunLevel.__table__,
                [
                    {"run_id": r.run_id, "level_id": lid, "position": i, "kind": r.kinds[lid]}
                    for r in plan.runs
                    for i, lid in enumerate(r.levels)
                ],
                ["run_id", "level_id"],
                ["kind"],  # a store of before 0008 guessed it from the level's first run
            )
            _count_levels(conn, [r.run_id for r in plan.runs])
            upsert(
                conn,
                GridPoint.__table__,
                [
                    {
                        "sweep_id": sweep_id,
                        "run_id": p.run_id,
                        "method": p.method,
                        "sparsity": p.sparsity,
                        "seed": p.seed,
                        "axes": p.axes,
                        "axes_key": json.dumps(p.axes, sort_keys=True),
                        "level_id": p.level_id,
                        "level": p.depth,
                        "naive_levels": p.naive_levels,
                    }
                    for p in plan.points
                ],
                ["sweep_id", "method", "sparsity", "seed", "axes_key"],
                ["run_id", "level_id", "level", "naive_levels"],
            )
            if replace:
                wanted = {
                    (p.method, float(p.sparsity), int(p.seed), json.dumps(p.axes, sort_keys=True))
                    for p in plan.points
                }
                gone = [
                    row.id
                    for row in s.execute(
                        sa.select(
                            GridPoint.id, GridPoint.method, GridPoint.sparsity, GridPoint.seed, GridPoint.axes_key
                        ).where(GridPoint.sweep_id == sweep_id)
                    )
                    if (row.method, float(row.sparsity), int(row.seed), row.axes_key) not in wanted
                ]
                for i in range(0, len(gone), 900):
                    s.execute(sa.delete(GridPoint).where(GridPoint.id.in_(gone[i : i + 900])))
            # A run none of the sweep's grid points names any more was superseded (its config or,
            # under reuse same-code, its code changed): it leaves the sweep, its rows stay.
            s.execute(
                sa.delete(SweepRun).where(
                    SweepRun.sweep_id == sweep_id,
                    SweepRun.run_id.not_in(sa.select(GridPoint.run_id).where(GridPoint.sweep_id == sweep_id)),
                )
            )

    # ---- levels --------------------------------------------------------------------------
    def level_states(self, level_ids: list[str], s: Session | None = None) -> dict[str, LevelState]:
        def read(sess: Session) -> dict[str, LevelState]:
            out = {}
            for i in range(0, len(level_ids), 900):
                q = sa.select(Level.level_id, Level.finished_at, Level.job_id).where(
                    Level.level_id.in_(level_ids[i : i + 900])
                )
                out.update({lid: LevelState(fin is not None, job) for lid, fin, job in sess.execute(q)})
            return out

        if s is not None:
            return read(s)
        with self.reading() as sess:
            return read(sess)

    def level_codes(self, level_ids: list[str]) -> dict[str, str | None]:
        """The code that trained each finished level among `level_ids` (None: not recorded)."""
        out: dict[str, str | None] = {}
        with self.reading() as s:
            for i in range(0, len(level_ids), 900):
                out.update(
                    s.execute(
                        sa.select(Level.level_id, Level.code).where(
                            Level.level_id.in_(level_ids[i : i + 900]), Level.finished_at.is_not(None)
                        )
                    ).all()
                )
        return out

    def level_provenances(self, level_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The provenance each finished level among `level_ids` recorded ({}: none)."""
        out: dict[str, dict[str, Any]] = {}
        with self.reading() as s:
            for i in range(0, len(level_ids), 900):
                for lid, prov in s.execute(
                    sa.select(Level.level_id, Level.provenance).where(
                        Level.level_id.in_(level_ids[i : i + 900]), Level.finished_at.is_not(None)
                    )
                ).all():
                    if isinstance(prov, str):  # SQLite's JSON may come back as text
                        prov = json.loads(prov)
                    out[lid] = prov if isinstance(prov, dict) else {}
        return out

    def import_results(self, results: dict[str, dict[str, Any]]) -> None:
        """Record finished levels from their metrics.json (with their epochs): what the disk
        says is the truth, so a store that missed it, or never saw it, catches up."""
        if not results:
            return
        with self.session() as s:
            conn = s.connection()
            for lid, res in results.items():
                values = {c: res.get(c) for c in RESULT_COLUMNS}
                values["epochs"] = int(values["epochs"] or 0)
                values["seconds"] = float(values["seconds"] or 0.0)
                prov = res.get("provenance") if isinstance(res.get("provenance"), dict) else None
                values["provenance"] = prov
                codes = [str(c) for c in (prov or {}).get("codes") or []]
                # a level trained part by one code and part by another (reuse any, resumed after
                # a change) is recorded under both, so launch counts it as other code
                values["code"] = (
                    "+".join(codes) if len(codes) > 1 else str(prov["code"]) if prov and prov.get("code") else None
                )
                values["code"] = values["code"][:40] if values["code"] else None
                values["sources"] = str(prov["sources"])[:40] if prov and prov.get("sources") else None
                s.execute(
                    sa.update(Level)
                    .where(Level.level_id == lid, Level.finished_at.is_(None))
                    .values(finished_at=utcnow(), epoch=values["epochs"], **values)
                )
            upsert(
                conn,
                Epoch.__table__,
                [
                    {
                        "level_id": lid,
                        "epoch": int(h["epoch"]),
                        "at": utcnow(),
                        **{c: h.get(c) for c in EPOCH_COLUMNS},
                    }
                    for lid, res in results.items()
                    for h in res.get("history", [])
                    if isinstance(h, dict) and "epoch" in h
                ],
                ["level_id", "epoch"],
                list(EPOCH_COLUMNS),
            )

    # ---- jobs ----------------------------------------------------------------------------
    def create_jobs(self, s: Session, jobs: list[Any], sweep: str, job_files: dict[str, str]) -> None:
        """Insert new jobs (PLANNED) and make each the owner of its levels (inside serialized())."""
        now = utcnow()
        upsert(
            s.connection(),
            Job.__table__,
            [
                {
                    "job_id": j.job_id,
                    "levels": j.levels,
                    "depends_on": j.depends_on,
                    "state": "PLANNED",
                    "executor": None,
                    "sched_id": None,
                    "sweep": sweep,
                    "job_file": job_files[j.job_id],
                    "attempts": 0,
                    "level_id": None,
                    "heartbeat_at": None,
                    "message": None,
                    "created_at": now,
                    "updated_at": now,
                }
                for j in jobs
            ],
            ["job_id"],
        )
        for j in jobs:
            s.execute(
                sa.update(Level)
                .where(Level.level_id.in_(j.levels), Level.job_id.is_(None))
                .values(job_id=j.job_id)
            )
            s.add(
                Event(
                    job_id=j.job_id,
                    state_from=None,
                    state_to="PLANNED",
                    message=f"planned by sweep {sweep}: {len(j.levels)} levels",
                )
            )

    def jobs(self, job_ids: list[str]) -> dict[str, Job]:
        with self.reading() as s:
            out = {}
            for i in range(0, len(job_ids), 900):
                out.update(
                    {j.job_id: j for j in s.scalars(sa.select(Job).where(Job.job_id.in_(job_ids[i : i + 900])))}
                )
            return out

    def jobs_in_sched(self, sched_ids: list[str], exclude: list[str] | None = None) -> dict[str, list[str]]:
        """Scheduler id -> the jobs (but `exclude`) it may still run: several when it is a packed
        job (executor.pack), active or preempted (to be requeued)."""
        out: dict[str, list[str]] = {}
        skip = set(exclude or ())
        with self.reading() as s:
            for i in range(0, len(sched_ids), 900):
                q = sa.select(Job.sched_id, Job.job_id).where(
                    Job.sched_id.in_(sched_ids[i : i + 900]), Job.state.in_((*ACTIVE_STATES, "PREEMPTED"))
                )
                for sched_id, job_id in s.execute(q).all():
                    if job_id not in skip and sched_id is not None:
                        out.setdefault(sched_id, []).append(job_id)
        return out

    def jobs_of_levels(self, level_ids: list[str]) -> dict[str, Job]:
        """The jobs in charge of these levels' unfinished part."""
        with self.reading() as s:
            ids: set[str] = set()
            for i in range(0, len(level_ids), 900):
                ids.update(
                    s.scalars(
                        sa.select(Level.job_id).where(
                            Level.level_id.in_(level_ids[i : i + 900]),
                            Level.finished_at.is_(None),
                            Level.job_id.is_not(None),
                        )
                    )
                )
        return self.jobs(sorted(ids))

    def set_job_state(
        self,
        job_id: str,
        to: str,
        *,
        sched_id: str | None = None,
        executor: str | None = None,
        message: str | None = None,
        only_from: tuple[str, ...] | None = None,
        clear_sched: bool = False,
        failure: str | None = None,
    ) -> bool:
        """Move a job to `to` and write the event; with `only_from`, a compare-and-set (so the
        controller never overwrites what a trainer just reported, and one of two racing
        launches wins a submission)."""
        with self.session() as s:
            q = sa.update(Job).where(Job.job_id == job_id)
            if only_from is not None:
                q = q.where(Job.state.in_(only_from))
            old = s.execute(sa.select(Job.state, Job.sched_id).where(Job.job_id == job_id)).first()
            if old is None:
                raise StoreError(f"no job {job_id} in {self.display_url}")
            values: dict[str, Any] = {"state": to, "message": message, "updated_at": utcnow()}
            if sched_id is not None or clear_sched:
                values["sched_id"] = sched_id
            if executor is not None:
                values["executor"] = executor
            if failure is not None:
                values["failure"] = failure
            if rowcount(s.execute(q.values(**values))) == 0:
                return False
            s.add(
                Event(
                    job_id=job_id,
                    state_from=old.state,
                    state_to=to,
                    sched_id=sched_id or old.sched_id,
                    message=message,
                )
            )
            return True

    def claim(self, job_id: str, from_states: tuple[str, ...]) -> bool:
        """Take a job for submission (-> PENDING without a scheduler id) if it is still in one of
        `from_states`: of two launches racing for it, exactly one wins."""
        with self.session() as s:
            # A new submission starts with a clean slate: the supervisor judges its own failure.
            return (
                rowcount(
                    s.execute(
                        sa.update(Job)
                        .where(Job.job_id == job_id, Job.state.in_(from_states))
                        .values(
                            state="PENDING",
                            sched_id=None,
                            message="submitting",
                            failure=None,
                            verdict=None,
                            retry_at=None,
                            updated_at=utcnow(),
                        )
                    )
                )
                == 1
            )

    def submitted(
        self, job_id: str, state_from: str, sched_id: str, executor: str, message: str | None = None
    ) -> bool:
        """Record the scheduler's id of a claimed job. False when the claim was lost meanwhile
        (`tp-sweep cancel` took the job): the caller cancels the submission it just made."""
        message = message or f"submitted to {executor}"
        with self.session() as s:
            done = (
                rowcount(
                    s.execute(
                        sa.update(Job)
                        .where(Job.job_id == job_id, Job.state == "PENDING", Job.sched_id.is_(None))
                        .values(sched_id=sched_id, executor=executor, message=message, updated_at=utcnow())
                    )
                )
                == 1
            )
            if done:
                s.add(
                    Event(
                        job_id=job_id,
                        state_from=state_from,
                        state_to="PENDING",
                        sched_id=sched_id,
                        message=message,
                    )
                )
            return done

    def unclaim(self, job_id: str, state: str, message: str | None = None) -> None:
        with self.session() as s:
            s.execute(
                sa.update(Job)
                .where(Job.job_id == job_id, Job.state == "PENDING", Job.sched_id.is_(None))
                .values(state=state, message=message, updated_at=utcnow())
            )

    def note(self, job_id: str, message: str) -> None:
        """Say why a job waits, without a state change."""
        with self.session() as s:
            s.execute(sa.update(Job).where(Job.job_id == job_id).values(message=message))

    def external_parents(self, job: Job) -> dict[str, LevelState]:
        """The levels a job's first levels continue from that other jobs train: it may start
        once they are finished."""
        with self.reading() as s:
            parents: set[str] = set(
                s.scalars(
                    sa.select(Level.parent_id).where(Level.level_id.in_(job.levels), Level.parent_id.is_not(None))
                )
            )
        parents -= set(job.levels)
        return self.level_states(sorted(parents))

    def events(self, job_ids: list[str]) -> list[Event]:
        with self.reading() as s:
            return list(s.scalars(sa.select(Event).where(Event.job_id.in_(job_ids)).order_by(Event.at, Event.id)))

    # ---- runs ----------------------------------------------------------------------------
    def sweep_runs(self, name: str) -> list[Run]:
        with self.reading() as s:
            q = (
                sa.select(Run)
                .join(SweepRun, SweepRun.run_id == Run.run_id)
                .join(Sweep, Sweep.id == SweepRun.sweep_id)
                .where(Sweep.name == name)
                .order_by(Run.method, Run.seed, Run.run_id)
            )
            return list(s.scalars(q))

    def find_runs(self, prefix: str) -> list[Run]:
        with self.reading() as s:
            return list(s.scalars(sa.select(Run).where(Run.run_id.startswith(prefix)).limit(50)))

    def run_levels(self, run_id: str) -> list[Level]:
        with self.reading() as s:
            return list(
                s.scalars(
                    sa.select(Level)
                    .join(RunLevel, RunLevel.level_id == Level.level_id)
                    .where(RunLevel.run_id == run_id)
                    .order_by(RunLevel.position)
                )
            )

    def run_level_kinds(self, run_id: str) -> dict[str, str]:
        """Each level's role in this run (run_levels.kind): a shared level's differs by run."""
        with self.reading() as s:
            q = sa.select(RunLevel.level_id, RunLevel.kind).where(RunLevel.run_id == run_id)
            return {lid: kind for lid, kind in s.execute(q).all()}

    def epochs(self, level_id: str) -> list[Epoch]:
        with self.reading() as s:
            return list(s.scalars(sa.select(Epoch).where(Epoch.level_id == level_id).order_by(Epoch.epoch)))


def full_store(store: StoreReader) -> Store:
    """The full Store on a reader's engine, made on its first use (it imports the ORM, which a
    reader that only reads never pays for) and kept on the reader; a Store is its own."""
    if isinstance(store, Store):
        return store
    if store._full is None:
        store._full = Store.sharing(store)
    return cast(Store, store._full)


def _count_levels(conn: sa.Connection, run_ids: list[str]) -> None:
    """Set these runs' n_levels and last_level_id from their run_levels, after those changed: a
    later plan may give a run more levels (a sweep extended to a higher sparsity)."""
    rl = RunLevel.__table__.alias("rl")
    count = sa.select(sa.func.count()).select_from(rl).where(rl.c.run_id == Run.run_id).scalar_subquery()
    last = (
        sa.select(rl.c.level_id)
        .where(rl.c.run_id == Run.run_id)
        .order_by(rl.c.position.desc(), rl.c.level_id.desc())
        .limit(1)
        .scalar_subquery()
    )
    conn.execute(sa.update(Run).where(among(conn, Run.run_id, run_ids)).values(n_levels=count, last_level_id=last))
