"""`tp-sweep launch`: validate, plan, record and submit a spec (or run its Optuna search), and
`--dry-run`, which plans and counts without touching anything."""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

from cli.common import BadInput, console, err, json_text, report_bad_levels
from cli.progress import LaunchProgress, SearchProgress, wait_until_idle
from cli.render.launch import inputs_phrase, report_launch, reuse_phrases
from cli.render.search import print_search_plan, search_plan
from cli.render.tables import phrases
from cli.status import show_status
from cli.supervise import launch_supervised
from core.config import load_yaml
from orchestrator.operations.stores import open_store


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


def _done_without_side_effects(
    plan,
    url: str | None,
    bad: dict[str, str],
    codes: dict[str, str | None],
    provenances: dict[str, dict[str, Any]] | None = None,
) -> tuple[set[str], Any]:
    """Levels finished on disk, or in the store when it exists already (a dry run creates nothing),
    and how the plan differs from the sweep of its name there (None: no such sweep). Level
    folders that fail their checks go to `bad`; `codes` gets who trained each done level,
    `provenances` its provenance."""
    from orchestrator.control.controller import done_on_disk  # the store: SQLAlchemy, 0.3 s

    done = done_on_disk(plan, bad, codes, provenances)
    from db.engine import store_may_exist  # SQLAlchemy, 0.3 s

    relaunch = None
    if url and store_may_exist(url):
        from db.store import Store  # SQLAlchemy, 0.3 s
        from orchestrator.control.relaunch import compare  # the controller: SQLAlchemy (0.3 s)

        try:
            store = Store(url, migrate_schema=False)
            states = store.level_states(list(plan.levels))
            in_store = {lid for lid, st in states.items() if st.finished} - done
            codes.update(store.level_codes(sorted(in_store)))
            if provenances is not None:
                provenances.update(store.level_provenances(sorted(in_store)))
            done |= in_store
            relaunch = compare(store, plan)
            store.close()
        except Exception:  # noqa: BLE001 - an old or unreachable store: the disk still answers
            pass
    return done, relaunch


def _check_writable(folder: str) -> None:
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
        raise BadInput(f"output_dir {folder}: cannot write there ({exc.strerror or exc})") from None


def _relaunch_lines(relaunch, mode: str | None) -> list[str]:
    """What a launch says about the sweep of its name that it changes (nothing for a new sweep,
    or a relaunch of the same spec)."""
    lines = relaunch.lines(mode) if relaunch is not None else []
    return [f"sweep {relaunch.sweep} exists; this launch changes it:", *(f"  {x}" for x in lines)] if lines else []


