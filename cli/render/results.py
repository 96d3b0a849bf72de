"""Result tables for the terminal: the accuracy table, `query`'s rows, one run's levels, jobs and
events. Accuracies are percent here, with (%) in their headers; JSON and CSV keep fractions.
Every table fits the console's width without cutting a value (cli/render/tables.py)."""

from __future__ import annotations

from typing import Any

from cli.render.tables import PERCENT, Col, number, renderables
from db.queries import RESULT_KEYS, fmt_mean_std, group

MAX_ACCURACY_LINES = 40  # more (a wide extra axis) and the accuracy table is left to `query`


def accuracy_table(sweep: str, rows: list[dict[str, Any]], width: int, metric: str = "test_acc") -> list[Any]:
    """Accuracy (%) per method (and extra axes) and target sparsity, mean ± std over seeds."""
    done = [r for r in rows if r.get(metric) is not None]
    if not done:
        return []
    extra = [k for k in rows[0] if k not in RESULT_KEYS]
    groups = group(done, ["method", *extra, "sparsity"], metrics=(metric, "achieved_sparsity"))
    off = {tuple(r[k] for k in ("method", *extra, "sparsity")) for r in done if r.get("off_target")}
    sparsities = sorted({g["sparsity"] for g in groups})
    lines: dict[tuple, dict[str, str]] = {}
    for g in groups:
        key = (g["method"], *[g[k] for k in extra])
        cells = lines.setdefault(key, {"method": str(g["method"]), **{f"x:{k}": str(g[k]) for k in extra}})
        cell = f"{fmt_mean_std(g[f'{metric}_mean'], g[f'{metric}_std'])} ({g['n']})"
        if (*key, g["sparsity"]) in off and g["achieved_sparsity_mean"] is not None:
            cell += f" @{g['achieved_sparsity_mean']:.3f}"  # its level's sparsity, not the target's
        cells[f"s:{g['sparsity']:g}"] = cell
    title = f"{sweep}: {metric} (%) by sparsity, mean ± std over seeds (n)"
    if len(lines) > MAX_ACCURACY_LINES:
        return too_many_lines(sweep, len(lines), extra)
    cols = (
        [Col("method", "method")]
        + [Col(f"x:{k}", k) for k in extra]
        + [Col(f"s:{s:g}", f"{s:g}", right=True, panel=True) for s in sparsities]
    )
    footer = (
        ("@s: served by a trunk level at achieved sparsity s, not at the column's target (prune.landing: trunk)")
        if off
        else None
    )
    return renderables(cols, list(lines.values()), width, title=title, footer=footer)


def too_many_lines(sweep: str, lines: int, extra: list[str] | None = None) -> list[Any]:
    """What status says instead of an accuracy table of more than MAX_ACCURACY_LINES lines."""
    from rich.text import Text  # rich (0.025 s): not for JSON or --help

    by = ",".join(["method", *(extra or ["AXES"]), "sparsity"])
    return [
        Text(
            f"{sweep}: test_acc (%) by sparsity has {lines:,} lines (methods x other grid axes): "
            f"too many to show here; tp-sweep query {sweep} --group-by {by}",
            style="dim",
        )
    ]


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if key in PERCENT:
        return f"{v * 100:.2f}"
    if key in ("code", "sources"):
        return "+".join(c[:8] for c in str(v).split("+"))  # a level trained by two codes names both
    if key in ("run_id", "level_id", "job"):
        return str(v)[:8]
    return number(v)


# Query columns by importance: 0 always shown; higher numbers are dropped first when narrow.
_QUERY_PRIORITY = {
    "method": 0,
    "sparsity": 0,
    "state": 0,
    "test_acc": 0,
    "seed": 1,
    "n": 1,
    "runs": 1,
    "achieved_sparsity": 2,
    "network_sparsity": 3,
    "best_test_acc": 3,
    "speedup": 4,
    "level": 4,
    "level_kind": 4,
    "off_target": 4,
    "code": 5,
    "sources": 5,
    "epochs": 5,
    "test_top5": 5,
    "flops": 6,
    "nonzero_params": 6,
    "run_id": 6,
    "flops_dense": 7,
    "resolution": 7,
    "params": 7,
    "level_id": 8,
}


# `query --levels`: a row per level, which the level's kind and id name: kept at 80 columns.
_LEVELS_PRIORITY = {**_QUERY_PRIORITY, "level_kind": 0, "level_id": 0}


def query_table(title: str, rows: list[dict[str, Any]], width: int, levels: bool = False) -> list[Any]:
    """`query`'s rows: accuracies in percent ((%) in the header), ids at 8 characters, the sweep
    in the title; grouped rows show mean ± std of each metric in one column. `levels`: a row per
    level (`--levels`), whose kind and id stay when columns must go."""
    priority = _LEVELS_PRIORITY if levels else _QUERY_PRIORITY
    from rich.text import Text  # rich (0.025 s): not for JSON or --help

    if not rows:
        return [Text(f"{title}: no rows")]
    keys = [k for k in rows[0] if k != "sweep"]
    grouped = "n" in keys and "runs" in keys and any(k.endswith("_mean") for k in keys)
    cols: list[Any] = []
    cells: list[dict[str, Any]] = [{} for _ in rows]
    for k in keys:
        if grouped and k.endswith("_std"):
            continue
        if grouped and k.endswith("_mean"):
            base = k[:-5]
            unit = " (%)" if base in PERCENT else ""
            cols.append(Col(k, f"{base}{unit}", priority.get(base, 2), right=True))
            scale = 100.0 if base in PERCENT else 1.0
            for c, r in zip(cells, rows):
                c[k] = (
                    fmt_mean_std(r[k], r.get(f"{base}_std"), scale)
                    if scale != 1.0
                    else ("-" if r[k] is None else f"{r[k]:.4g} ± {(r.get(f'{base}_std') or 0.0):.2g}")
                )
            continue
        unit = " (%)" if k in PERCENT else ""
        pri = priority.get(k, 0 if grouped else 2)  # grouping keys and grid axes matter
        cols.append(Col(k, f"{k}{unit}", pri, right=isinstance(rows[0][k], (int, float))))
        for c, r in zip(cells, rows):
            c[k] = _fmt(k, r[k])
    return renderables(
        cols,
        cells,
        width,
        title=f"{title}: {len(rows):,} rows",
        footer="--format csv or json: every column, fractions not percent",
    )


def dict_table(title: str, rows: list[dict[str, Any]], width: int, key_cols: tuple[str, ...] = ()) -> list[Any]:
    """A list of dicts (one run's levels, jobs, events), accuracies in percent, ids shortened."""
    from rich.text import Text  # rich (0.025 s): not for JSON or --help

    if not rows:
        return [Text(f"{title}: none")]
    cols = [
        Col(
            k,
            k + (" (%)" if k in PERCENT else ""),
            0 if k in key_cols else 3,
            right=isinstance(rows[0][k], (int, float)) and not isinstance(rows[0][k], bool),
            wrap=k == "message",
        )
        for k in rows[0]
    ]
    return renderables(cols, [{k: _fmt(k, v) for k, v in r.items()} for r in rows], width, title=title)
