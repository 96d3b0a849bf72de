"""Read-side queries: one row per grid point (or per level), and grouping. Runs and their derived
states are in db.summaries, the --where filter over these rows in db.where. Kept free of pandas so
`tp-sweep query` answers in well under a second.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

import sqlalchemy as sa

from core.levels import level_number
from db import tables
from db.engine import among
from db.reader import QueryError, StoreReader
from db.tables import AxesDecoder, as_text


def sweep_id(conn, store: StoreReader, sweep: str) -> int:
    """The sweep's row id; no such sweep is a QueryError."""
    sid = conn.scalar(sa.select(tables.sweeps.c.id).where(tables.sweeps.c.name == sweep))
    if sid is None:
        raise QueryError(f"no sweep named {sweep!r} in {store.display_url}")
    return sid


def level_progress(store: StoreReader, sweep: str) -> tuple[int, int]:
    """(finished, all) distinct levels the sweep's runs need: shared levels count once."""
    with store.read_connection() as conn:
        sid = sweep_id(conn, store, sweep)
        ids = (
            sa.select(tables.run_levels.c.level_id)
            .join(tables.sweep_runs, tables.sweep_runs.c.run_id == tables.run_levels.c.run_id)
            .where(tables.sweep_runs.c.sweep_id == sid)
            .distinct()
            .subquery()
        )
        row = conn.execute(
            sa.select(sa.func.count(), sa.func.count(tables.levels.c.finished_at))
            .select_from(ids)
            .join(tables.levels, tables.levels.c.level_id == ids.c.level_id)
        ).one()
    return int(row[1]), int(row[0])


def accuracy_lines(store: StoreReader, sweep: str) -> int:
    """Lines of the accuracy table (method x other grid axes), counted without reading results."""
    with store.read_connection() as conn:
        sid = sweep_id(conn, store, sweep)
        pairs = (
            sa.select(tables.grid_points.c.method, tables.grid_points.c.axes_key)
            .where(tables.grid_points.c.sweep_id == sid)
            .distinct()
        )
        return int(conn.scalar(sa.select(sa.func.count()).select_from(pairs.subquery())) or 0)


def _level_columns(level: Any, kind: Any) -> tuple[Any, ...]:
    """A level's columns as a row of grid_results shows it, with its `level` and `kind` in the
    run (run_levels.kind: a level shared by runs plays a role in each)."""
    return (tables.levels.c.level_id, level, kind, *_LEVEL_COLUMNS)


_LEVEL_COLUMNS = (
    tables.levels.c.finished_at.is_not(None).label("finished"),
    tables.levels.c.density,
    tables.levels.c.achieved_sparsity,
    tables.levels.c.test_acc,
    tables.levels.c.test_top5,
    tables.levels.c.best_test_acc,
    tables.levels.c.epochs,
    tables.levels.c.network_sparsity,
    tables.levels.c.params,
    tables.levels.c.nonzero_params,
    tables.levels.c.flops_dense,
    tables.levels.c.flops,
    tables.levels.c.resolution,
    tables.levels.c.code,
    tables.levels.c.sources,
)


# Every key of a grid_results row that is not a grid axis: the renderers split lines and
# columns by the rest, so a key added to the row and not here becomes a phantom axis.
RESULT_KEYS = (
    "sweep",
    "method",
    "sparsity",
    "seed",
    "run_id",
    "level",
    "level_id",
    "level_kind",
    "achieved_sparsity",
    "test_acc",
    "test_top5",
    "best_test_acc",
    "epochs",
    "state",
    "network_sparsity",
    "params",
    "nonzero_params",
    "flops_dense",
    "flops",
    "speedup",
    "resolution",
    "code",
    "sources",
    "off_target",
    "provenance",
)