def cmd_launch(a: argparse.Namespace) -> int:
    from core.code import code_identity  # code identity: hashes the trainer's files (0.1 s cold)
    from orchestrator.control.controller import (  # the controller: SQLAlchemy (0.3 s)
        launch,  # the store: SQLAlchemy, 0.3 s
        other_code,  # the store: SQLAlchemy, 0.3 s
        other_inputs,  # the store: SQLAlchemy, 0.3 s
    )
    from orchestrator.plan.grid import plan_sweep  # the planner (pydantic, YAML): 0.2 s
    from orchestrator.plan.jobs import BRANCHES_INLINE, group_jobs  # the planner (pydantic, YAML): 0.2 s
    from orchestrator.plan.spec import load_spec  # the planner (pydantic, YAML): 0.2 s

    try:
        spec = load_spec(a.spec)
        plan = plan_sweep(spec, reuse=a.reuse)
    except ValueError as exc:  # SpecError, and any ValueError of pydantic's or the planner's: bad input
        raise BadInput(str(exc)) from None
    kind = a.executor or spec.executor.kind
    if a.dry_run:
        # Zoo model names (torchvision/<arch>, timm/<name>) against the cached list of the
        # library's models: torch-free once cached (the first time per library version, seconds).
        from orchestrator.plan.preflight import (  # the planner (pydantic, YAML): 0.2 s
            PreflightError,
            check_zoo_names,
        )

        try:
            check_zoo_names(plan)
        except PreflightError as exc:
            raise BadInput(f"{a.spec}: {exc}") from None
        from db.engine import resolve_url  # SQLAlchemy, 0.3 s

        bad: dict[str, str] = {}
        codes: dict[str, str | None] = {}
        provenances: dict[str, dict[str, Any]] = {}
        done, relaunch = _done_without_side_effects(plan, resolve_url(a.db, spec.db), bad, codes, provenances)
        why = relaunch.refusal(a.mode) if relaunch is not None else None
        if why:
            raise BadInput(why)
        counts = plan.counts(done)
        jobs = group_jobs([lv for lid, lv in plan.trained.items() if lid not in done], {}, plan.snapshots)
        other = other_code(plan, codes)
        inputs = other_inputs(plan, provenances)
        info = {
            "sweep": spec.name,
            **counts,
            "jobs": len(jobs),
            "branches": BRANCHES_INLINE,
            "executor": kind,
            "bad_levels": {f"{plan.levels_dir}/{lid}": why for lid, why in bad.items()},
            "reuse": plan.reuse,
            "code": (plan.code or code_identity()).sources,
            "other_code": other,
            "other_inputs": inputs,
            "relaunch": relaunch.as_json() if relaunch is not None else None,
        }
        search = search_plan(spec, plan) if spec.search is not None else None
        if search is not None:
            info["search"] = search
        if a.format == "json":
            print(json_text(info))
        elif search is not None:
            print_search_plan(console, search, kind)
        else:
            for line in phrases(
                [  # wrapped between phrases, never inside one
                    f"sweep [bold]{spec.name}[/]: {counts['grid_points']} grid points, {counts['runs']} runs,",
                    f"{counts['level_trainings']} level trainings planned:",
                    f"{counts['levels_done']} already done,",
                    f"{counts['levels_to_train']} to train in {len(jobs)} jobs ({counts['epochs']} epochs).",
                    *(
                        [
                            f"{counts['mask_only_levels']} intermediate levels of random methods give their masks",
                            "without training (computed on the way).",
                        ]
                        if counts["mask_only_levels"]
                        else []
                    ),
                    "Naive, each grid point alone:",
                    f"{counts['naive_level_trainings']} level trainings ({counts['naive_epochs']} epochs).",
                    f"Branches: {BRANCHES_INLINE.split(': ', 1)[0]}:",
                    f"{BRANCHES_INLINE.split(': ', 1)[-1]}.",
                    *reuse_phrases(plan, counts["levels_done"], other),
                    f"Executor {kind}; nothing submitted.",
                ],
                console.width,
                sep=" ",
                indent="",
            ):
                console.print(line, highlight=False)
            if inputs_phrase(inputs):
                console.print(inputs_phrase(inputs), highlight=False, soft_wrap=True)
        if a.format != "json":
            for line in _relaunch_lines(relaunch, a.mode):
                console.print(line, highlight=False, soft_wrap=True)
        report_bad_levels({f"{plan.levels_dir}/{lid}": why for lid, why in bad.items()}, "not counted as done")
        return 1 if bad else 0
    # torch (seconds), which launch --dry-run never needs
    from orchestrator.plan.preflight import PreflightError, check_plan  # the planner (pydantic, YAML): 0.2 s

    try:
        check_plan(plan)
    except PreflightError as exc:
        raise BadInput(f"{a.spec}: {exc}") from None
    supervise = a.supervise or spec.supervisor is not None
    if supervise and kind != spec.executor.kind:
        raise BadInput(
            f"--supervise with --executor {kind}: the supervisor uses the spec's executor "
            f"({spec.executor.kind}); set executor.kind: {kind} in the spec"
        )
    _check_writable(plan.output_dir)
    store = open_store(a.db, spec.db)
    from orchestrator.control.relaunch import compare  # the controller: SQLAlchemy (0.3 s)

    relaunch = compare(store, plan)
    why = relaunch.refusal(a.mode) if relaunch is not None else None
    if why:
        raise BadInput(why)
    replace = a.mode == "replace"
    counts = plan.counts()
    console.print(
        f"sweep [bold]{spec.name}[/]: {counts['runs']} runs, {counts['level_trainings']} "
        f"level trainings -> {kind}, store {store.display_url}"
    )
    for line in _relaunch_lines(relaunch, a.mode):
        console.print(line, highlight=False, soft_wrap=True)
    if kind == "slurm":
        from slurm.limits import preemption_warning  # scontrol: a call or two

        warning = preemption_warning(spec.executor.partition, spec.executor.signal_delay_s, supervise)
        if warning:
            err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    spec_dict = _stored_spec_dict(a.spec, spec)
    if supervise:
        return launch_supervised(store, spec, spec_dict, kind, plan, replace)
    if spec.search is not None:
        if _supervised_elsewhere(store, spec.name):
            return 0
        return run_search(store, spec, spec_dict, kind, plan)
    if kind == "slurm":
        res = submit_and_report(store, plan, spec_dict, kind, replace)
        if a.wait:
            wait_until_idle(store, spec.name, console)
        code = show_status(store, spec.name, "table", a.wait)
        return 1 if res.bad else code
    progress = LaunchProgress(store, spec.name, console)
    with progress:
        res = launch(store, plan, spec_dict, kind, on_progress=progress.update, replace=replace)
    report_launch(res, plan)
    code = show_status(store, spec.name, "table", True)
    return 1 if res.bad else code


def _supervised_elsewhere(store, sweep: str) -> bool:
    """A search whose supervisor is alive is driven by it, not by this launch."""
    from db import supervision  # SQLAlchemy (0.3 s)

    row = supervision.lease(store, sweep)
    if row is not None and row.held:
        console.print(
            f"sweep {sweep}: its search is driven by its supervisor ({row.describe()}); "
            "`tp-sweep status` follows it"
        )
        return True
    return False


def submit_and_report(store, plan, spec_dict: dict[str, Any], kind: str, replace: bool = False) -> Any:
    """Record and submit to a scheduler (within its limits), and say what happened; the launch's
    result (a failed submission raises SubmitError: exit 1)."""
    from orchestrator.control.controller import launch  # the store: SQLAlchemy, 0.3 s

    res = launch(store, plan, spec_dict, kind, replace=replace)
    report_launch(res, plan)
    return res


def run_search(store, spec, spec_dict: dict[str, Any], kind: str, plan) -> int:
    """Drive the sweep's Optuna search to its end (it can be stopped and started again)."""
    from orchestrator.search.driver import SearchDriver  # Optuna (about a second)

    with SearchProgress(console, spec.name) as bar:
        res = SearchDriver(store, spec, spec_dict, kind, plan, on_progress=bar.update).run()
    console.print(
        "search done: " + ", ".join(f"{n} {s.lower()}" for s, n in res.told.items())
        if res.told
        else "search done: nothing left to try"
    )
    return show_status(store, spec.name, "table", True)
