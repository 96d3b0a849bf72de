"""Where a sweep stands: each run's state, progress, elapsed time and ETA, and the sweep's levels,
epochs and device-hours.

A run has no state of its own: it is done when every level it needs is finished, and otherwise
as busy as the busiest job working on what is missing.

Built for sweeps of 10,000 runs and 150,000 levels, where looking up every level costs more than
everything else together: the levels looked at one by one are the unfinished ones (through the
index on finished_at), each run's last finished level, and the finished levels of unfinished
runs. Counts per run come from run_levels alone, aggregated in SQL; the sweep's totals from one
pass over the levels table when the sweep holds every run of the store (_sweep_level_sums says
what it does otherwise).

Time estimates come from measured epochs: a level trains `schedule.epochs` epochs (the run's
config), less those an imp_wr level skips by resuming at its rewind point; a run's ETA is the
epochs its unfinished levels still need times its own mean epoch time (finished levels and the
epochs of the level in training), or the sweep's mean when it has none.
It counts training time only, not time waiting in a queue. Device-hours are seconds of training
times the devices a job holds: GPUs (executor gpus_per_node x nodes) or, without GPUs, CPUs
(cpus_per_task x nodes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from db import tables
from db.engine import among
from db.reader import ACTIVE_STATES, RUN_STATE_PRIORITY, QueryError, StoreReader, Unfinished
from db.tables import AxesDecoder, as_datetime, as_text, utcnow


@dataclass
class RunSummary:
    run_id: str
    method: str
    seed: int
    axes: dict[str, Any]
    sparsities: list[float] = field(default_factory=list)  # this sweep's targets for the run
    state: str = "PLANNED"
    levels_done: int = 0
    levels_total: int = 0
    depth: int = 0  # depth of the level being trained (or the last finished)
    epoch: int = 0  # epochs finished in the level being trained
    job_id: str | None = None  # the job shown (the one that decides the state)
    sched_id: str | None = None
    attempts: int = 0
    message: str | None = None
    test_acc: float | None = None  # of the last level finished, in training order (a fraction)
    epochs_left: int | None = None  # epochs its unfinished levels still need (None: unknown)
    epoch_s: float | None = None  # unfinished runs: mean measured epoch time, its own or the sweep's
    elapsed_s: float | None = None  # the job shown: first attempt's start -> now, or its last end
    eta_s: float | None = None  # epochs_left x epoch_s: training time left, queue not included

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state,
            "method": self.method,
            "seed": self.seed,
            "sparsities": self.sparsities,
            "level": self.levels_done,
            "levels_total": self.levels_total,
            "depth": self.depth,
            "epoch": self.epoch,
            "job": self.job_id,
            "job_id": self.sched_id,
            "attempts": self.attempts,
            "axes": self.axes,
            "message": self.message,
            "test_acc": self.test_acc,
            "epochs_left": self.epochs_left,
            "epoch_s": _round(self.epoch_s),
            "elapsed_s": _round(self.elapsed_s),
            "eta_s": _round(self.eta_s),
        }


@dataclass
class SweepTotals:
    """The sweep's distinct levels (a level shared by several runs counts once)."""

    levels_done: int = 0
    levels_total: int = 0
    epochs_done: int = 0
    epochs_left: int | None = None
    epoch_s: float | None = None  # mean measured epoch time over the sweep
    device: str = "CPU"  # what a job holds: GPU when the executor asks for GPUs
    devices_per_job: int = 1
    device_hours_used: float = 0.0  # measured epoch seconds x devices per job
    device_hours_left: float | None = None  # epochs_left x epoch_s x devices per job
    elapsed_s: float | None = None  # first attempt of a job it planned -> now, or the last end

    def as_dict(self) -> dict[str, Any]:
        gpu = self.device == "GPU"
        return {
            "levels_done": self.levels_done,
            "levels_total": self.levels_total,
            "epochs_done": self.epochs_done,
            "epochs_left": self.epochs_left,
            "epoch_s": _round(self.epoch_s),
            "device": self.device,
            "devices_per_job": self.devices_per_job,
            "device_hours_used": _round(self.device_hours_used, 3),
            "device_hours_left": _round(self.device_hours_left, 3),
            "gpu_hours_used": _round(self.device_hours_used, 3) if gpu else 0.0,
            "gpu_hours_left": (_round(self.device_hours_left, 3) if gpu else 0.0),
            "elapsed_s": _round(self.elapsed_s),
        }


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(float(x), digits)


