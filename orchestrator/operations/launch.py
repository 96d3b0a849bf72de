"""`tp-sweep launch`: read a spec, plan it, record and submit it (or run its Optuna search, or
start its supervisor); and the dry run, which plans and counts and changes nothing.

Progress reaches the caller through `LaunchHooks`: the header before anything is recorded, the
local jobs' progress, the search's, and a supervisor's lines. The caller renders all of it."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import UserError

if TYPE_CHECKING:
    from db.store import Store
    from orchestrator.control.controller import LaunchResult as LaunchResult  # what a command renders
    from orchestrator.control.relaunch import Relaunch
    from orchestrator.operations.supervise import SupervisedLaunch
    from orchestrator.plan.launch import Launch
    from orchestrator.search.driver import SearchResult


class LaunchRefused(UserError):
    """A spec, a flag or an output folder this launch cannot go on with: nothing was changed."""


@dataclass(frozen=True)
class LaunchRequest:
    spec: str  # the spec file
    db: str | None = None  # --db
    executor: str | None = None  # --executor (else the spec's)
    reuse: str | None = None  # --reuse (else the spec's)
    mode: str | None = None  # --extend / --replace: what a launch may change of its sweep
    supervise: bool = False  # --supervise (also: the spec's supervisor: block)


@dataclass(frozen=True)
class LaunchStart:
    """What a launch says before it records anything."""

    sweep: str
    runs: int
    level_trainings: int
    kind: str
    store_url: str  # password hidden
    relaunch: list[str]  # how it changes the sweep of its name (none: new, or the same spec)
    preemption_warning: str | None  # Slurm: the partition's preemption against the spec's settings


ProgressBar = Callable[["Store", str], AbstractContextManager[Callable[[], None]]]
SearchBar = Callable[[str], AbstractContextManager[Callable[[int, int], None]]]


@dataclass(frozen=True)
class LaunchHooks:
    """How a launch reports while it works; each may be left out. `local_progress(store,
    sweep)` and `search_progress(sweep)` are entered around local jobs and a search, and yield
    the callable told of progress. `stop`: set to stop a supervisor started here."""

    on_start: Callable[[LaunchStart], None] | None = None
    local_progress: ProgressBar | None = None
    search_progress: SearchBar | None = None
    on_recorded: Callable[[SupervisedLaunch], None] | None = None
    say: Callable[[str], None] | None = None
    stop: threading.Event | None = None


@dataclass
class Launched:
    """What a launch did: one of `result` (jobs recorded and submitted), `search` (its search
    ran to its end), `driven_by` (a supervisor holds the search: nothing done here),
    `supervised` (--supervise). `store`: the store it used, for the status that follows."""

    launch: Launch
    store: Store
    result: LaunchResult | None = None
    search: SearchResult | None = None
    driven_by: str | None = None
    supervised: SupervisedLaunch | None = None


def read(request: LaunchRequest) -> Launch:
    """The request's spec, read and planned; LaunchRefused (exit 2) when it is not valid."""
    from orchestrator.plan.launch import read_launch  # the planner (pydantic, YAML): 0.2 s

    try:
        return read_launch(request.spec, executor=request.executor, reuse=request.reuse)
    except ValueError as exc:  # SpecError, and any ValueError of pydantic's or the planner's
        raise LaunchRefused(str(exc)) from None


