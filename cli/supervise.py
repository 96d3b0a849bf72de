"""`tp-sweep supervise SWEEP` (the sweep's autopilot, in the foreground or as a Slurm job) and
what `tp-sweep launch --supervise` says (orchestrator/operations/supervise.py does the work).

Signals stay here: SIGTERM, SIGINT and SIGHUP set the operation's stop event while a supervisor
runs in this process, so it finishes the action under way and frees its lease; the handlers
before are put back after, for a caller in the same process (a test, a notebook)."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import BadInput, console, error, report_bad_files
from cli.render.launch import report_launch

if TYPE_CHECKING:
    from orchestrator.operations.launch import LaunchHooks, LaunchStart
    from orchestrator.operations.supervise import SupervisedLaunch, Supervision
    from orchestrator.plan.grid import SweepPlan

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def say(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


class SignalStop:
    """An event that SIGTERM, SIGINT and SIGHUP set once `arm()`ed; `disarm()` puts the handlers
    before back."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def arm(self) -> None:
        if not self._previous:
            self._previous = {sig: signal.signal(sig, lambda _s, _f: self.event.set()) for sig in SIGNALS}

    def disarm(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


@contextmanager
def signal_stop() -> Iterator[SignalStop]:
    stop = SignalStop()
    try:
        yield stop
    finally:
        stop.disarm()


def hooks(stop: SignalStop, on_start: Callable[[LaunchStart], None] | None = None) -> LaunchHooks:
    """How a launch reports here: rich's bars, the supervisor's lines; a supervisor started
    here is stopped by a signal."""
    from cli.progress import local_bar, search_bar  # rich's progress bars (0.025 s)
    from orchestrator.operations.launch import LaunchHooks  # the planner, the store: not for --help

    def recorded(out: SupervisedLaunch) -> None:  # just before the supervisor starts here
        report_bad_files(out.bad_files, f"{len(out.bad_files)} file(s) of the output folder failed their checks:")
        if out.recorded is not None:
            console.print(
                f"recorded {len(out.recorded.jobs_new)} new jobs; {out.todo} to run, under the supervisor"
            )
        stop.arm()

    return LaunchHooks(on_start, local_bar, search_bar, recorded, say, stop.event)


def show_supervision(res: Supervision) -> int:
    if not res.ran:
        say(f"sweep {res.sweep}: {res.reason}; not starting another")
    else:
        say(f"sweep {res.sweep}: {'' if res.finished else 'supervisor stopped: '}{res.reason}")
    return res.exit_code


def cmd_supervise(a: argparse.Namespace) -> int:
    from orchestrator.operations.stores import open_store  # SQLAlchemy, 0.3 s
    from orchestrator.operations.supervise import run_supervisor  # the controller: SQLAlchemy (0.3 s)

    url = a.db
    if a.db_file:
        try:
            url = Path(a.db_file).read_text().strip()
        except OSError as exc:
            raise BadInput(f"--db-file {a.db_file}: {exc.strerror or exc}") from None
    store = open_store(url, target=a.sweep)
    sched_id = (os.environ.get("TP_SUPERVISOR_JOB") or os.environ.get("SLURM_JOB_ID")) if a.in_slurm else None
    with signal_stop() as stop:
        stop.arm()
        res = run_supervisor(
            store,
            a.sweep,
            where="slurm" if a.in_slurm else "local",
            sched_id=sched_id,
            poll_s=a.poll_s,
            once=a.once,
            say=say,
            stop=stop.event,
        )
    return show_supervision(res)


def show_supervised(out: SupervisedLaunch, plan: SweepPlan) -> int:
    """What `launch --supervise` did, after a supervisor here ended or one was started on Slurm."""
    if out.supervision is not None:
        return show_supervision(out.supervision)
    report_bad_files(out.bad_files, f"{len(out.bad_files)} file(s) of the output folder failed their checks:")
    if out.sched_id:
        console.print(f"supervisor: Slurm job {out.sched_id}; `tp-sweep status {plan.spec.name}` shows it at work")
    elif out.holder is not None:
        console.print(f"supervisor: already there ({out.holder})")
    if out.failed:
        error(out.failed)
    elif out.submitted is not None:
        report_launch(out.submitted, plan)
    return out.exit_code