def _sweep(conn, store: StoreReader, sweep: str) -> tuple[int, dict[str, Any]]:
    row = conn.execute(
        sa.select(tables.sweeps.c.id, tables.sweeps.c.spec).where(tables.sweeps.c.name == sweep)
    ).first()
    if row is None:
        raise QueryError(f"no sweep named {sweep!r} in {store.display_url}")
    return row.id, row.spec if isinstance(row.spec, dict) else {}


def devices(spec: dict[str, Any]) -> tuple[str, int]:
    """("GPU", gpus per job) when the stored spec's executor asks for GPUs, else ("CPU", cpus)."""
    ex = spec.get("executor") or {}
    nodes = int(ex.get("nodes") or 1)
    gpus = int(ex.get("gpus_per_node") or 0)
    if gpus > 0:
        return "GPU", gpus * nodes
    return "CPU", int(ex.get("cpus_per_task") or 1) * nodes


def run_summaries(store: StoreReader, sweep: str) -> list[RunSummary]:
    return sweep_status(store, sweep)[0]


@dataclass
class _JobInfo:
    job_id: str
    state: str
    sched_id: str | None
    attempts: int
    message: str | None
    start: Any = None  # first attempt's start
    end: Any = None  # last attempt's end
    open: int = 0  # attempts not ended


@dataclass
class RunsRead:
    """What status reads of every run of a sweep before it knows the unfinished levels: each
    run's row and last level, the sweep's totals (read_runs). Status reads it while reconcile
    asks the disk and the scheduler."""

    sid: int
    spec: dict[str, Any]
    details: bool
    runs: dict[str, RunSummary]
    points: list[tuple[str, float]] | None  # every (run, target) of the sweep, with details
    totals: SweepTotals


def read_runs(store: StoreReader, sweep: str, details_up_to: int | None = None) -> RunsRead:
    """The part of sweep_status that needs no unfinished levels (`details_up_to`: see there)."""
    with store.read_connection() as conn:
        sid, spec = _sweep(conn, store, sweep)
        details = (
            details_up_to is None
            or (
                conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(tables.sweep_runs)
                    .where(tables.sweep_runs.c.sweep_id == sid)
                )
                or 0
            )
            <= details_up_to
        )
        runs = _per_run(conn, sid, details)
        points = None
        if details:
            q = sa.select(tables.grid_points.c.run_id, tables.grid_points.c.sparsity).where(
                tables.grid_points.c.sweep_id == sid
            )
            points = [(run_id, sp) for run_id, sp in conn.execute(q.order_by(tables.grid_points.c.sparsity)).all()]
        totals = _totals(conn, sid, spec, sweep)
    return RunsRead(sid, spec, details, runs, points, totals)


@dataclass
class WorkRead:
    """What status reads of the runs still at work, from their unfinished levels (read_work)."""

    points: list[tuple[str, float]]  # their (run, target) pairs
    measured: dict[str, tuple[float, int]]  # levels in training: epoch seconds and epochs
    done_of: dict[str, list[Any]]  # their finished levels, in training order
    jobs: dict[str, _JobInfo]  # the jobs on their unfinished levels
    planned: dict[str, int | None]  # their schedule.epochs


def read_work(store: StoreReader, sweep: str, unfinished: list[Unfinished], points: bool = True) -> WorkRead:
    """The part of sweep_status about the runs with unfinished levels (store.unfinished_levels);
    without `points` when read_runs reads every run's (details)."""
    run_ids = sorted({u.run_id for u in unfinished})
    with store.read_connection() as conn:
        sid, _ = _sweep(conn, store, sweep)
        q = sa.select(tables.grid_points.c.run_id, tables.grid_points.c.sparsity).where(
            tables.grid_points.c.sweep_id == sid, among(conn, tables.grid_points.c.run_id, run_ids)
        )
        return WorkRead(
            points=[(run_id, sp) for run_id, sp in conn.execute(q.order_by(tables.grid_points.c.sparsity)).all()]
            if points
            else [],
            measured=_measured(conn, unfinished),
            done_of=_finished_levels(conn, run_ids, {u.level_id for u in unfinished}),
            jobs=_jobs(conn, sorted({u.job_id for u in unfinished if u.job_id})),
            planned=_planned_epochs(conn, run_ids),
        )