def launch(request: LaunchRequest, hooks: LaunchHooks | None = None) -> Launched:
    """Check, record and submit the spec's sweep (local jobs run to their end here), run its
    search, or start its supervisor. LaunchRefused before anything is changed when the spec,
    its data or models, the output folder, or a relaunch the flags do not allow is wrong."""
    hooks = hooks or LaunchHooks()
    run = read(request)
    from orchestrator.control.relaunch import compare  # the controller: SQLAlchemy (0.3 s)
    from orchestrator.operations.stores import open_store  # SQLAlchemy, 0.3 s
    from orchestrator.plan.preflight import PreflightError, check_plan  # the planner; check_plan: torch

    try:
        check_plan(run.plan)
    except PreflightError as exc:
        raise LaunchRefused(f"{request.spec}: {exc}") from None
    spec = run.spec
    supervise = request.supervise or spec.supervisor is not None
    if supervise:
        from orchestrator.operations.supervise import check_supervised_kind  # the search: Optuna

        check_supervised_kind(run)
    check_writable(run.plan.output_dir)
    store = open_store(request.db, spec.db)
    relaunch = compare(store, run.plan)
    why = relaunch.refusal(request.mode) if relaunch is not None else None
    if why:
        raise LaunchRefused(why)
    counts = run.plan.counts()
    if hooks.on_start is not None:
        hooks.on_start(
            LaunchStart(
                spec.name,
                counts["runs"],
                counts["level_trainings"],
                run.kind,
                store.display_url,
                relaunch_lines(relaunch, request.mode),
                _preemption_warning(run, supervise),
            )
        )
    replace = request.mode == "replace"
    out = Launched(run, store)
    if supervise:
        from orchestrator.operations.supervise import launch_supervised  # the search: Optuna

        out.supervised = launch_supervised(
            store, run, replace, on_recorded=hooks.on_recorded, say=hooks.say, stop=hooks.stop
        )
    elif spec.search is not None:
        out.driven_by = supervised_elsewhere(store, spec.name)
        if out.driven_by is None:
            out.search = run_search(store, run, hooks.search_progress)
    else:
        from orchestrator.control.controller import launch as record_and_submit  # SQLAlchemy (0.3 s)

        bar = hooks.local_progress if run.kind != "slurm" else None
        with bar(store, spec.name) if bar is not None else nullcontext(None) as update:
            out.result = record_and_submit(store, run, on_progress=update, replace=replace)
    return out


def _preemption_warning(run: Launch, supervise: bool) -> str | None:
    if run.kind != "slurm":
        return None
    from slurm.limits import preemption_warning  # scontrol: a call or two

    return preemption_warning(run.spec.executor.partition, run.spec.executor.signal_delay_s, supervise)


def run_search(store: Store, run: Launch, progress: SearchBar | None = None) -> SearchResult:
    """Drive the sweep's Optuna search to its end (it can be stopped and started again)."""
    from orchestrator.search.driver import SearchDriver  # Optuna (about a second)

    with progress(run.name) if progress is not None else nullcontext(None) as update:
        return SearchDriver(store, run, on_progress=update).run()


def supervised_elsewhere(store: Store, sweep: str) -> str | None:
    """The supervisor that drives the sweep's search, described, when one is alive: a launch or
    a resume leaves the search to it."""
    from db import supervision  # SQLAlchemy (0.3 s)

    row = supervision.lease(store, sweep)
    return row.describe() if row is not None and row.held else None


def check_writable(folder: str) -> None:
    """The output folder must take files before anything is recorded or submitted; checked
    without leaving anything behind (a launch that stops with exit 2 changes nothing): a file
    made and removed in the folder, or in its nearest existing parent a folder made and removed."""
    path = os.path.abspath(folder)
    try:
        if os.path.isdir(path):
            with tempfile.NamedTemporaryFile(dir=path, prefix=".tp-write-check-"):
                pass
            return
        parent = path
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise NotADirectoryError(20, "Not a directory", parent)
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".tp-write-check-"))
    except OSError as exc:
        raise LaunchRefused(f"output_dir {folder}: cannot write there ({exc.strerror or exc})") from None


def relaunch_lines(relaunch: Relaunch | None, mode: str | None) -> list[str]:
    """What a launch says about the sweep of its name that it changes (nothing for a new sweep,
    or a relaunch of the same spec)."""
    if relaunch is None:
        return []
    lines = relaunch.lines(mode)
    return [f"sweep {relaunch.sweep} exists; this launch changes it:", *(f"  {x}" for x in lines)] if lines else []


def wait_until_idle(
    store: Store, sweep: str, on_poll: Callable[[int, int], None] | None = None, poll_s: float = 2.0
) -> None:
    """Block until no run of the sweep is PENDING or RUNNING (reconciled with the scheduler);
    `on_poll(active, runs)` after each look (launch --wait)."""
    from db.reader import ACTIVE_STATES  # SQLAlchemy, 0.25 s
    from db.summaries import run_summaries  # SQLAlchemy, 0.3 s
    from orchestrator.control.reconcile import reconcile_sweep  # the store: SQLAlchemy, 0.3 s

    while True:
        reconcile_sweep(store, sweep)
        runs = run_summaries(store, sweep)
        active = [r for r in runs if r.state in ACTIVE_STATES]
        if on_poll is not None:
            on_poll(len(active), len(runs))
        if not active:
            return
        time.sleep(poll_s)


