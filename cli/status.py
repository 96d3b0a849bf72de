"""What `tp-sweep status` shows: a sweep (reconciled with the disk and the scheduler first) or
one run, as renderables or JSON, once or refreshed under `--watch` with a progress bar.

Nothing here imports torch, submitit or the planner: status answers in well under a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

from cli.common import console, first_ctrl_c, json_text, settle
from cli.render.tables import Plain
from core.errors import UserError
from core.levels import level_number

if TYPE_CHECKING:
    from db.reader import StoreReader  # types only


BAD_STATES = ("FAILED", "LOST")  # a run in one of these makes status exit 1
# Runs (or jobs) in these states may still change by themselves: db.reader.ACTIVE_STATES, and planned.
STILL_MOVING = ("PLANNED", "PENDING", "RUNNING")


class Progress(NamedTuple):
    """Where a view stands, for `--watch`: levels done of all, `settled` when nothing will change
    it any more by itself (no run planned or active, no live supervisor, no trial in flight),
    and the view in one line."""

    done: int
    total: int
    settled: bool
    line: str


class TargetError(UserError, ValueError):
    """No sweep or run by that name, or a run-id prefix that matches several runs."""


def find_run(store: Any, target: str, sweeps: bool = True) -> Any:
    """The run whose id starts with `target`; an error that lists the candidates when several
    match, or the sweeps there are when none does."""
    found = store.find_runs(target)
    if len(found) == 1:
        return found[0]
    if found:
        more = "50 or more" if len(found) >= 50 else str(len(found))
        lines = [
            f"  {r.run_id}  {r.method} seed {r.seed}"
            + ("  " + " ".join(f"{k}={v}" for k, v in r.axes.items()) if r.axes else "")
            for r in found[:10]
        ]
        rest = (
            [f"  ... and {len(found) - 10}{' or more' if len(found) >= 50 else ''} more"]
            if len(found) > 10
            else []
        )
        raise TargetError(
            "\n".join([f"run id prefix {target!r} matches {more} runs; give more of the id:", *lines, *rest])
        )
    names = store.sweep_names() if sweeps else []
    raise TargetError(
        f"no {'sweep or ' if sweeps else ''}run {target!r} in {store.display_url}"
        + (f" (sweeps: {', '.join(names)})" if names else "")
    )


def sweep_view(
    store: Any, sweep: str, fmt: str, width: int, show_results: bool = True, show_all: bool = False
) -> tuple[int, Any, Progress]:
    """(exit status, JSON text or a list of renderables, progress) for a sweep."""
    # The store's reads (SQLAlchemy, 0.3 s): `tp-sweep` imports this module at start-up.
    from cli.render import status as render_status  # SQLAlchemy (0.3 s), through db.summaries
    from db.summaries import read_runs, read_work, sweep_status  # SQLAlchemy (0.3 s)
    from orchestrator.control.reconcile import reconcile_sweep  # the controller: SQLAlchemy (0.3 s)

    summary_only = fmt != "json" and not show_all  # a big sweep's table shows only some runs
    details_up_to = render_status.BIG if summary_only else None
    read, at_work = None, None
    if store.engine.dialect.name == "sqlite":
        unfinished = reconcile_sweep(store, sweep)
    else:
        # A database server works while we do: every run's row and the sweep's totals are
        # read on a second connection while reconcile looks at the disk and asks the
        # scheduler (0.1 s of a 10,000-run status on PostgreSQL). SQLite works in this
        # process, where a second thread only fights the first for the GIL (measured slower).
        with ThreadPoolExecutor(2) as pool:
            ahead = pool.submit(read_runs, store, sweep, details_up_to)
            rows = store.unfinished_levels(sweep)
            work = pool.submit(read_work, store, sweep, rows)
            unfinished = reconcile_sweep(store, sweep, rows)
            if unfinished is not None:  # else reconcile wrote: what was read may be stale
                read, at_work = ahead.result(), work.result()
    runs, totals = sweep_status(store, sweep, unfinished, details_up_to, read, at_work)
    code = 1 if any(r.state in BAD_STATES for r in runs) else 0
    search = search_rows(store, sweep)
    from db.supervision import summary  # SQLAlchemy, loaded above

    supervisor = summary(store, sweep)
    moving = (
        any(r.state in STILL_MOVING for r in runs)
        or (supervisor is not None and supervisor["held"] and not supervisor["stopped"])
        or any(c.get("running", 0) + c.get("waiting", 0) for c in search or [])
    )
    states = ", ".join(f"{s} {n:,}" for s, n in render_status.counts(runs).items())
    bar = Progress(
        totals.levels_done,
        totals.levels_total,
        not moving,
        f"{sweep}: {totals.levels_done:,}/{totals.levels_total:,} levels; {len(runs):,} runs: {states}",
    )
    if fmt == "json":
        out = render_status.status_json(sweep, runs, totals)
        if search is not None:
            out["search"] = search
        if supervisor is not None:
            out["supervisor"] = supervisor
        return code, json_text(out), bar
    items = render_status.status_renderables(sweep, runs, totals, width, show_all)
    if supervisor is not None:
        items += render_status.supervisor_lines(supervisor)
    if search is not None:  # trials per cell, and the best of each, instead of the accuracy grid
        from cli.render.search import search_table  # rich's tables: not for JSON

        items.append(search_table(sweep, search, search_metric(store, sweep)))
    elif show_results:
        from cli.render.results import MAX_ACCURACY_LINES, accuracy_table, too_many_lines  # not for JSON
        from db.queries import accuracy_lines, grid_results  # SQLAlchemy (0.3 s)

        lines = accuracy_lines(store, sweep)
        items += (
            too_many_lines(sweep, lines)
            if lines > MAX_ACCURACY_LINES
            else accuracy_table(sweep, grid_results(store, sweep), width)
        )
    if show_results and runs and all(r.state == "COMPLETED" for r in runs):
        from rich.text import Text  # rich (0.025 s): not for JSON or --help

        items.append(Text(f"to share it: tp-sweep report {sweep} (one HTML file, opens offline)", style="dim"))
    return code, items, bar


def search_rows(store: StoreReader, sweep: str) -> list[dict[str, Any]] | None:
    """Trials per cell of a sweep with a search (None for a plain sweep: Optuna stays unimported)."""
    spec = store.sweep_spec(sweep)
    if not (spec or {}).get("search"):
        return None
    from orchestrator.search.studies import search_summary  # Optuna (about a second)

    return search_summary(store, sweep)


def search_metric(store: StoreReader, sweep: str) -> str:
    """What the sweep's search optimises (search_spec's default: test_acc)."""
    return ((store.sweep_spec(sweep) or {}).get("search") or {}).get("metric") or "test_acc"


def run_view(store: Any, run: Any, fmt: str, width: int) -> tuple[int, Any, Progress]:
    """(exit status, JSON text or renderables, progress) for one run: its levels, jobs, events."""
    from rich.text import Text  # rich (0.025 s): not for JSON or --help

    from cli.render.results import dict_table  # the store's queries: SQLAlchemy, 0.3 s

    lvls = store.run_levels(run.run_id)
    kinds = store.run_level_kinds(run.run_id)  # its role in this run, not in the run that planned it first
    levels = [
        {
            "level_id": lv.level_id,
            "kind": kinds.get(lv.level_id, lv.kind),
            "level": level_number(kinds.get(lv.level_id, lv.kind), lv.depth),
            "depth": lv.depth,
            "density": lv.density,
            "achieved_sparsity": lv.achieved_sparsity,
            "network_sparsity": lv.network_sparsity,
            "test_acc": lv.test_acc,
            "best_test_acc": lv.best_test_acc,
            "epochs": lv.epochs,
            "seconds": lv.seconds,
            "nonzero_params": lv.nonzero_params,
            "flops": lv.flops,
            "speedup": lv.flops_dense / lv.flops if lv.flops_dense and lv.flops else None,
            "resolution": lv.resolution,
            "code": lv.code,
            "sources": lv.sources,
            "job": lv.job_id,
            "finished": lv.finished_at is not None,
        }
        for lv in lvls
    ]
    job_ids = sorted({lv.job_id for lv in lvls if lv.job_id})
    jobs = store.jobs(job_ids)
    events = [
        {
            "at": e.at.isoformat(timespec="seconds"),
            "job": e.job_id,
            "sched_id": e.sched_id,
            "from": e.state_from,
            "to": e.state_to,
            "message": e.message,
        }
        for e in store.events(job_ids)
    ]
    job_rows = [
        {
            "job": j.job_id,
            "state": j.state,
            "sched_id": j.sched_id,
            "attempts": j.attempts,
            "levels": len(j.levels),
            "message": j.message,
        }
        for j in jobs.values()
    ]
    code = 1 if any(j.state in BAD_STATES for j in jobs.values()) else 0
    done = sum(1 for lv in levels if lv["finished"])
    by_state: dict[str, int] = {}
    for j in jobs.values():
        by_state[j.state] = by_state.get(j.state, 0) + 1
    bar = Progress(
        done,
        len(levels),
        not any(j.state in STILL_MOVING for j in jobs.values()),
        f"run {run.run_id[:8]}: {done}/{len(levels)} levels; {len(jobs)} jobs: "
        + ", ".join(f"{s} {n}" for s, n in sorted(by_state.items())),
    )
    if fmt == "json":
        for row, lv in zip(levels, lvls):
            row["provenance"] = lv.provenance
        return (
            0,
            json_text(
                {
                    "run_id": run.run_id,
                    "method": run.method,
                    "seed": run.seed,
                    "axes": run.axes,
                    "levels": levels,
                    "jobs": job_rows,
                    "events": events,
                }
            ),
            bar,
        )
    from cli.render.tables import number  # rich: not for JSON

    axes = " ".join(f"{k}={number(v)}" for k, v in (run.axes or {}).items())
    items: list[Any] = [Text.from_markup(f"run [bold]{run.run_id}[/] {run.method} seed {run.seed} {axes}")]
    items += dict_table("levels", levels, width, ("kind", "depth", "test_acc", "finished"))
    items += dict_table("provenance (who trained its levels)", provenance_rows(lvls), width, ("sources", "levels"))
    items += dict_table("jobs", job_rows, width, ("job", "state"))
    items += dict_table("events", events, width, ("at", "to"))
    return code, items, bar


def provenance_rows(levels: list[Any]) -> list[dict[str, Any]]:
    """One row per distinct environment that trained the run's levels: the code tree (and its
    git commit and diff), the libraries, the device, world size and hosts."""
    out: dict[str, dict[str, Any]] = {}
    for lv in levels:
        p = lv.provenance if isinstance(lv.provenance, dict) else None
        if not p:
            continue
        git = p.get("git") or {}
        row = {
            "sources": p.get("sources"),
            "version": p.get("version"),
            "git": (str(git.get("commit"))[:10] + (f"+diff {git['diff']}" if git.get("diff") else ""))
            if git.get("commit")
            else "-",
            "torch": p.get("torch"),
            "cuda": p.get("cuda") or "-",
            "cudnn": p.get("cudnn") or "-",
            "ffcv": p.get("ffcv") or "-",
            "device": p.get("device"),
            "world_size": p.get("world_size"),
            "hosts": ",".join(p.get("hosts") or []),
            "mixed": "yes: " + ",".join(p["codes"]) if len(p.get("codes") or []) > 1 else "no",
        }
        key = json.dumps(row, sort_keys=True)
        out.setdefault(key, {**row, "levels": 0})["levels"] += 1
    return list(out.values())


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


def _width(fmt: str) -> int:
    """The console's width for a table; JSON has none (asking would load rich: 0.02 s)."""
    return 0 if fmt == "json" else console.width


def status_output(store, target: str, fmt: str, show_results: bool = True, show_all: bool = False):
    """(exit status, output, progress) of `status TARGET`: a sweep, else a run (id or prefix)."""
    if store.sweep_spec(target) is not None:
        return sweep_view(store, target, fmt, _width(fmt), show_results, show_all)
    from db.store import full_store  # the ORM (0.1 s): a run's view reads its levels, jobs, events as entities

    full = full_store(store)
    return run_view(full, find_run(full, target), fmt, _width(fmt))


def show_status(store, target: str, fmt: str, show_results: bool = True, show_all: bool = False) -> int:
    code, out, _ = status_output(store, target, fmt, show_results, show_all)
    settle(code)  # a FAILED run: 1, whether or not the reader takes the whole output
    show(console, out)
    return code