def sweep_status(
    store: StoreReader,
    sweep: str,
    unfinished: list[Unfinished] | None = None,
    details_up_to: int | None = None,
    read: RunsRead | None = None,
    work: WorkRead | None = None,
) -> tuple[list[RunSummary], SweepTotals]:
    """Every run of the sweep (ordered by method, seed, run id) and the sweep's totals.
    `unfinished`: store.unfinished_levels(sweep), when the caller has it already (status gets
    it from reconcile_sweep). `details_up_to`: beyond that many runs, finished runs come without
    their sparsities and their last level's accuracy, depth, job and elapsed time (a summary
    counts them, no more). `read`, `work`: read_runs(store, sweep, details_up_to) and
    read_work(store, sweep, unfinished), when the caller read them already (status reads them
    side by side), with nothing written to the store since."""
    if unfinished is None:
        unfinished = store.unfinished_levels(sweep)
    r0 = read or read_runs(store, sweep, details_up_to)
    w = work or read_work(store, sweep, unfinished, points=r0.points is None)
    runs, totals = r0.runs, r0.totals
    unfinished = [u for u in unfinished if u.run_id in runs]
    by_run: dict[str, list[Unfinished]] = {}
    for u in unfinished:
        by_run.setdefault(u.run_id, []).append(u)
    for run_id, sp in r0.points if r0.points is not None else w.points:
        if run_id in runs:
            runs[run_id].sparsities.append(sp)
    measured, done_of, jobs, planned = w.measured, w.done_of, w.jobs, w.planned
    now = utcnow()
    for run_id, unf in by_run.items():  # read_runs left every run as if finished
        old = runs[run_id]
        r = runs[run_id] = RunSummary(
            run_id, old.method, old.seed, old.axes, old.sparsities, levels_total=old.levels_total
        )
        r.levels_done = r.levels_total - len(unf)
        done = done_of.get(run_id, [])
        if done:
            r.test_acc = done[-1].test_acc
        job_id = _busiest(r, unf, jobs)
        job = jobs.get(job_id) if job_id else None
        r.epochs_left = _epochs_left(unf, planned.get(run_id))
        in_training = [measured.get(u.level_id, (0.0, 0)) for u in unf]
        secs = sum(d.seconds or 0.0 for d in done) + sum(m[0] for m in in_training)
        n_ep = sum(d.epochs or 0 for d in done) + sum(m[1] for m in in_training)
        r.epoch_s = secs / n_ep if n_ep else None
        if job is not None:
            r.job_id, r.sched_id, r.attempts, r.message = job.job_id, job.sched_id, job.attempts, job.message
            r.elapsed_s = _elapsed(job, now)
    _sweep_estimates(totals, planned, unfinished, measured)
    for run_id in by_run:  # a run with no measured epoch of its own goes at the sweep's pace
        r = runs[run_id]
        if r.state not in ("COMPLETED", "PRUNED") and r.epochs_left is not None:  # PRUNED: never trains on
            r.epoch_s = r.epoch_s or totals.epoch_s
            r.eta_s = r.epochs_left * r.epoch_s if r.epoch_s is not None else None
    return sorted(runs.values(), key=lambda r: (r.method, r.seed, r.run_id)), totals


def _elapsed(job: _JobInfo, now: dt.datetime) -> float | None:
    """The job's first attempt's start to now (an attempt still open, or the job active), or to
    its last attempt's end."""
    if job.start is None:
        return None
    stop = now if (job.open or job.state in ACTIVE_STATES) else (job.end or now)
    return max(0.0, (stop - job.start).total_seconds())


def _busiest(r: RunSummary, unf: list[Unfinished], jobs: dict[str, _JobInfo]) -> str | None:
    """Set the run's state from the busiest job on its unfinished levels (RUN_STATE_PRIORITY;
    then the earliest level), with that level's depth and epoch; returns that job's id."""
    rank = {st: i for i, st in enumerate(RUN_STATE_PRIORITY)}

    def key(u: Unfinished) -> tuple[int, int]:
        job = jobs.get(u.job_id) if u.job_id else None
        return rank.get(job.state if job else "PLANNED", len(rank)), u.position

    u = min(unf, key=key)
    job = jobs.get(u.job_id) if u.job_id else None
    r.state = job.state if job else "PLANNED"
    r.depth, r.epoch = u.depth, u.epoch
    return u.job_id


