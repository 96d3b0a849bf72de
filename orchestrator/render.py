"""Tables and JSON for the terminal (rich). Pure functions of store rows."""
from __future__ import annotations

from typing import Any, Iterable

from rich.table import Table

from db.queries import RunSummary, fmt_mean_std, group

STATE_STYLE = {"COMPLETED": "green", "RUNNING": "cyan", "PENDING": "blue", "PLANNED": "dim",
               "FAILED": "red", "LOST": "red", "PREEMPTED": "yellow", "TIMEOUT": "yellow",
               "CANCELLED": "magenta"}
STATE_ORDER = ["PLANNED", "PENDING", "RUNNING", "COMPLETED", "PREEMPTED", "TIMEOUT", "FAILED",
               "LOST", "CANCELLED"]


def counts(runs: Iterable[RunSummary]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in runs:
        out[r.state] = out.get(r.state, 0) + 1
    return {s: out[s] for s in STATE_ORDER if s in out}


def status_json(sweep: str, runs: list[RunSummary]) -> dict[str, Any]:
    return {"sweep": sweep, "counts": counts(runs), "runs": [r.as_dict() for r in runs]}


def status_table(sweep: str, runs: list[RunSummary]) -> Table:
    summary = "  ".join(f"[{STATE_STYLE.get(s, '')}]{s} {n}[/]" for s, n in counts(runs).items())
    t = Table(title=f"sweep {sweep}: {len(runs)} runs   {summary}", title_justify="left")
    for col in ("run", "method", "seed", "sparsities", "state", "levels", "epoch", "job",
                "tries", "last acc"):
        t.add_column(col, justify="right" if col in ("seed", "levels", "epoch", "tries", "last acc") else "left")
    axes = sorted({k for r in runs for k in r.axes})
    for a in axes:
        t.add_column(a)
    for r in runs:
        acc = r.test_acc
        t.add_row(r.run_id[:10], r.method, str(r.seed), ",".join(f"{s:g}" for s in r.sparsities),
                  f"[{STATE_STYLE.get(r.state, '')}]{r.state}[/]",
                  f"{r.levels_done}/{r.levels_total}", str(r.epoch), r.sched_id or "-",
                  str(r.attempts), f"{acc * 100:.2f}" if acc is not None else "-",
                  *[str(r.axes.get(a, "")) for a in axes])
    return t


# Every key of a grid_results row that is not a grid axis.
RESULT_KEYS = ("sweep", "method", "sparsity", "seed", "run_id", "level", "level_id", "level_kind",
               "achieved_sparsity", "test_acc", "test_top5", "best_test_acc", "epochs", "state")


def accuracy_table(sweep: str, rows: list[dict[str, Any]], metric: str = "test_acc") -> Table | None:
    """Accuracy (%) per method and target sparsity, mean ± std over seeds."""
    done = [r for r in rows if r.get(metric) is not None]
    if not done:
        return None
    extra = [k for k in rows[0] if k not in RESULT_KEYS]
    groups = group(done, ["method", *extra, "sparsity"], metrics=(metric,))
    sparsities = sorted({g["sparsity"] for g in groups})
    t = Table(title=f"{sweep}: {metric} (%) by sparsity, mean ± std over seeds (n)", title_justify="left")
    t.add_column("method")
    for k in extra:
        t.add_column(k)
    for s in sparsities:
        t.add_column(f"{s:g}", justify="right")
    lines: dict[tuple, dict[float, str]] = {}
    for g in groups:
        key = (g["method"], *[g[k] for k in extra])
        lines.setdefault(key, {})[g["sparsity"]] = (
            f"{fmt_mean_std(g[f'{metric}_mean'], g[f'{metric}_std'])} ({g['n']})")
    for key, cells in lines.items():
        t.add_row(*[str(k) for k in key], *[cells.get(s, "") for s in sparsities])
    return t


def rows_table(rows: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    if not rows:
        return t
    for col in rows[0]:
        t.add_column(col)
    for r in rows:
        t.add_row(*[_cell(v) for v in r.values()])
    return t


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
