"""`tp-sweep supervise SWEEP` (the sweep's autopilot, in the foreground or as a Slurm job) and
`tp-sweep launch --supervise` (record the sweep, then start its supervisor)."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import BadInput, console, error, report_bad_files
from cli.render.launch import report_launch
from orchestrator.operations.stores import open_store

if TYPE_CHECKING:
    from db.store import Store  # types only
    from orchestrator.plan.grid import SweepPlan  # types only
    from orchestrator.plan.spec import SweepSpec  # types only


def _say(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def search_hook(store: Store, spec: SweepSpec, spec_dict: dict[str, Any]) -> Any:
    """The sweep's Optuna search, asked and told once per supervisor pass."""
    from orchestrator.plan.grid import plan_sweep  # the planner (pydantic, YAML): 0.2 s
    from orchestrator.search.driver import SearchDriver  # Optuna (about a second)

    return SearchDriver(store, spec, spec_dict, spec.executor.kind, plan_sweep(spec), supervised=True)


def run_supervisor(
    store: Any,
    sweep: str,
    *,
    where: str = "local",
    sched_id: str | None = None,
    poll_s: float | None = None,
    once: bool = False,
) -> int:
    """Supervise in this process until the sweep is done or nothing more can be done. Exit 0
    when it finished (or another supervisor holds the sweep), 1 when it stopped with work left."""
    from orchestrator.control.controller import stored_spec  # the controller: SQLAlchemy
    from orchestrator.control.supervisor import Supervisor  # the controller: SQLAlchemy (0.3 s)

    spec = stored_spec(store, sweep)  # NotFound, SpecError: bad input, exit 2 (cli.tp_sweep.main)
    row = store.get_sweep(sweep)
    hook = search_hook(store, spec, row.spec) if spec.search is not None else None
    sup = Supervisor(store, sweep, where=where, sched_id=sched_id, poll_s=poll_s, out=_say, hook=hook)

    def stop(signum: int, _frame: Any) -> None:  # finish the action under way, free the lease
        sup.stop_requested = True

    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        outcome = sup.run(once=once)
    finally:  # a caller in the same process (a test, a notebook) gets its own handlers back
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not outcome.ran:
        _say(f"sweep {sweep}: {outcome.reason}; not starting another")
        return 0
    _say(f"sweep {sweep}: {'' if outcome.finished else 'supervisor stopped: '}{outcome.reason}")
    if outcome.finished or "signal" in outcome.reason or "taken over" in outcome.reason or once:
        return 0
    return 1


def cmd_supervise(a: argparse.Namespace) -> int:
    url = a.db
    if a.db_file:
        try:
            url = Path(a.db_file).read_text().strip()
        except OSError as exc:
            raise BadInput(f"--db-file {a.db_file}: {exc.strerror or exc}") from None
    store = open_store(url, target=a.sweep)
    sched_id = (os.environ.get("TP_SUPERVISOR_JOB") or os.environ.get("SLURM_JOB_ID")) if a.in_slurm else None
    return run_supervisor(
        store, a.sweep, where="slurm" if a.in_slurm else "local", sched_id=sched_id, poll_s=a.poll_s, once=a.once
    )


def launch_supervised(
    store: Store, spec: SweepSpec, spec_dict: dict[str, Any], kind: str, plan: SweepPlan, replace: bool = False
) -> int:
    """`launch --supervise`: record the sweep (and submit what fits), then start its supervisor:
    a Slurm job when the sweep runs on Slurm (the launch returns at once), else here, in the
    foreground."""
    from db import supervision  # SQLAlchemy (0.3 s)
    from orchestrator.control.controller import prepare  # the controller: SQLAlchemy (0.3 s)
    from orchestrator.control.supervisor import (  # the controller: SQLAlchemy (0.3 s)
        start_supervisor_job,
        want_supervision,
    )
    from orchestrator.plan.spec import SupervisorSpec  # the planner (pydantic, YAML): 0.2 s

    sup = spec.supervisor or SupervisorSpec()
    where = sup.where or ("slurm" if kind == "slurm" else "local")
    if kind != spec.executor.kind:
        raise BadInput(
            f"--supervise with --executor {kind}: the supervisor uses the spec's executor "
            f"({spec.executor.kind}); set executor.kind: {kind} in the spec"
        )
    # Recorded first (the supervisor reads the store): a search's sweep, or the plan and its jobs.
    if spec.search is not None:
        from orchestrator.plan.grid import SweepPlan  # the planner: 0.2 s

        store.record_plan(SweepPlan(spec, [], [], {}, {}), spec_dict, plan.levels_dir)
    else:
        res, jobs, todo = prepare(store, plan, spec_dict, replace)
        report_bad_files(res.bad_files, f"{len(res.bad_files)} file(s) of the output folder failed their checks:")
    if where == "local":
        if spec.search is None:
            console.print(f"recorded {len(res.jobs_new)} new jobs; {len(todo)} to run, under the supervisor")
        want_supervision(store, spec, "local")
        return run_supervisor(store, spec.name)
    # The supervisor's job first: trainer jobs may fill a QOS that it shares with them.
    try:
        sched_id = start_supervisor_job(store, spec, f"launch-{os.getpid()}")
    except Exception as exc:  # noqa: BLE001 - sbatch's own words
        text = str(exc).strip().splitlines()
        error(
            f"the sweep is recorded, but its supervisor job could not be submitted: "
            f"{text[-1] if text else type(exc).__name__}; `tp-sweep supervise {spec.name}` runs it here"
        )
        return 1
    row = supervision.lease(store, spec.name)
    if sched_id:
        console.print(f"supervisor: Slurm job {sched_id}; `tp-sweep status {spec.name}` shows it at work")
    elif row is not None:
        console.print(f"supervisor: already there ({row.describe()})")
    if spec.search is None:  # what fits now; the supervisor submits the rest
        from orchestrator.control.controller import submit_prepared  # the controller: SQLAlchemy (0.3 s)
        from orchestrator.control.submit import SubmitError  # the controller: SQLAlchemy (0.3 s)

        try:
            res = submit_prepared(store, spec, jobs, todo, kind, res)
        except SubmitError as exc:
            error(f"{exc}; the supervisor tries again")
            return 1
        report_launch(res, plan)
        return 1 if res.bad else 0  # levels found damaged, as a plain launch says
    return 0