def _epochs_left(unf: list[Unfinished], planned: int | None) -> int | None:
    if planned is None:
        return None  # a config without schedule.epochs (a store carried from schema 0001)
    return sum(max(0, int(planned) - max(u.epoch, u.skipped)) for u in unf)


def _per_run(conn, sid: int, details: bool = True) -> dict[str, RunSummary]:
    """Each run as it shows when finished (sweep_status redoes the runs at work): its number of
    levels, and its last level (in training order) with the job in charge of it. One query, by
    the runs' own n_levels and last_level_id (migration 0006): no pass over run_levels. Without
    `details`, runs and their number of levels only: enough to count them by state."""
    decode = AxesDecoder()
    q = (
        sa.select(
            tables.sweep_runs.c.run_id,
            tables.runs.c.n_levels,
            tables.runs.c.method,
            tables.runs.c.seed,
            as_text(tables.runs.c.axes),
        )
        .join(tables.runs, tables.runs.c.run_id == tables.sweep_runs.c.run_id)
        .where(tables.sweep_runs.c.sweep_id == sid)
    )
    if not details:
        return {
            run_id: _as_finished(RunSummary(run_id, method, seed, decode(axes)), int(n or 0))
            for run_id, n, method, seed, axes in conn.execute(q).all()
        }
    spans = _attempt_spans().subquery()
    q = (
        q.add_columns(
            tables.levels.c.finished_at.is_not(None).label("finished"),
            tables.levels.c.test_acc,
            tables.levels.c.depth,
            *_job_columns(spans),
        )
        .outerjoin(tables.levels, tables.levels.c.level_id == tables.runs.c.last_level_id)
        .outerjoin(tables.jobs, tables.jobs.c.job_id == tables.levels.c.job_id)
        .outerjoin(spans, spans.c.job_id == tables.levels.c.job_id)
    )
    runs: dict[str, RunSummary] = {}
    now = utcnow()
    for run_id, n, method, seed, axes, finished, test_acc, depth, *job_row in conn.execute(q).all():
        r = runs[run_id] = _as_finished(RunSummary(run_id, method, seed, decode(axes)), int(n or 0))
        if finished:
            r.test_acc, r.depth = test_acc, depth
            job = _job_info(job_row)
            if job is not None:
                r.job_id, r.sched_id, r.attempts = job.job_id, job.sched_id, job.attempts
                r.elapsed_s = _elapsed(job, now)
    return runs


def _as_finished(r: RunSummary, levels: int) -> RunSummary:
    r.levels_total = r.levels_done = levels
    r.state, r.epochs_left = ("COMPLETED", 0) if levels else ("PLANNED", None)
    return r


def _raw(col):
    """A timestamp as the driver returns it: SQLite's text is parsed by as_datetime (db.tables), in
    C, instead of by SQLAlchemy's regular expression (a tenth of a second on 10,000 runs)."""
    return sa.type_coerce(col, sa.String).label(col.name)


def _attempt_spans():
    """Per job: its first attempt's start, its last attempt's end, and attempts not ended."""
    return sa.select(
        tables.attempts.c.job_id,
        sa.func.min(tables.attempts.c.started_at).label("start"),
        sa.func.max(tables.attempts.c.ended_at).label("end"),
        (sa.func.count() - sa.func.count(tables.attempts.c.ended_at)).label("open"),
    ).group_by(tables.attempts.c.job_id)


def _measured(conn, unfinished: list[Unfinished]) -> dict[str, tuple[float, int]]:
    """Seconds and count of the epochs recorded for levels in training."""
    # By id, through the epochs' primary key: PostgreSQL's planner, asked for the unfinished
    # levels with epochs, misjudges how many there are and scans every epoch (0.13 s at 2,000,000).
    e = (
        sa.select(tables.epochs.c.level_id, sa.func.sum(tables.epochs.c.seconds), sa.func.count())
        .where(among(conn, tables.epochs.c.level_id, {u.level_id for u in unfinished if u.epoch}))
        .group_by(tables.epochs.c.level_id)
    )
    return {lid: (float(secs or 0.0), int(n or 0)) for lid, secs, n in conn.execute(e).all()}