@dataclass
class DryRun:
    """What a launch would do, found without changing anything."""

    launch: Launch
    counts: dict[str, int]
    jobs: int  # jobs the levels to train would be grouped in
    code: str  # this code's identity (its sources)
    bad: dict[str, str] = field(default_factory=dict)  # level folder -> why it is not counted
    other_code: dict[str, int] = field(default_factory=dict)  # reused levels by other code
    other_inputs: dict[str, Any] = field(default_factory=dict)  # reused levels with other inputs
    relaunch: Relaunch | None = None  # how it differs from the sweep of its name
    relaunch_lines: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.bad else 0

    def info(self) -> dict[str, Any]:
        """The dry run as `--format json` prints it (the search's plan added by the caller)."""
        from orchestrator.plan.jobs import BRANCHES_INLINE  # the planner: 0.2 s

        return {
            "sweep": self.launch.name,
            **self.counts,
            "jobs": self.jobs,
            "branches": BRANCHES_INLINE,
            "executor": self.launch.kind,
            "bad_levels": self.bad,
            "reuse": self.launch.plan.reuse,
            "code": self.code,
            "other_code": self.other_code,
            "other_inputs": self.other_inputs,
            "relaunch": self.relaunch.as_json() if self.relaunch is not None else None,
        }


def dry_run(request: LaunchRequest) -> DryRun:
    """Plan and count what a launch of the spec would train: levels finished on disk, or in the
    store when it exists already (a dry run creates nothing), and how the plan differs from the
    sweep of its name there. Never imports torch."""
    from core.code import code_identity  # code identity: hashes the trainer's files (0.1 s cold)
    from db.engine import resolve_url  # SQLAlchemy, 0.3 s
    from orchestrator.control.controller import done_on_disk, other_code, other_inputs  # SQLAlchemy (0.3 s)
    from orchestrator.plan.jobs import group_jobs  # the planner: 0.2 s
    from orchestrator.plan.preflight import PreflightError, check_zoo_names  # the planner: 0.2 s

    run = read(request)
    plan = run.plan
    # Zoo model names (torchvision/<arch>, timm/<name>) against the cached list of the
    # library's models: torch-free once cached (the first time per library version, seconds).
    try:
        check_zoo_names(plan)
    except PreflightError as exc:
        raise LaunchRefused(f"{request.spec}: {exc}") from None
    bad: dict[str, str] = {}
    codes: dict[str, str | None] = {}
    provenances: dict[str, dict[str, Any]] = {}
    done = done_on_disk(plan, bad, codes, provenances)
    relaunch = _in_store(plan, resolve_url(request.db, run.spec.db), done, codes, provenances)
    why = relaunch.refusal(request.mode) if relaunch is not None else None
    if why:
        raise LaunchRefused(why)
    jobs = group_jobs([lv for lid, lv in plan.trained.items() if lid not in done], {}, plan.snapshots)
    return DryRun(
        run,
        plan.counts(done),
        len(jobs),
        (plan.code or code_identity()).sources,
        {f"{plan.levels_dir}/{lid}": why for lid, why in bad.items()},
        other_code(plan, codes),
        other_inputs(plan, provenances),
        relaunch,
        relaunch_lines(relaunch, request.mode),
    )


def _in_store(
    plan: Any,
    url: str,
    done: set[str],
    codes: dict[str, str | None],
    provenances: dict[str, dict[str, Any]],
) -> Relaunch | None:
    """Adds to `done` (and `codes`, `provenances`) the levels finished in the store, when there is
    one already; returns how the plan differs from its sweep there (None: no such sweep)."""
    from db.engine import store_may_exist  # SQLAlchemy, 0.3 s

    if not url or not store_may_exist(url):
        return None
    from db.store import Store  # SQLAlchemy, 0.3 s
    from orchestrator.control.relaunch import compare  # the controller: SQLAlchemy (0.3 s)

    relaunch = None
    try:
        store = Store(url, migrate_schema=False)
        states = store.level_states(list(plan.levels))
        in_store = {lid for lid, st in states.items() if st.finished} - done
        codes.update(store.level_codes(sorted(in_store)))
        provenances.update(store.level_provenances(sorted(in_store)))
        done |= in_store
        relaunch = compare(store, plan)
        store.close()
    except Exception:  # noqa: BLE001 - an old or unreachable store: the disk still answers
        pass
    return relaunch
