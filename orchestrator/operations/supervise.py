"""`tp-sweep supervise SWEEP` (the sweep's autopilot, here until the sweep is done) and
`launch --supervise` (record the sweep, then start its supervisor: a Slurm job, or here).

Stopping: the caller passes a `threading.Event` (`stop`); setting it (the command's SIGTERM,
SIGINT and SIGHUP handlers do) stops the supervisor after the action under way, and frees its
lease. Nothing here touches signals, so an in-process caller keeps its own handlers."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.errors import UserError
from orchestrator.control.controller import LaunchResult, prepare, stored_spec, submit_prepared
from orchestrator.control.submit import SubmitError
from orchestrator.control.supervisor import Supervisor, start_supervisor_job, want_supervision
from orchestrator.plan.grid import SweepPlan
from orchestrator.plan.launch import Launch, stored_launch
from orchestrator.plan.spec import SupervisorSpec
from orchestrator.search.driver import SearchDriver

if TYPE_CHECKING:
    from db.store import Store

Say = Callable[[str], None]


@dataclass(frozen=True)
class Supervision:
    """How a supervisor in this process ended."""

    sweep: str
    ran: bool  # False: another supervisor holds the sweep; this one did not start
    finished: bool
    reason: str
    once: bool = False

    @property
    def exit_code(self) -> int:
        """0 when the sweep finished, another supervisor holds it, or this one was stopped (a
        signal, a takeover, --once); 1 when it stopped with work left."""
        if not self.ran or self.finished or self.once:
            return 0
        return 0 if "signal" in self.reason or "taken over" in self.reason else 1


def search_hook(store: Store, run: Launch) -> SearchDriver:
    """The sweep's Optuna search, asked and told once per supervisor pass."""
    return SearchDriver(store, run, supervised=True)


def run_supervisor(
    store: Store,
    sweep: str,
    *,
    where: str = "local",
    sched_id: str | None = None,
    poll_s: float | None = None,
    once: bool = False,
    say: Say | None = None,
    stop: threading.Event | None = None,
) -> Supervision:
    """Supervise in this process until the sweep is done, nothing more can be done, or `stop` is
    set. `say`: the supervisor's lines, one action each. NotFound, SpecError: exit 2."""
    spec = stored_spec(store, sweep)
    hook = None
    if spec.search is not None:
        row = store.get_sweep(sweep)
        assert row is not None  # stored_spec found it
        hook = search_hook(store, stored_launch(spec, row.spec))
    sup = Supervisor(store, sweep, where=where, sched_id=sched_id, poll_s=poll_s, out=say, hook=hook, stop=stop)
    outcome = sup.run(once=once)
    return Supervision(sweep, outcome.ran, outcome.finished, outcome.reason, once)


class SupervisorNotStarted(UserError):
    """launch --supervise with another executor than the spec's."""


@dataclass
class SupervisedLaunch:
    """What `launch --supervise` did. `recorded`: the launch's records (None for a search);
    `todo`: jobs left to the supervisor (local); `supervision`: how the supervisor in this
    process ended (local); `sched_id` / `holder`: the Slurm supervisor job started, or the one
    already there; `failed`: why the launch stops with exit 1 (a supervisor job or a submission
    that failed)."""

    where: str
    recorded: LaunchResult | None = None
    todo: int = 0
    supervision: Supervision | None = None
    sched_id: str | None = None
    holder: str | None = None
    submitted: LaunchResult | None = None
    failed: str | None = None
    bad_files: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.failed:
            return 1
        if self.supervision is not None:
            return self.supervision.exit_code
        return 1 if self.submitted is not None and self.submitted.bad else 0


def check_supervised_kind(run: Launch) -> None:
    if run.kind != run.spec.executor.kind:
        raise SupervisorNotStarted(
            f"--supervise with --executor {run.kind}: the supervisor uses the spec's executor "
            f"({run.spec.executor.kind}); set executor.kind: {run.kind} in the spec"
        )


def launch_supervised(
    store: Store,
    run: Launch,
    replace: bool = False,
    *,
    on_recorded: Callable[[SupervisedLaunch], None] | None = None,
    say: Say | None = None,
    stop: threading.Event | None = None,
) -> SupervisedLaunch:
    """Record the sweep (and submit what fits), then start its supervisor: a Slurm job when the
    sweep runs on Slurm (returns at once), else here, until it ends. `on_recorded` hears what was
    recorded before a supervisor here starts (it may run for hours)."""
    from db import supervision  # SQLAlchemy (0.3 s)

    check_supervised_kind(run)
    spec = run.spec
    sup = spec.supervisor or SupervisorSpec()
    out = SupervisedLaunch(sup.where or ("slurm" if run.kind == "slurm" else "local"))
    # Recorded first (the supervisor reads the store): a search's sweep, or the plan and its jobs.
    if spec.search is not None:
        store.record_plan(SweepPlan(spec, [], [], {}, {}), run.stored, run.plan.levels_dir)
    else:
        res, jobs, todo = prepare(store, run.plan, run.stored, replace)
        out.recorded, out.todo, out.bad_files = res, len(todo), res.bad_files
    if out.where == "local":
        if on_recorded is not None:
            on_recorded(out)
        want_supervision(store, spec, "local")
        out.supervision = run_supervisor(store, spec.name, say=say, stop=stop)
        return out
    # The supervisor's job first: trainer jobs may fill a QOS that it shares with them.
    try:
        out.sched_id = start_supervisor_job(store, spec, f"launch-{os.getpid()}")
    except Exception as exc:  # noqa: BLE001 - sbatch's own words
        text = str(exc).strip().splitlines()
        out.failed = (
            f"the sweep is recorded, but its supervisor job could not be submitted: "
            f"{text[-1] if text else type(exc).__name__}; `tp-sweep supervise {spec.name}` runs it here"
        )
        return out
    row = supervision.lease(store, spec.name)
    if not out.sched_id and row is not None:
        out.holder = row.describe()
    if out.recorded is not None:  # what fits now; the supervisor submits the rest
        try:
            out.submitted = submit_prepared(store, run, jobs, todo, out.recorded)
        except SubmitError as exc:
            out.failed = f"{exc}; the supervisor tries again"
    return out