def grid_results(store: StoreReader, sweep: str, levels: bool = False) -> list[dict[str, Any]]:
    """One dict per grid point, with the result of the level that serves it. With `levels`, one
    dict per level of every run in the sweep (trunk and branches; target: the level's density).

    Built for 30,000 grid points: plain tuples (no ORM objects, no timestamps), each distinct
    axes text decoded once, sorted here rather than by the database, and the job state read only
    for unfinished levels (the rest are COMPLETED)."""
    with store.read_connection() as conn:
        sid = sweep_id(conn, store, sweep)
        if levels:
            q = (
                sa.select(
                    tables.runs.c.method,
                    (1.0 - tables.levels.c.density).label("sparsity"),
                    tables.runs.c.seed,
                    tables.runs.c.run_id,
                    tables.run_levels.c.position,
                    as_text(tables.runs.c.axes),
                    *_level_columns(tables.levels.c.depth, tables.run_levels.c.kind),
                )
                .join(tables.sweep_runs, tables.sweep_runs.c.run_id == tables.runs.c.run_id)
                .join(tables.run_levels, tables.run_levels.c.run_id == tables.runs.c.run_id)
                .join(tables.levels, tables.levels.c.level_id == tables.run_levels.c.level_id)
                .where(tables.sweep_runs.c.sweep_id == sid)
            )
            order = (0, 2, 3, 4)  # method, seed, run, position
        else:
            q = (
                sa.select(
                    tables.grid_points.c.method,
                    tables.grid_points.c.sparsity,
                    tables.grid_points.c.seed,
                    tables.grid_points.c.run_id,
                    tables.grid_points.c.id,
                    as_text(tables.grid_points.c.axes),
                    *_level_columns(
                        tables.grid_points.c.level,
                        sa.func.coalesce(tables.run_levels.c.kind, tables.levels.c.kind),
                    ),
                )
                .join(tables.levels, tables.levels.c.level_id == tables.grid_points.c.level_id)
                .outerjoin(
                    tables.run_levels,
                    sa.and_(
                        tables.run_levels.c.run_id == tables.grid_points.c.run_id,
                        tables.run_levels.c.level_id == tables.grid_points.c.level_id,
                    ),
                )
                .where(tables.grid_points.c.sweep_id == sid)
            )
            order = (0, 1, 2, 4)  # method, sparsity, seed, grid point
        rows = sorted(conn.execute(q).all(), key=lambda r: tuple(r[i] for i in order))
        provenance: dict[str, Any] = {}
        if levels:  # a level's whole provenance, one row per level (not per grid point: 30,000)
            ids = sorted({r[6] for r in rows})
            for i in range(0, len(ids), 900):
                provenance.update(
                    conn.execute(
                        sa.select(tables.levels.c.level_id, tables.levels.c.provenance).where(
                            tables.levels.c.level_id.in_(ids[i : i + 900])
                        )
                    ).all()
                )
        unfinished = [r[6] for r in rows if not r[9]]  # level_id, finished
        states: dict[str, str] = {}
        trained: dict[str, int] = {}  # epochs a level trained before a search's pruner stopped it
        for i in range(0, len(unfinished), 900):
            for lid, state, epoch in conn.execute(
                sa.select(tables.levels.c.level_id, tables.jobs.c.state, tables.levels.c.epoch)
                .join(tables.jobs, tables.jobs.c.job_id == tables.levels.c.job_id)
                .where(tables.levels.c.level_id.in_(unfinished[i : i + 900]))
            ):
                states[lid] = state
                if state == "PRUNED":
                    trained[lid] = epoch
        last: dict[str, float | None] = {}  # ... and the test accuracy it had then
        if trained:
            ep = tables.epochs.c
            for lid, epoch, acc in conn.execute(
                sa.select(ep.level_id, ep.epoch, ep.test_acc).where(among(conn, ep.level_id, sorted(trained)))
            ):
                if epoch == trained[lid] - 1:
                    last[lid] = acc
    decode = AxesDecoder()
    out = []
    for (
        method,
        sparsity,
        seed,
        run_id,
        _order,
        axes,
        level_id,
        level,
        kind,
        finished,
        density,
        achieved,
        test_acc,
        top5,
        best,
        epochs,
        network,
        params,
        nonzero,
        flops_dense,
        flops,
        resolution,
        code,
        sources,
    ) in rows:
        extra = decode(axes)
        row = {
            "sweep": sweep,
            "method": method,
            "sparsity": round(sparsity, 12) if levels else sparsity,
            "seed": seed,
            "run_id": run_id,
            # a grid point's level in its run as planned; a level's, from its depth and role
            "level": level_number(kind, level) if levels else level,
            "level_id": level_id,
            "level_kind": kind,
            "achieved_sparsity": achieved,
            "test_acc": test_acc if finished else last.get(level_id),
            "test_top5": top5,
            "best_test_acc": best,
            "epochs": epochs if finished else trained.get(level_id, 0),
            "state": "COMPLETED" if finished else states.get(level_id, "PLANNED"),
            "network_sparsity": network,
            "params": params,
            "nonzero_params": nonzero,
            "flops_dense": flops_dense,
            "flops": flops,
            "speedup": flops_dense / flops if flops_dense and flops else None,
            "resolution": resolution,  # the training input's height (px) the cost was counted at
            "code": code,
            "sources": sources,
            # served by a level planned away from the target: prune.landing trunk
            "off_target": not levels and abs((1.0 - density) - sparsity) > OFF_TARGET,
        }
        if levels:
            prov = provenance.get(level_id)
            row["provenance"] = json.loads(prov) if isinstance(prov, str) else prov
        row.update(extra)
        out.append(row)
    return out


