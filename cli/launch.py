"""`tp-sweep launch`: validate, plan, record and submit a spec (or run its Optuna search), and
`--dry-run`, which plans and counts without touching anything."""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

from cli.common import BadInput, console, err, error, open_store
from cli.progress import LaunchProgress, SearchProgress, wait_until_idle
from cli.render.search import print_search_plan, search_plan
from cli.render.tables import phrases
from cli.status import show_status
from core.config import load_yaml


def _stored_spec_dict(path: str, spec) -> dict[str, Any]:
    """The spec as written, with a database password removed: what the store and the sweep record
    keep."""
    from db.engine import display_url  # SQLAlchemy, 0.3 s

    data = load_yaml(open(path).read())
    if data.get("db"):
        data["db"] = display_url(str(data["db"]))
    if isinstance(data.get("executor"), dict) and data["executor"].get("profile"):
        # The profile written out: the sweep reads the same wherever its spec is read again.
        data["executor"] = spec.executor.resolved()
    return data


def _done_without_side_effects(plan, url: str | None) -> set[str]:
    """Levels finished on disk, or in the store when it exists already (a dry run creates nothing)."""
    from orchestrator.control.controller import done_on_disk  # the store: SQLAlchemy, 0.3 s

    done = done_on_disk(plan)
    from db.engine import store_may_exist  # SQLAlchemy, 0.3 s

    if url and store_may_exist(url):
        from db.store import Store  # SQLAlchemy, 0.3 s

        try:
            store = Store(url, migrate_schema=False)
            states = store.level_states(list(plan.levels))
            store.close()
            done |= {lid for lid, st in states.items() if st.finished}
        except Exception:  # noqa: BLE001 - an old or unreachable store: the disk still answers
            pass
    return done


def _check_writable(folder: str) -> None:
    """The output folder must take files before anything is recorded or submitted."""
    import tempfile

    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tp-write-check-"):
            pass
    except OSError as exc:
        raise BadInput(f"output_dir {folder}: cannot write there ({exc.strerror or exc})") from None


def cmd_launch(a: argparse.Namespace) -> int:
    from orchestrator.control.controller import launch  # the store: SQLAlchemy, 0.3 s
    from orchestrator.control.submit import SubmitError  # the store: SQLAlchemy, 0.3 s
    from orchestrator.plan.grid import plan_sweep  # the planner (pydantic, YAML): 0.2 s
    from orchestrator.plan.jobs import BRANCHES_INLINE, group_jobs  # the planner (pydantic, YAML): 0.2 s
    from orchestrator.plan.spec import SpecError, load_spec  # the planner (pydantic, YAML): 0.2 s

    try:
        spec = load_spec(a.spec)
        plan = plan_sweep(spec)
    except (SpecError, ValueError) as exc:
        raise BadInput(str(exc)) from None
    kind = a.executor or spec.executor.kind
    if a.dry_run:
        from db.engine import resolve_url  # SQLAlchemy, 0.3 s

        done = _done_without_side_effects(plan, resolve_url(a.db, spec.db))
        counts = plan.counts(done)
        jobs = group_jobs([lv for lid, lv in plan.levels.items() if lid not in done], {}, plan.snapshots)
        info = {"sweep": spec.name, **counts, "jobs": len(jobs), "branches": BRANCHES_INLINE,
                "executor": kind}
        if spec.search is not None:
            info["search"] = search_plan(spec, plan)
        if a.format == "json":
            print(json.dumps(info))
        elif spec.search is not None:

            print_search_plan(console, info["search"], kind)
        else:
            for line in phrases([  # wrapped between phrases, never inside one
                    f"sweep [bold]{spec.name}[/]: {counts['grid_points']} grid points, {counts['runs']} runs,",
                    f"{counts['level_trainings']} level trainings planned:",
                    f"{counts['levels_done']} already done,",
                    f"{counts['levels_to_train']} to train in {len(jobs)} jobs ({counts['epochs']} epochs).",
                    "Naive, each grid point alone:",
                    f"{counts['naive_level_trainings']} level trainings ({counts['naive_epochs']} epochs).",
                    f"Branches: {BRANCHES_INLINE.split(': ', 1)[0]}:", f"{BRANCHES_INLINE.split(': ', 1)[-1]}.",
                    f"Executor {kind}; nothing submitted."],
                    console.width, sep=" ", indent=""):
                console.print(line, highlight=False)
        return 0
    # torch (seconds), which launch --dry-run never needs
    from orchestrator.plan.preflight import PreflightError, check_plan

    try:
        check_plan(plan)
    except PreflightError as exc:
        raise BadInput(f"{a.spec}: {exc}") from None
    _check_writable(plan.output_dir)
    store = open_store(a.db, spec.db)
    counts = plan.counts()
    console.print(f"sweep [bold]{spec.name}[/]: {counts['runs']} runs, {counts['level_trainings']} "
                  f"level trainings -> {kind}, store {store.display_url}")
    supervise = a.supervise or spec.supervisor is not None
    if kind == "slurm":
        from slurm.limits import preemption_warning  # scontrol: a call or two

        warning = preemption_warning(spec.executor.partition, spec.executor.signal_delay_s, supervise)
        if warning:
            err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    spec_dict = _stored_spec_dict(a.spec, spec)
    if supervise:
        from cli.supervise import launch_supervised

        return launch_supervised(store, spec, spec_dict, kind, plan)
    if spec.search is not None:
        if _supervised_elsewhere(store, spec.name):
            return 0
        return run_search(store, spec, spec_dict, kind, plan)
    if kind == "slurm":
        code = submit_and_report(store, plan, spec_dict, kind)
        if code:
            return code
        if a.wait:
            wait_until_idle(store, spec.name, console)
        return show_status(store, spec.name, "table", a.wait)
    progress = LaunchProgress(store, spec.name, console)
    try:
        with progress:
            res = launch(store, plan, spec_dict, kind, on_progress=progress.update)
    except SubmitError as exc:
        error(str(exc))
        return 1
    report(res)
    return show_status(store, spec.name, "table", True)