def _finished_levels(conn, run_ids: list[str], unfinished: set[str]) -> dict[str, list[Any]]:
    """Each run's finished levels in training order (test_acc, seconds, epochs), `unfinished`
    the ids of those known not to be (not looked up). In two steps, each through an index: the
    runs' levels (run_levels' covering index), then the finished ones among them (the levels'
    primary key). Joined in one query, PostgreSQL's planner scans every level instead (0.09 s
    for 1,000 runs against 0.03)."""
    order: dict[str, list[tuple[int, str]]] = {}
    q = sa.select(tables.run_levels.c.run_id, tables.run_levels.c.position, tables.run_levels.c.level_id).where(
        among(conn, tables.run_levels.c.run_id, run_ids)
    )
    for run_id, pos, lid in conn.execute(q).all():
        order.setdefault(run_id, []).append((pos, lid))
    wanted = {lid for levels in order.values() for _, lid in levels} - unfinished
    finished = sa.select(
        tables.levels.c.level_id, tables.levels.c.test_acc, tables.levels.c.seconds, tables.levels.c.epochs
    ).where(among(conn, tables.levels.c.level_id, wanted), tables.levels.c.finished_at.is_not(None))
    level = {row.level_id: row for row in conn.execute(finished).all()}
    return {run_id: [level[lid] for _, lid in sorted(levels) if lid in level] for run_id, levels in order.items()}


def _planned_epochs(conn, run_ids: list[str]) -> dict[str, int | None]:
    """schedule.epochs of these runs' configs: every level of a run trains that many."""
    pe = tables.runs.c.config[("schedule", "epochs")].as_integer()
    return dict(
        conn.execute(sa.select(tables.runs.c.run_id, pe).where(among(conn, tables.runs.c.run_id, run_ids))).all()
    )


def _job_columns(spans: Any) -> tuple[Any, ...]:
    """A job's columns as _job_info takes them, with its attempts' span (_attempt_spans)."""
    return (
        tables.jobs.c.job_id,
        tables.jobs.c.state,
        tables.jobs.c.sched_id,
        tables.jobs.c.attempts,
        tables.jobs.c.message,
        _raw(spans.c.start),
        _raw(spans.c.end),
        spans.c.open,
    )


def _job_info(row: Any) -> _JobInfo | None:
    job_id, state, sched_id, attempts, message, start, end, open_ = row
    if job_id is None:  # no such job (an outer join)
        return None
    return _JobInfo(
        job_id, state, sched_id, attempts or 0, message, as_datetime(start), as_datetime(end), int(open_ or 0)
    )


def _jobs(conn, job_ids: list[str]) -> dict[str, _JobInfo]:
    """These jobs, with their attempts' span."""
    spans = _attempt_spans().where(among(conn, tables.attempts.c.job_id, job_ids)).subquery()
    q = (
        sa.select(*_job_columns(spans))
        .outerjoin(spans, spans.c.job_id == tables.jobs.c.job_id)
        .where(among(conn, tables.jobs.c.job_id, job_ids))
    )
    return {job.job_id: job for job in map(_job_info, conn.execute(q).all()) if job is not None}


def _level_sums(conn, where: Any = None) -> tuple[int, int, float, int]:
    """Levels, finished levels, and the finished ones' seconds and epochs: of the whole store, or
    of the levels `where` selects."""
    lv = tables.levels.c
    fin = lv.finished_at.is_not(None)
    q = sa.select(
        sa.func.count(),
        sa.func.count(lv.finished_at),
        sa.func.sum(sa.case((fin, lv.seconds), else_=0.0)),
        sa.func.sum(sa.case((fin, lv.epochs), else_=0)),
    )
    n, done, secs, epochs = conn.execute(q if where is None else q.where(where)).one()
    return int(n), int(done or 0), float(secs or 0.0), int(epochs or 0)


