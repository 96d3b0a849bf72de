"""What `tp-sweep status` shows: a sweep (reconciled with the disk and the scheduler first) or
one run, as renderables or JSON, once or refreshed under `--watch` with a progress bar. The
reads are orchestrator.operations.status's; this module draws what they return.

Nothing here imports torch, submitit or the planner: status answers in well under a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from cli.common import console, first_ctrl_c, json_text, settle
from cli.render.tables import Plain
from orchestrator.operations.status import Progress, RunStatus, SweepStatus, target_status

if TYPE_CHECKING:
    from db.reader import StoreReader


def sweep_renderables(res: SweepStatus, width: int, show_results: bool, show_all: bool) -> list[Any]:
    """A sweep's status as renderables: header and runs, supervisor, trials or the accuracy grid."""
    from cli.render import status as render_status  # SQLAlchemy (0.3 s), through db.summaries

    items = render_status.status_renderables(res.sweep, res.runs, res.totals, width, show_all)
    if res.supervisor is not None:
        items += render_status.supervisor_lines(res.supervisor)
    if res.search is not None:  # trials per cell, and the best of each, instead of the accuracy grid
        from cli.render.search import search_table  # rich's tables: not for JSON

        items.append(search_table(res.sweep, res.search, res.search_metric))
    elif show_results and res.accuracy_lines is not None:
        from cli.render.results import accuracy_table, too_many_lines  # rich's tables: not for JSON

        items += (
            too_many_lines(res.sweep, res.accuracy_lines)
            if res.grid is None
            else accuracy_table(res.sweep, res.grid, width)
        )
    if show_results and res.runs and all(r.state == "COMPLETED" for r in res.runs):
        from rich.text import Text  # rich (0.025 s): not for JSON or --help

        items.append(Text(f"to share it: tp-sweep report {res.sweep} (one HTML file, opens offline)", style="dim"))
    return items


def run_renderables(res: RunStatus, width: int) -> list[Any]:
    """One run's status as renderables: its levels, who trained them, its jobs and events."""
    from rich.text import Text  # rich (0.025 s): not for JSON or --help

    from cli.render.results import dict_table  # the store's queries: SQLAlchemy, 0.3 s
    from cli.render.tables import number  # rich: not for JSON

    # a level's whole provenance is for JSON; the table has a row per environment instead
    levels = [{k: v for k, v in lv.items() if k != "provenance"} for lv in res.levels]
    axes = " ".join(f"{k}={number(v)}" for k, v in (res.axes or {}).items())
    items: list[Any] = [Text.from_markup(f"run [bold]{res.run_id}[/] {res.method} seed {res.seed} {axes}")]
    items += dict_table("levels", levels, width, ("kind", "depth", "test_acc", "finished"))
    items += dict_table("provenance (who trained its levels)", res.provenance, width, ("sources", "levels"))
    items += dict_table("jobs", res.jobs, width, ("job", "state"))
    items += dict_table("events", res.events, width, ("at", "to"))
    return items


def show(console: Any, out: Any) -> None:
    if isinstance(out, str):
        print(out)
    else:
        from cli.render.tables import show as show_items  # rich: not for JSON

        show_items(console, out)


View = Callable[[], tuple[int, Any, Progress]]


def _refreshes(view: View, interval: float) -> Iterator[tuple[int, Any, Progress]]:
    """The view, again every `interval` seconds, until nothing will change it by itself (that
    view is the last) or ^C; each refresh settles the exit status on the view's."""
    with first_ctrl_c() as stop:
        while not stop.is_set():
            code, out, progress = view()
            settle(code)
            yield code, out, progress
            if progress.settled:
                return
            stop.wait(interval)


def watch_json(view: View, interval: float) -> int:
    """`status --watch --format json`: a JSON document per refresh, a line each."""
    code = 0
    for now, out, _ in _refreshes(view, interval):
        code = now
        print(out, flush=True)
    return code


def watch(console: Any, view: View, interval: float) -> int:
    """Refresh the view every `interval` seconds until every run is finished or ^C; exit status
    as without --watch. On a terminal the view is redrawn in place, with a bar of levels done;
    elsewhere (a pipe, a log) a line says where the view stands each time that changes, and the
    last view follows whole."""
    if not console.is_terminal:
        return _watch_lines(console, view, interval)
    from rich.console import Group  # rich (0.025 s): not for JSON or --help
    from rich.live import Live  # rich (0.025 s): not for JSON or --help
    from rich.progress_bar import ProgressBar  # rich (0.025 s): not for JSON or --help
    from rich.table import Table  # rich (0.025 s): not for JSON or --help
    from rich.text import Text  # rich (0.025 s): not for JSON or --help

    code = 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        for now, out, progress in _refreshes(view, interval):
            code = now
            items: list[Any] = (
                [Text(out)] if isinstance(out, str) else [Text(str(i)) if isinstance(i, Plain) else i for i in out]
            )
            row = Table.grid(padding=(0, 1))
            row.add_row(
                ProgressBar(
                    total=max(progress.total, 1),
                    completed=progress.done,
                    width=max(10, min(50, console.width - 30)),
                ),
                Text(f"{progress.done:,}/{progress.total:,} levels"),
                Text(time.strftime("%H:%M:%S"), style="dim"),
            )
            at = next((i for i, x in enumerate(items) if not isinstance(x, Text)), len(items))
            items.insert(at, row)  # under the view's header lines
            live.update(Group(*items), refresh=True)
    return code


def _watch_lines(console: Any, view: View, interval: float) -> int:
    code, said, last = 0, None, None
    for now, out, progress in _refreshes(view, interval):
        code, last = now, (out, progress)
        if progress.line != said:  # a line per change: a log of a week-long sweep stays short
            console.print(
                f"{time.strftime('%H:%M:%S')} {progress.line}", markup=False, highlight=False, soft_wrap=True
            )
            said = progress.line
    if last is not None and last[1].settled:  # finished, not stopped by ^C
        show(console, last[0])
    return code


def status_output(
    store: StoreReader, target: str, fmt: str, show_results: bool = True, show_all: bool = False
) -> tuple[int, Any, Progress]:
    """(exit status, JSON text or renderables, progress) of `status TARGET`: a sweep, else a run
    (id or prefix)."""
    from cli.render.status import BIG  # SQLAlchemy (0.3 s), through db.summaries

    table = fmt != "json"
    accuracy_up_to = None
    if table and show_results:
        from cli.render.results import MAX_ACCURACY_LINES  # the store's queries: SQLAlchemy (0.3 s)

        accuracy_up_to = MAX_ACCURACY_LINES
    res = target_status(
        store,
        target,
        details_up_to=BIG if table and not show_all else None,  # a big sweep's table shows only some runs
        accuracy_up_to=accuracy_up_to,
    )
    if not table:  # a run's JSON exits 0 whatever its jobs' states, as it always has
        return res.exit_code if isinstance(res, SweepStatus) else 0, json_text(res.as_json()), res.progress
    if isinstance(res, SweepStatus):
        out = sweep_renderables(res, console.width, show_results, show_all)
    else:
        out = run_renderables(res, console.width)
    return res.exit_code, out, res.progress


def show_status(store, target: str, fmt: str, show_results: bool = True, show_all: bool = False) -> int:
    code, out, _ = status_output(store, target, fmt, show_results, show_all)
    settle(code)  # a FAILED run: 1, whether or not the reader takes the whole output
    show(console, out)
    return code