def _supervised_elsewhere(store, sweep: str) -> bool:
    """A search whose supervisor is alive is driven by it, not by this launch."""
    from db import supervision

    row = supervision.lease(store, sweep)
    if row is not None and row.held:
        console.print(f"sweep {sweep}: its search is driven by its supervisor ({row.describe()}); "
                      "`tp-sweep status` follows it")
        return True
    return False


def submit_and_report(store, plan, spec_dict: dict[str, Any], kind: str) -> int:
    """Record and submit to a scheduler (within its limits), and say what happened; 1 when the
    submission failed."""
    from orchestrator.control.controller import launch  # the store: SQLAlchemy, 0.3 s
    from orchestrator.control.submit import SubmitError  # the store: SQLAlchemy, 0.3 s

    try:
        res = launch(store, plan, spec_dict, kind)
    except SubmitError as exc:
        error(str(exc))
        return 1
    report(res)
    return 0


def report(res) -> None:
    if res.imported:
        console.print(f"found {res.imported} finished levels on disk that the store lacked: imported")
    room = {j: w for j, w in res.waiting.items() if w.startswith("waits for room")}
    for job, why in res.waiting.items():
        if job not in room:
            console.print(f"job {job} not submitted: {why}")
    if room:
        console.print(f"{len(room)} jobs not submitted yet: {next(iter(room.values()))}; "
                      "the sweep's supervisor (--supervise, or `tp-sweep supervise`) submits them as "
                      "room frees up, or `tp-sweep resume` later")
    if not res.submitted:
        left = ", ".join(f"{n} {s}" for s, n in res.skipped.items())
        if not room:
            console.print("nothing to submit: every level is done or being trained"
                          + (f" (jobs: {left})" if left else ""))
    else:
        console.print(f"submitted {len(res.submitted)} jobs"
                      + (f"; left alone: {res.skipped}" if res.skipped else ""))


def run_search(store, spec, spec_dict: dict[str, Any], kind: str, plan) -> int:
    """Drive the sweep's Optuna search to its end (it can be stopped and started again)."""
    from orchestrator.control.submit import SubmitError  # the store: SQLAlchemy, 0.3 s
    from orchestrator.search.driver import SearchDriver  # Optuna (about a second)

    with SearchProgress(console, spec.name) as bar:
        try:
            res = SearchDriver(store, spec, spec_dict, kind, plan, on_progress=bar.update).run()
        except SubmitError as exc:
            error(str(exc))
            return 1
    console.print("search done: " + ", ".join(f"{n} {s.lower()}" for s, n in res.told.items())
                  if res.told else "search done: nothing left to try")
    return show_status(store, spec.name, "table", True)
