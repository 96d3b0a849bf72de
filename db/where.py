"""The `--where` language of `tp-sweep query` and `plot`: a filter over result rows such as
"method == 'imp' and sparsity >= 0.8", checked against an allow-list of syntax and evaluated by a
small interpreter (never eval), and the warnings for a filter that most likely means something
else. Pure Python: the rows come from db.queries."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

from db.reader import QueryError


class WhereError(QueryError):
    """A --where that does not parse, uses what the language does not allow, or fails on a row:
    bad input, exit 2."""


MAX_WHERE_CHARS = 500
MAX_WHERE_DEPTH = 32
_CONSTANTS = (int, float, str, bool, type(None))
_CMP: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_ORDER = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _depth(node: ast.AST) -> int:
    return 1 + max((_depth(c) for c in ast.iter_child_nodes(node)), default=0)


_NODES = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.Compare,
    ast.Name,
    ast.Load,
    ast.Tuple,
    ast.List,
    ast.BinOp,
    ast.Constant,
    *_CMP,
    *_ARITH,
)  # no ** (10**11), no calls, attributes, subscripts or lambdas


def _check_node(node: ast.AST, expr: str) -> None:
    ok = isinstance(node, _NODES) and not (
        isinstance(node, ast.Constant) and not isinstance(node.value, _CONSTANTS)
    )
    if not ok:
        what = f"a {type(node.value).__name__} constant" if isinstance(node, ast.Constant) else type(node).__name__
        raise WhereError(
            f"--where: {what} is not allowed in {expr!r} (use comparisons, and/or/not, + - * /, and field names)"
        )
    if (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Mult)
        and any(
            isinstance(o, (ast.List, ast.Tuple)) or (isinstance(o, ast.Constant) and isinstance(o.value, str))
            for o in (node.left, node.right)
        )
    ):
        raise WhereError(f"--where: repeating a list or string with * is not allowed in {expr!r}")


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
            raise WhereError(f"--where: unary - takes a number, not {type(value).__name__}")
        return None if value is None else -value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, row), _eval(node.right, row)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Mult) and not (_is_number(left) and _is_number(right)):
            raise WhereError("--where: * takes two numbers")  # never `method * 10**9`
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
    raise WhereError(f"--where: cannot evaluate {type(node).__name__}")  # _check_node prevents it


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


def compile_where(expr: str) -> Callable[[dict[str, Any]], bool]:
    """A filter like "method == 'imp' and sparsity >= 0.8": comparisons over row fields only.

    Bounded (length, nesting) and evaluated by a small interpreter over an allow-listed AST, not
    by eval: every failure, at compile time or per row, is a WhereError (the CLI's exit 2).
    """
    if len(expr) > MAX_WHERE_CHARS:
        raise WhereError(f"--where: {len(expr)} characters; at most {MAX_WHERE_CHARS}")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise WhereError(f"--where: cannot parse {expr!r}: {getattr(exc, 'msg', exc)}") from None
    if _depth(tree) > MAX_WHERE_DEPTH:
        raise WhereError(f"--where: nested more than {MAX_WHERE_DEPTH} deep: {expr!r}")
    for node in ast.walk(tree):
        _check_node(node, expr)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}

    def match(row: dict[str, Any]) -> bool:
        missing = names - set(row)
        if missing:
            raise WhereError(f"--where: unknown field(s) {', '.join(sorted(missing))}; fields: {', '.join(row)}")
        try:
            return bool(_eval(tree, row))
        except WhereError:
            raise
        except Exception as exc:  # noqa: BLE001 - TypeError, ZeroDivisionError, OverflowError, MemoryError...
            raise WhereError(
                f"--where: {expr!r} fails on run {row.get('run_id', '?')}: {type(exc).__name__}: {exc}"
            ) from None

    return match


def is_accuracy(field: str) -> bool:
    """test_acc, best_test_acc, test_top5, train_acc...: fractions in [0, 1] in the store, in
    --where, CSV and JSON (tables print them in percent)."""
    return field.endswith(("_acc", "_top5"))


def where_warnings(expr: str) -> list[str]:
    """What a --where that compiles most likely gets wrong: an accuracy compared with a number
    above 1 (`test_acc > 90`, read off a table in percent), which no row can pass or every row
    passes. Empty for an expression that does not parse (compile_where says why)."""
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []

    def numbers(node: ast.AST) -> list[float]:
        items = node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]
        return [
            float(e.value)
            for e in items
            if isinstance(e, ast.Constant) and isinstance(e.value, (int, float)) and not isinstance(e.value, bool)
        ]

    found: list[tuple[int, str]] = []  # (where in the expression, warning)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for a, b in zip(operands, operands[1:]):
            for name, other in ((a, b), (b, a)):
                if not (isinstance(name, ast.Name) and is_accuracy(name.id)):
                    continue
                for n in numbers(other):
                    if abs(n) > 1:
                        text = (
                            f"--where compares {name.id} with {n:g}, but accuracies are fractions "
                            f"(tables show percent): use {n / 100:g} for {n:g} %"
                        )
                        found.append((other.col_offset, text))
    return list(dict.fromkeys(text for _, text in sorted(found)))