def _sweep_level_sums(conn, sid: int) -> tuple[int, int, float, int]:
    """_level_sums of the distinct levels the sweep's runs need (a shared level counts once).

    Every level row belongs to some run (record_plan writes both in one transaction), so a sweep
    that holds every run of the store holds every level: one plain pass over the levels table
    (0.05 s for 150,000 levels). Otherwise PostgreSQL finds the sweep's levels with a hash join
    (0.1 s for 150,000). SQLite looks them up one by one (0.46 s), so there, when the sweep holds
    more than half of the store's runs, it looks up the levels of the other runs instead, keeps
    those none of the sweep's runs needs and subtracts them from the whole store (0.14 s with a
    second sweep of 2,500 runs and 23,500 levels beside the 10,000). A store gains runs outside a big sweep with
    every other sweep, and with every run a sweep leaves (reuse same-code)."""
    lv, rl, sr, runs = tables.levels.c, tables.run_levels.c, tables.sweep_runs.c, tables.runs.c
    in_store = conn.scalar(sa.select(sa.func.count()).select_from(tables.runs)) or 0
    in_sweep = (
        conn.scalar(sa.select(sa.func.count()).select_from(tables.sweep_runs).where(sr.sweep_id == sid)) or 0
    )
    if in_sweep == in_store:
        return _level_sums(conn)
    mine = sa.select(sr.run_id).where(sr.sweep_id == sid)
    if 2 * in_sweep <= in_store or conn.dialect.name != "sqlite":
        return _level_sums(conn, lv.level_id.in_(sa.select(rl.level_id).where(rl.run_id.in_(mine))))
    # The levels of the other runs that no run of the sweep needs. The test for the sweep is
    # correlated (EXISTS), so that SQLite looks each of those levels up by its runs (the index on
    # run_levels.level_id) rather than pairing every run of the sweep with every level.
    rl2 = tables.run_levels.alias("rl2")
    needed_here = sa.exists().where(
        rl2.c.level_id == lv.level_id, sa.exists().where(sr.sweep_id == sid, sr.run_id == rl2.c.run_id)
    )
    others = sa.select(runs.run_id).where(runs.run_id.not_in(mine))
    sub = _level_sums(
        conn, sa.and_(lv.level_id.in_(sa.select(rl.level_id).where(rl.run_id.in_(others))), ~needed_here)
    )
    whole = _level_sums(conn)
    return whole[0] - sub[0], whole[1] - sub[1], max(0.0, whole[2] - sub[2]), whole[3] - sub[3]


def _totals(conn, sid: int, spec: dict[str, Any], sweep: str) -> SweepTotals:
    """Distinct levels of the sweep, the finished ones and their measured seconds and epochs;
    the sweep's wall time (attempts of the jobs it planned)."""
    total, done, secs, epochs = _sweep_level_sums(conn, sid)
    t = SweepTotals(levels_done=int(done), levels_total=int(total), epochs_done=int(epochs or 0))
    t.device_hours_used = float(secs or 0.0)  # seconds until _sweep_estimates
    t.device, t.devices_per_job = devices(spec)
    start, end, open_ = conn.execute(
        sa.select(
            sa.func.min(tables.attempts.c.started_at),
            sa.func.max(tables.attempts.c.ended_at),
            sa.func.count() - sa.func.count(tables.attempts.c.ended_at),
        )
        .join(tables.jobs, tables.jobs.c.job_id == tables.attempts.c.job_id)
        .where(tables.jobs.c.sweep == sweep)
    ).one()
    if start is not None:
        stop = utcnow() if open_ or end is None else end
        t.elapsed_s = max(0.0, (stop - start).total_seconds())
    return t


def _sweep_estimates(
    t: SweepTotals,
    planned: dict[str, int | None],
    unfinished: list[Unfinished],
    measured: dict[str, tuple[float, int]],
) -> None:
    """Add the levels in training to the measured time; the epochs left and what they will cost."""
    secs, epochs = t.device_hours_used, t.epochs_done
    left: int | None = 0
    seen: set[str] = set()
    for u in unfinished:
        if u.level_id in seen:
            continue  # a level shared by several runs counts once
        seen.add(u.level_id)
        level_secs, n = measured.get(u.level_id, (0.0, 0))
        secs, epochs = secs + level_secs, epochs + n
        pe = planned.get(u.run_id)
        left = None if pe is None or left is None else left + max(0, int(pe) - max(u.epoch, u.skipped))
    t.epochs_done, t.epochs_left = epochs, left
    t.epoch_s = secs / epochs if epochs else None
    t.device_hours_used = secs * t.devices_per_job / 3600.0
    if left is not None and (t.epoch_s is not None or left == 0):
        t.device_hours_left = left * (t.epoch_s or 0.0) * t.devices_per_job / 3600.0
