"""`tp-sweep status SWEEP`: the sweep's progress and its runs, for the terminal and as JSON.

A sweep of more than BIG runs is summarised: runs by method and state, then only the runs that
need a look (failed, lost, timed out, preempted, running), at most ATTENTION_ROWS of them;
`--all` lists every run. Accuracies are percent in tables and fractions in JSON.
"""

from __future__ import annotations

from typing import Any

from cli.render.tables import Col, number, phrases, renderables
from db.summaries import RunSummary, SweepTotals
from orchestrator.operations.status import eta_s
from orchestrator.operations.status import state_counts as counts

STATE_STYLE = {
    "COMPLETED": "green",
    "RUNNING": "cyan",
    "PENDING": "blue",
    "PLANNED": "dim",
    "FAILED": "red",
    "LOST": "red",
    "PREEMPTED": "yellow",
    "TIMEOUT": "yellow",
    "CANCELLED": "magenta",
    "PRUNED": "cyan",
}
BIG = 40  # runs above which the table view summarises
ATTENTION = ("FAILED", "LOST", "TIMEOUT", "PREEMPTED", "RUNNING")  # listed, in this order
ATTENTION_ROWS = 40


def duration(seconds: float | None) -> str:
    """1d 4h, 3h 12m, 12m 5s, 45s; '-' when unknown."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    d, h, m = s // 86400, s // 3600 % 24, s // 60 % 60
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m}m"
    if m:
        return f"{m}m {s % 60}s"
    return f"{s}s"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}"


def header(sweep: str, runs: list[RunSummary], totals: SweepTotals, width: int) -> list[str]:
    """The sweep in a few lines, wrapped between phrases: runs by state, levels and time,
    device-hours."""

    t = totals
    lines = phrases(
        [f"sweep [bold]{sweep}[/]: {len(runs):,} runs"]
        + [f"[{STATE_STYLE.get(s, '')}]{s} {n:,}[/]" for s, n in counts(runs).items()],
        width,
        sep="  ",
    )
    share = f" ({100 * t.levels_done / t.levels_total:.0f}%)" if t.levels_total else ""
    parts = [f"levels {t.levels_done:,}/{t.levels_total:,} done{share}", f"elapsed {duration(t.elapsed_s)}"]
    time_left = eta_s(runs, t)
    if time_left is not None:
        parts.append(f"about {duration(time_left)} of training left at this pace")
    lines += phrases(parts, width)
    left = "-" if t.device_hours_left is None else f"{t.device_hours_left:,.1f}"
    parts = [
        f"{t.device}-hours {t.device_hours_used:,.1f} used, {left} still planned",
        f"{t.devices_per_job} {t.device}{'s' if t.devices_per_job != 1 else ''} a job",
    ]
    if t.epoch_s is not None:
        parts.append(f"{t.epoch_s:.1f} s an epoch")
    return lines + phrases(parts, width)


def _state_style(text: str) -> str | None:
    return STATE_STYLE.get(text)


def run_columns(axes: list[str]) -> list[Any]:
    cols = [
        Col("run", "run", 3),
        Col("method", "method"),
        Col("seed", "seed", 1, right=True),
        Col("state", "state", style=_state_style),
        Col("levels", "levels", 2, right=True),
        Col("epoch", "epoch", 6, right=True),
        Col("elapsed", "elapsed", 5, right=True),
        Col("eta", "eta", 3, right=True),
        Col("acc", "acc (%)", right=True),
        Col("job", "job", 7),
        Col("tries", "tries", 8, right=True),
        Col("sparsities", "sparsities", 9),
    ]
    return cols + [Col(f"axis:{a}", a, 4) for a in axes]


def run_cells(r: RunSummary, axes: list[str]) -> dict[str, str]:
    done = r.state == "COMPLETED"
    cells = {
        "run": r.run_id[:8],
        "method": r.method,
        "seed": str(r.seed),
        "state": r.state,
        "levels": f"{r.levels_done}/{r.levels_total}",
        "epoch": "-" if done else str(r.epoch),
        "elapsed": duration(r.elapsed_s),
        "eta": "-" if done else duration(r.eta_s),
        "acc": pct(r.test_acc),
        "job": r.sched_id or "-",
        "tries": str(r.attempts),
        "sparsities": ",".join(f"{s:g}" for s in r.sparsities),
    }
    for a in axes:
        cells[f"axis:{a}"] = number(r.axes.get(a, ""))
    return cells


def _count_style(state: str):
    return lambda text: STATE_STYLE.get(state) if text != "-" else None


def method_state_table(runs: list[RunSummary], width: int) -> list[Any]:
    states = list(counts(runs))
    table: dict[str, dict[str, int]] = {}
    for r in runs:
        row = table.setdefault(r.method, {})
        row[r.state] = row.get(r.state, 0) + 1
    cols = [
        Col("method", "method"),
        *[Col(s, s, right=True, panel=True, style=_count_style(s)) for s in states],
        Col("total", "runs", right=True),
    ]
    rows = [
        {
            "method": m,
            **{s: f"{c.get(s, 0):,}" if c.get(s) else "-" for s in states},
            "total": f"{sum(c.values()):,}",
        }
        for m, c in sorted(table.items())
    ]
    return renderables(cols, rows, width, title="runs by method and state")


def status_renderables(
    sweep: str, runs: list[RunSummary], totals: SweepTotals, width: int, show_all: bool = False
) -> list[Any]:
    from rich.text import Text  # rich (0.025 s): not for JSON or --help

    out: list[Any] = [Text.from_markup(line) for line in header(sweep, runs, totals, width)]
    axes = sorted({k for r in runs for k in r.axes})
    cols = run_columns(axes)
    if len(runs) <= BIG or show_all:
        return out + renderables(cols, [run_cells(r, axes) for r in runs], width) + messages(runs)
    out += method_state_table(runs, width)
    order = {s: i for i, s in enumerate(ATTENTION)}
    look = sorted((r for r in runs if r.state in order), key=lambda r: order[r.state])
    if not look:
        return out + [
            Text(
                "no run needs attention (none failed, lost, preempted or running); --all lists every run",
                style="dim",
            )
        ]
    shown = look[:ATTENTION_ROWS]
    what = ", ".join(f"{s} {n:,}" for s, n in counts(look).items())
    title = f"runs that need a look: {len(look):,} ({what})" + (
        f"; the first {len(shown)}" if len(shown) < len(look) else ""
    )
    return (
        out
        + renderables(
            cols,
            [run_cells(r, axes) for r in shown],
            width,
            title=title,
            footer="--all lists every run; --format json has every field",
        )
        + messages(shown)
    )


def messages(runs: list[RunSummary], most: int = 10) -> list[Any]:
    """Why runs stopped (the job's last message), a line each, under the table."""
    from rich.text import Text  # rich (0.025 s): not for JSON or --help

    said = [r for r in runs if r.message and r.state not in ("COMPLETED", "RUNNING", "PENDING")]
    lines = [Text(f"{r.run_id[:8]} {r.state}: {r.message}") for r in said[:most]]
    if len(said) > most:
        lines.append(Text(f"... {len(said) - most} more messages in --format json", style="dim"))
    return lines


def supervisor_lines(info: dict[str, Any]) -> list[Any]:
    """Where the sweep's supervisor runs, its last heartbeat, and its last actions with reasons."""
    from rich.text import Text  # rich (0.025 s): not for JSON or --help

    if info.get("where") is None:
        head = "supervisor: none recorded"
    else:
        where = (
            f"Slurm job {info['sched_id']}" if info["where"] == "slurm" and info.get("sched_id") else info["where"]
        )
        age = info.get("heartbeat_age_s")
        beat = "no heartbeat yet" if age is None else f"last heartbeat {duration(age)} ago"
        if info.get("stopped"):
            state = f"stopped: {info['stopped']}"
        elif info.get("held"):
            state = "running"
        elif info["where"] == "slurm":
            state = (
                "not running now (queued, requeued, or gone: the next job of the sweep that ends "
                "submits a new one)"
            )
        else:
            state = "not running (`tp-sweep supervise` starts it again)"
        head = f"supervisor: {where} on {info.get('host') or '?'}, {beat}; {state}"
    lines = [Text(head, style="bold")]
    for a in info.get("actions", []):
        job = f" {a['job'][:12]}" if a.get("job") else ""
        lines.append(Text(f"  {a['at'][11:]} {a['action']}{job}: {a['reason']}"))
    return lines
