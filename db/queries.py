"""Read-side queries: one row per grid point (or per level), filtering and grouping.

Kept free of pandas so `tp-sweep query` answers in about a second.
"""
from __future__ import annotations

import ast
import math
import operator
import statistics
from typing import Any, Callable

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


MAX_WHERE_CHARS = 500
MAX_WHERE_DEPTH = 32
_CONSTANTS = (int, float, str, bool, type(None))
_CMP: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}
_ORDER = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _depth(node: ast.AST) -> int:
    return 1 + max((_depth(c) for c in ast.iter_child_nodes(node)), default=0)


_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub,
          ast.Compare, ast.Name, ast.Load, ast.Tuple, ast.List, ast.BinOp, ast.Constant,
          *_CMP, *_ARITH)  # no ** (10**11), no calls, attributes, subscripts or lambdas


def _check_node(node: ast.AST, expr: str) -> None:
    ok = isinstance(node, _NODES) and not (
        isinstance(node, ast.Constant) and not isinstance(node.value, _CONSTANTS))
    if not ok:
        what = (f"a {type(node.value).__name__} constant" if isinstance(node, ast.Constant)
                else type(node).__name__)
        raise QueryError(f"--where: {what} is not allowed in {expr!r} "
                         "(use comparisons, and/or/not, + - * /, and field names)")
    if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)
            and any(isinstance(o, (ast.List, ast.Tuple)) or
                    (isinstance(o, ast.Constant) and isinstance(o.value, str))
                    for o in (node.left, node.right))):
        raise QueryError(f"--where: repeating a list or string with * is not allowed in {expr!r}")


def _eval(node: ast.AST, row: dict[str, Any]) -> Any:
    """Evaluate a checked --where expression over one row.

    Missing results are None (a run that has not finished its level). Like SQL's NULL, None in
    arithmetic gives None and None in an ordering comparison is false, so `test_acc > 0.9` skips
    unfinished rows instead of failing; `==`, `!=`, `is` and `in` compare None as Python does.
    Any other type mismatch (`method > 3`) is the user's error and says so.
    """
    if isinstance(node, ast.Expression):
        return _eval(node.body, row)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return row[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, row) for e in node.elts]
    if isinstance(node, ast.BoolOp):  # Python's and/or: short-circuit, return the operand
        value = None
        for operand in node.values:
            value = _eval(operand, row)
            if bool(value) == isinstance(node.op, ast.Or):
                break
        return value
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, row)
        if isinstance(node.op, ast.Not):
            return not value
        if value is not None and not _is_number(value):
            raise QueryError(f"--where: unary - takes a number, not {type(value).__name__}")
        return None if value is None else -value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, row), _eval(node.right, row)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Mult) and not (_is_number(left) and _is_number(right)):
            raise QueryError("--where: * takes two numbers")  # never `method * 10**9`
        return _ARITH[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, row)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, row)
            if isinstance(op, _ORDER) and (left is None or right is None):
                return False
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    raise QueryError(f"--where: cannot evaluate {type(node).__name__}")  # _check_node prevents it


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


def compile_where(expr: str) -> Callable[[dict[str, Any]], bool]:
    """A filter like "method == 'imp' and sparsity >= 0.8": comparisons over row fields only.

    Bounded (length, nesting) and evaluated by a small interpreter over an allow-listed AST, not
    by eval: every failure, at compile time or per row, is a QueryError (the CLI's exit 2).
    """
    if len(expr) > MAX_WHERE_CHARS:
        raise QueryError(f"--where: {len(expr)} characters; at most {MAX_WHERE_CHARS}")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise QueryError(f"--where: cannot parse {expr!r}: {getattr(exc, 'msg', exc)}") from None
    if _depth(tree) > MAX_WHERE_DEPTH:
        raise QueryError(f"--where: nested more than {MAX_WHERE_DEPTH} deep: {expr!r}")
    for node in ast.walk(tree):
        _check_node(node, expr)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}

    def match(row: dict[str, Any]) -> bool:
        missing = names - set(row)
        if missing:
            raise QueryError(f"--where: unknown field(s) {', '.join(sorted(missing))}; "
                             f"fields: {', '.join(row)}")
        try:
            return bool(_eval(tree, row))
        except QueryError:
            raise
        except Exception as exc:  # TypeError, ZeroDivisionError, OverflowError, MemoryError...
            raise QueryError(f"--where: {expr!r} fails on run {row.get('run_id', '?')}: "
                             f"{type(exc).__name__}: {exc}") from None
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
