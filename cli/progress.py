"""Progress for long commands: a bar over level trainings while local jobs run, and a
spinner while waiting for scheduler jobs. Both read the store; neither imports torch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cli.common import console

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
    """Block until no run of the sweep is PENDING or RUNNING (reconciled with the scheduler),
    with a spinner saying how many are."""
    from orchestrator.operations.launch import wait_until_idle as wait  # SQLAlchemy, 0.3 s

    with console.status(f"waiting for {sweep}") as st:
        wait(
            store,
            sweep,
            lambda active, runs: st.update(f"waiting for {sweep}: {active} of {runs} runs active"),
            poll_s,
        )


@contextmanager
def local_bar(store: Any, sweep: str) -> Iterator[Callable[[], None]]:
    """A bar over the sweep's level trainings while its local jobs run (a launch's hook)."""
    with LaunchProgress(store, sweep, console) as bar:
        yield bar.update


@contextmanager
def search_bar(sweep: str) -> Iterator[Callable[[int, int], None]]:
    """A bar over a search's trials (a launch's or a resume's hook)."""
    with SearchProgress(console, sweep) as bar:
        yield bar.update


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
