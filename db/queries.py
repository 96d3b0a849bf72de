"""Read-side queries: one row per grid point (or per level), filtering and grouping.

Kept free of pandas so `tp-sweep query` answers in about a second.
"""
from __future__ import annotations

import ast
import math
import statistics
from typing import Any

import sqlalchemy as sa

from db.schema import GridPoint, Level, Run, Sweep
from db.store import Store


class QueryError(ValueError):
    pass


def grid_results(store: Store, sweep: str, levels: bool = False) -> list[dict[str, Any]]:
    """One dict per grid point, with its run's result at the level that reached its target.
    With `levels`, one dict per level of every run (target: that level's sparsity)."""
    with store.session() as s:
        sw = s.scalar(sa.select(Sweep).where(Sweep.name == sweep))
        if sw is None:
            raise QueryError(f"no sweep named {sweep!r} in {store.display_url}")
        points = list(s.scalars(sa.select(GridPoint).where(GridPoint.sweep_id == sw.id)
                                .order_by(GridPoint.method, GridPoint.sparsity, GridPoint.seed)))
        run_ids = {p.run_id for p in points}
        runs = {r.run_id: r for r in s.scalars(sa.select(Run).where(Run.run_id.in_(run_ids)))}
        lvls: dict[tuple[str, int], Level] = {
            (lv.run_id, lv.level): lv
            for lv in s.scalars(sa.select(Level).where(Level.run_id.in_(run_ids)))}
    rows = []
    if levels:
        seen = set()
        for p in points:
            if p.run_id in seen:
                continue
            seen.add(p.run_id)
            run = runs[p.run_id]
            for i, d in enumerate(run.densities):
                rows.append(_row(sweep, run, p, i, round(1.0 - d, 12), lvls.get((run.run_id, i))))
        return rows
    return [_row(sweep, runs[p.run_id], p, p.level, p.sparsity, lvls.get((p.run_id, p.level)))
            for p in points]


def _row(sweep: str, run: Run, p: GridPoint, level: int, sparsity: float, lv: Level | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "sweep": sweep, "method": run.method, "sparsity": sparsity, "seed": run.seed,
        "run_id": run.run_id, "level": level,
        "achieved_sparsity": lv.achieved_sparsity if lv else None,
        "test_acc": lv.test_acc if lv else None,
        "test_top5": lv.test_top5 if lv else None,
        "best_test_acc": lv.best_test_acc if lv else None,
        "epochs": lv.epochs if lv else 0,
        "state": "COMPLETED" if lv else run.state,  # this point's level is done even if the run is not
    }
    row.update(p.axes)
    return row


_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub,
            ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
            ast.Is, ast.IsNot, ast.Name, ast.Load, ast.Constant, ast.Tuple, ast.List, ast.BinOp,
            ast.Add, ast.Sub, ast.Mult, ast.Div)


def compile_where(expr: str):
    """A filter like "method == 'imp' and sparsity >= 0.8": comparisons over row fields only."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise QueryError(f"--where: cannot parse {expr!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise QueryError(f"--where: {type(node).__name__} is not allowed in {expr!r} "
                             "(use comparisons, and/or/not, and field names)")
    code = compile(tree, "<where>", "eval")
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}

    def match(row: dict[str, Any]) -> bool:
        missing = names - set(row) - {"None", "True", "False"}
        if missing:
            raise QueryError(f"--where: unknown field(s) {', '.join(sorted(missing))}; "
                             f"fields: {', '.join(row)}")
        try:
            return bool(eval(code, {"__builtins__": {}}, dict(row)))  # noqa: S307 - AST-checked
        except TypeError:
            return False  # e.g. comparing a missing (None) result with a number
    return match


def group(rows: list[dict[str, Any]], by: list[str], metrics: tuple[str, ...] = (
        "test_acc", "best_test_acc", "achieved_sparsity")) -> list[dict[str, Any]]:
    """Mean, std (sample, n-1) and count of each metric over the rows sharing `by`."""
    if rows:
        unknown = [b for b in by if b not in rows[0]]
        if unknown:
            raise QueryError(f"--group-by: unknown column(s) {', '.join(unknown)}; "
                             f"columns: {', '.join(rows[0])}")
    buckets: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        buckets.setdefault(tuple(r[b] for b in by), []).append(r)
    out = []
    for key, rs in sorted(buckets.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        g: dict[str, Any] = dict(zip(by, key))
        for m in metrics:
            vals = [r[m] for r in rs if r.get(m) is not None]
            g[f"{m}_mean"] = statistics.fmean(vals) if vals else None
            g[f"{m}_std"] = statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None)
        g["n"] = sum(1 for r in rs if r.get("test_acc") is not None)
        g["runs"] = len(rs)
        out.append(g)
    return out


def fmt_mean_std(mean: float | None, std: float | None, scale: float = 100.0) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean * scale:.2f} ± {(std or 0.0) * scale:.2f}"