OFF_TARGET = 1e-6  # a level's planned sparsity this far from its target is not at the target

GROUP_METRICS = ("test_acc", "best_test_acc", "achieved_sparsity", "network_sparsity", "flops")
_POINT_COLUMNS = {
    "method": tables.grid_points.c.method,
    "sparsity": tables.grid_points.c.sparsity,
    "seed": tables.grid_points.c.seed,
}


def grouped_results(store: StoreReader, sweep: str, by: list[str]) -> list[dict[str, Any]] | None:
    """group(grid_results(store, sweep), by), reading only the grouping columns and the metrics:
    a third of the time on 30,000 grid points. None when `by` is not a subset of method,
    sparsity and seed (then group the full rows)."""
    if not by or any(b not in _POINT_COLUMNS for b in by):
        return None
    with store.read_connection() as conn:
        sid = sweep_id(conn, store, sweep)
        q = (
            sa.select(*(_POINT_COLUMNS[b] for b in by), *(getattr(tables.levels.c, m) for m in GROUP_METRICS))
            .join(tables.levels, tables.levels.c.level_id == tables.grid_points.c.level_id)
            .where(tables.grid_points.c.sweep_id == sid)
        )
        rows = conn.execute(q).all()
    names = [*by, *GROUP_METRICS]
    return group([dict(zip(names, r)) for r in rows], by)


def group(
    rows: list[dict[str, Any]], by: list[str], metrics: tuple[str, ...] = GROUP_METRICS
) -> list[dict[str, Any]]:
    """Mean, std (sample, n-1) and count of each metric over the rows sharing `by`."""
    if rows:
        unknown = [b for b in by if b not in rows[0]]
        if unknown:
            raise QueryError(f"--group-by: unknown column(s) {', '.join(unknown)}; columns: {', '.join(rows[0])}")
    buckets: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        buckets.setdefault(tuple(r[b] for b in by), []).append(r)
    out = []
    for key, rs in sorted(buckets.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        g: dict[str, Any] = dict(zip(by, key))
        for m in metrics:
            vals = [r[m] for r in rs if r.get(m) is not None and r.get("state") != "PRUNED"]
            g[f"{m}_mean"] = statistics.fmean(vals) if vals else None
            g[f"{m}_std"] = statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None)
        # A PRUNED row's test_acc is where its pruner stopped it: never in a mean.
        g["n"] = sum(1 for r in rs if r.get("test_acc") is not None and r.get("state") != "PRUNED")
        g["runs"] = len(rs)
        out.append(g)
    return out


def fmt_mean_std(mean: float | None, std: float | None, scale: float = 100.0) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean * scale:.2f} ± {(std or 0.0) * scale:.2f}"


