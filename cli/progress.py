"""Progress for long commands: a bar over level trainings while local jobs run, and a
spinner while waiting for scheduler jobs. Both read the store; neither imports torch."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console  # types only
    from rich.progress import TaskID  # types only


class LaunchProgress:
    """A progress bar over level trainings, read from the store while local jobs run."""

    def __init__(self, store, sweep: str, console: Console) -> None:
        from rich.progress import (  # rich (0.025 s): not for JSON or --help
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.store, self.sweep = store, sweep
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("levels"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task: TaskID | None = None
        self._last = 0.0

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.update(force=True)
        return self.bar.__exit__(*exc)

    def update(self, force: bool = False) -> None:
        from cli.render.status import counts  # the store's summaries: SQLAlchemy, 0.3 s
        from db.summaries import sweep_status  # SQLAlchemy, 0.3 s

        if not force and time.monotonic() - self._last < 1.0:
            return
        self._last = time.monotonic()
        runs, totals = sweep_status(self.store, self.sweep, details_up_to=0)  # counts are enough
        done, total = totals.levels_done, totals.levels_total
        desc = " ".join(f"{s}:{n}" for s, n in counts(runs).items())
        if self.task is None:
            self.task = self.bar.add_task(desc, total=total)
        self.bar.update(self.task, completed=done, total=total, description=desc)


def wait_until_idle(store, sweep: str, console: Console, poll_s: float = 2.0) -> None:
    """Block until no run of the sweep is PENDING or RUNNING (reconciled with the scheduler)."""
    from db.reader import ACTIVE_STATES  # SQLAlchemy, 0.25 s
    from db.summaries import run_summaries  # SQLAlchemy, 0.3 s
    from orchestrator.control.reconcile import reconcile_sweep  # the store: SQLAlchemy, 0.3 s

    with console.status(f"waiting for {sweep}") as st:
        while True:
            reconcile_sweep(store, sweep)
            runs = run_summaries(store, sweep)
            active = [r for r in runs if r.state in ACTIVE_STATES]
            st.update(f"waiting for {sweep}: {len(active)} of {len(runs)} runs active")
            if not active:
                return
            time.sleep(poll_s)


class SearchProgress:
    """A bar over trials told (complete, pruned or failed for good) while a search runs."""

    def __init__(self, console: Console, sweep: str) -> None:
        from rich.progress import (  # rich (0.025 s): not for JSON or --help
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn(f"[bold]{sweep}[/] search"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("trials"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.bar.add_task("search", total=None)

    def __enter__(self) -> SearchProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def update(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)