# ---- epochs and curves (the report's learning curves, the notebook API) ------------------------
_EPOCH_FIELDS = (
    "epoch",
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


def run_curves(store: StoreReader, run_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each run's levels in training order, each with its recorded epochs (finished levels and
    the one in training): {run_id: [{level_id, depth, kind, density, finished, epochs: [...]}]}.
    Two queries, whatever the number of levels."""
    out: dict[str, list[dict[str, Any]]] = {r: [] for r in run_ids}
    with store.read_connection() as conn:
        by_level: dict[str, list[dict[str, Any]]] = {}
        for i in range(0, len(run_ids), 900):
            q = (
                sa.select(
                    tables.run_levels.c.run_id,
                    tables.run_levels.c.position,
                    tables.levels.c.level_id,
                    tables.levels.c.depth,
                    tables.run_levels.c.kind,
                    tables.levels.c.density,
                    tables.levels.c.finished_at.is_not(None),
                )
                .join(tables.levels, tables.levels.c.level_id == tables.run_levels.c.level_id)
                .where(tables.run_levels.c.run_id.in_(run_ids[i : i + 900]))
            )
            for run_id, _pos, lid, depth, kind, density, finished in sorted(
                conn.execute(q).all(), key=lambda r: (r[0], r[1])
            ):
                eps: list[dict[str, Any]] = by_level.setdefault(lid, [])
                out[run_id].append(
                    {
                        "level_id": lid,
                        "depth": depth,
                        "kind": kind,
                        "density": density,
                        "finished": bool(finished),
                        "epochs": eps,
                    }
                )
        ids = sorted(by_level)
        cols = [getattr(tables.epochs.c, f) for f in _EPOCH_FIELDS]
        for i in range(0, len(ids), 900):
            for row in conn.execute(
                sa.select(tables.epochs.c.level_id, *cols)
                .where(tables.epochs.c.level_id.in_(ids[i : i + 900]))
                .order_by(tables.epochs.c.level_id, tables.epochs.c.epoch)
            ):
                by_level[row[0]].append(dict(zip(_EPOCH_FIELDS, row[1:])))
    return out


def epoch_results(store: StoreReader, sweep: str) -> list[dict[str, Any]]:
    """One dict per recorded epoch of every level of every run in the sweep, with the run and the
    level it belongs to (a level shared by several runs, such as level 0, appears under each),
    ordered by method, seed, run, training order, epoch."""
    with store.read_connection() as conn:
        sid = sweep_id(conn, store, sweep)
        q = (
            sa.select(
                tables.runs.c.method,
                tables.runs.c.seed,
                tables.runs.c.run_id,
                as_text(tables.runs.c.axes),
                tables.run_levels.c.position,
                tables.levels.c.level_id,
                tables.levels.c.depth,
                tables.run_levels.c.kind,
                tables.levels.c.density,
                *(getattr(tables.epochs.c, f) for f in _EPOCH_FIELDS),
            )
            .join(tables.sweep_runs, tables.sweep_runs.c.run_id == tables.runs.c.run_id)
            .join(tables.run_levels, tables.run_levels.c.run_id == tables.runs.c.run_id)
            .join(tables.levels, tables.levels.c.level_id == tables.run_levels.c.level_id)
            .join(tables.epochs, tables.epochs.c.level_id == tables.levels.c.level_id)
            .where(tables.sweep_runs.c.sweep_id == sid)
        )
        rows = sorted(conn.execute(q).all(), key=lambda r: (r[0], r[1], r[2], r[4], r[9]))
    decode = AxesDecoder()
    out = []
    for method, seed, run_id, axes, _pos, lid, depth, kind, density, *values in rows:
        extra = decode(axes)
        row = {
            "sweep": sweep,
            "method": method,
            "seed": seed,
            "run_id": run_id,
            "level": level_number(kind, depth),
            "level_id": lid,
            "level_kind": kind,
            "sparsity": round(1.0 - density, 12),
            **dict(zip(_EPOCH_FIELDS, values)),
        }
        row.update(extra)
        out.append(row)
    return out
