"""The controller: record a plan, find what is done, group the rest into jobs, submit them, and
reconcile job states with the scheduler.

Data flows one way: spec -> plan -> store -> executor; the trainer then reports to the store and
the level folders, and `status` reads them back. The disk is the record and the store its index:
a level finished on disk is imported into the store wherever the controller meets it (launch,
status, resume), so a run is never COMPLETED without its results, and nothing is trained twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.atomic import file_lock, write_json_atomic
from core.code import code_identity, lab_packages, snapshot
from core.errors import NotFound
from core.inputs import data_fingerprint, input_changes, library_versions
from core.layout import BadRecord, LevelDir, read_sweep_record
from core.levels import canonical_json, data_of, model_of
from core.plugins import is_ref
from db.reader import ACTIVE_STATES, RESUMABLE_STATES
from db.schema import Job
from db.store import Store
from orchestrator.control.reconcile import (
    check_folders,
    reconcile_jobs,
    store_level_dirs,
    sweep_level_ids,
    sync_from_disk,
)
from orchestrator.control.submit import SubmitError, submit_jobs
from orchestrator.plan.grid import SweepPlan
from orchestrator.plan.jobs import group_jobs, runs_of_job
from orchestrator.plan.launch import Launch
from orchestrator.plan.spec import ExecutorSpec, SweepSpec, parse_spec
from slurm.executors import make_executor


@dataclass
class LaunchResult:
    sweep: str
    jobs_new: list[str] = field(default_factory=list)
    submitted: dict[str, str] = field(default_factory=dict)  # job_id -> scheduler id
    waiting: dict[str, str] = field(default_factory=dict)  # job_id -> why it was not submitted
    failed: dict[str, str] = field(default_factory=dict)  # job_id -> message (blocking executors)
    imported: int = 0  # levels found finished on disk
    bad: dict[str, str] = field(default_factory=dict)  # level id -> why its folder is not used
    bad_files: dict[str, str] = field(default_factory=dict)  # other files not used (path -> why)
    reused: int = 0  # levels of the plan already finished
    other_code: dict[str, int] = field(default_factory=dict)  # their code (or "unknown") -> levels,
    # for those not trained by this code
    other_inputs: dict[str, Any] = field(default_factory=dict)  # other libraries or data (other_inputs)
    skipped: dict[str, int] = field(default_factory=dict)  # job state -> jobs left alone
    limited: str | None = None  # the limit that kept jobs back


def stored_spec(store: Store, sweep: str) -> SweepSpec:
    row = store.get_sweep(sweep)
    if row is None:
        raise NotFound(f"no sweep named {sweep!r} in {store.display_url}")
    return parse_spec(row.spec, f"stored spec of {sweep}")


# ---- the disk ------------------------------------------------------------------------------
def write_plan_files(plan: SweepPlan, spec_dict: dict[str, Any], replace: bool = False) -> dict[str, str]:
    """LEVELS/<id>/level.json for every level, and OUTPUT/sweeps/<name>.json: the sweep as planned,
    from which `tp-sweep db import` rebuilds a lost store. Like the store, the record only grows:
    a relaunch with fewer grid points keeps the points recorded before (`replace`, launch
    --replace: the record holds exactly this plan). A record there that fails
    its checks (core/layout.py, check_sweep_record) is moved aside to <name>.json.bad and written
    anew from this plan; returns {its path: why} for the caller to report."""
    levels_dir = Path(plan.levels_dir)
    for lv in plan.levels.values():
        d = LevelDir(levels_dir / lv.level_id)
        if not d.description.exists():
            write_json_atomic(d.description, lv.description())
    path = Path(plan.output_dir) / "sweeps" / f"{plan.spec.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(f".{path.stem}.lock")):  # read-merge-write: one writer at a time
        return _merge_sweep_record(path, plan, spec_dict, replace)


def _merge_sweep_record(path: Path, plan: SweepPlan, spec_dict: dict[str, Any], replace: bool) -> dict[str, str]:
    problems: dict[str, str] = {}
    try:
        old = {} if replace else read_sweep_record(path)
    except FileNotFoundError:
        old = {}
    except (BadRecord, OSError) as exc:
        aside = path.with_name(path.name + ".bad")
        os.replace(path, aside)
        problems[str(path)] = f"{exc}; moved aside to {aside.name}, written anew from this launch's plan"
        old = {}
    runs = {r["run_id"]: r for r in old.get("runs", [])}
    runs.update(
        {
            r.run_id: {
                "run_id": r.run_id,
                "method": r.method,
                "seed": r.seed,
                "axes": r.axes,
                "config": r.config,
                "levels": r.levels,
            }
            for r in plan.runs
        }
    )
    points = {_point_key(p): p for p in old.get("points", [])}
    points.update(
        {
            _point_key(vars(p)): {
                "method": p.method,
                "sparsity": p.sparsity,
                "seed": p.seed,
                "axes": p.axes,
                "run_id": p.run_id,
                "level_id": p.level_id,
                "depth": p.depth,
                "naive_levels": p.naive_levels,
            }
            for p in plan.points
        }
    )
    named = {p["run_id"] for p in points.values()}  # a run no point names was superseded
    write_json_atomic(
        path,
        {
            "name": plan.spec.name,
            "spec": spec_dict,
            "levels_dir": plan.levels_dir,
            "runs": [r for r in runs.values() if r["run_id"] in named],
            "points": list(points.values()),
        },
    )
    return problems


def _point_key(p: dict[str, Any]) -> str:
    return json.dumps([p["method"], p["sparsity"], p["seed"], p["axes"]], sort_keys=True)


def other_code(plan: SweepPlan, codes: dict[str, str | None]) -> dict[str, int]:
    """Of the finished levels `codes` names (level -> the code that trained it), how many per
    code were trained by other code than this one ("unknown": before codes were recorded). Under
    reuse same-code none can be: the code is in their ids."""
    current = plan.code or code_identity()
    out: dict[str, int] = {}
    for lid, code in codes.items():
        lv = plan.levels.get(lid)
        if lv is not None and code != current.for_step(lv.step, model_of(lv.train), data_of(lv.train)):
            out[code or "unknown"] = out.get(code or "unknown", 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def other_inputs(plan: SweepPlan, provenances: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Of the finished levels `provenances` names, those trained with other versions of the
    libraries their model and data come from, or on other data files, than a job of this launch
    would use now (core/inputs.py): {"levels": n, "libraries": {name: {"now": v, "recorded":
    {version: levels}}}, "data": {key: levels}, "unrecorded": levels trained before inputs were
    recorded}; {} when none differs."""
    now_libs = library_versions()
    data_now: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {"levels": 0, "libraries": {}, "data": {}, "unrecorded": 0}
    for lid, prov in provenances.items():
        lv = plan.levels.get(lid)
        if lv is None:
            continue
        data = lv.train.get("data") or {}
        key = canonical_json(data)
        if key not in data_now:
            data_now[key] = data_fingerprint(data)
        changes = input_changes(prov or {}, lv.train, {"libraries": now_libs, "data": data_now[key]})
        if changes.get("unrecorded"):
            out["unrecorded"] += 1
            continue
        out["levels"] += bool(changes)
        for name, version in (changes.get("libraries") or {}).items():
            lib = out["libraries"].setdefault(name, {"now": now_libs.get(name), "recorded": {}})
            lib["recorded"][str(version)] = lib["recorded"].get(str(version), 0) + 1
        for k in changes.get("data") or ():
            out["data"][k] = out["data"].get(k, 0) + 1
    return out if out["levels"] else {}


def done_on_disk(
    plan: SweepPlan,
    bad: dict[str, str] | None = None,
    codes: dict[str, str | None] | None = None,
    provenances: dict[str, dict[str, Any]] | None = None,
) -> set[str]:
    """Levels of the plan finished on disk, each folder checked (LevelDir.inspect); the ones that
    must not be used go to `bad` with the reason, and count as not done. `codes` gets the code
    that trained each finished one, `provenances` its provenance."""
    done = set()
    for lid in plan.levels:
        d = LevelDir(Path(plan.levels_dir) / lid)
        if not (d.final.exists() or d.metrics.exists()):
            continue
        check = d.inspect()
        if check.problem is not None:
            if bad is not None:
                bad[lid] = check.problem
        elif check.result is not None:
            done.add(lid)
            if codes is not None:
                codes[lid] = (check.result.get("provenance") or {}).get("code")
            if provenances is not None:
                provenances[lid] = check.result.get("provenance") or {}
    return done


# ---- launch / resume -------------------------------------------------------------------------
def launch(
    store: Store, run: Launch, on_progress: Callable[[], None] | None = None, replace: bool = False
) -> LaunchResult:
    result, jobs, todo = prepare(store, run.plan, run.stored, replace)
    return _submit(store, run.spec, jobs, todo, run.kind, result, on_progress, run.job_env)


def prepare(
    store: Store, plan: SweepPlan, spec_dict: dict[str, Any], replace: bool = False
) -> tuple[LaunchResult, dict[str, Job], list[Job]]:
    """Everything of a launch but the submission: files, the store's records, levels finished on
    disk, and jobs for what is missing (`replace`: the sweep becomes exactly this plan). Returns
    the result so far, the jobs in charge of the plan's unfinished levels, and those to submit
    now (PLANNED or resumable)."""
    bad_files = write_plan_files(plan, spec_dict, replace)
    store.record_plan(plan, spec_dict, plan.levels_dir, replace)
    result = LaunchResult(plan.spec.name, bad_files=bad_files)
    code_dir = freeze_code(plan)  # what this launch's jobs import, requeues and resumes included
    result.imported = sync_from_disk(
        store, {lid: f"{plan.levels_dir}/{lid}" for lid in plan.levels}, bad=result.bad
    )
    _check_parents(store, plan, result.bad)
    jobs = store.jobs_of_levels(list(plan.levels))
    reconcile_jobs(store, list(jobs.values()), plan.spec.executor)
    with store.serialized() as s:
        states = store.level_states(list(plan.levels), s)
        # A bad folder is left as it is (no job would overwrite it): the user looks, moves it
        # aside, and the next launch trains the level afresh. Levels below it wait for it.
        to_train = [
            lv
            for lid, lv in plan.levels.items()
            if lid in states and not states[lid].finished and states[lid].job_id is None and lid not in result.bad
        ]
        owner = {lid: st.job_id for lid, st in states.items() if not st.finished and st.job_id}
        new_jobs = group_jobs(to_train, owner, plan.snapshots)
        files = {j.job_id: str(Path(plan.output_dir) / "jobs" / f"{j.job_id}.json") for j in new_jobs}
        for j in new_jobs:
            write_json_atomic(
                Path(files[j.job_id]),
                j.description(plan.levels_dir, runs_of_job(j, plan.runs, plan.spec.name), plan.reuse, code_dir),
            )
        store.create_jobs(s, new_jobs, plan.spec.name, files)
    result.jobs_new = [j.job_id for j in new_jobs]
    finished = [lid for lid, st in states.items() if st.finished]
    result.reused = len(finished)
    result.other_code = other_code(plan, store.level_codes(finished))
    result.other_inputs = other_inputs(plan, store.level_provenances(finished))
    jobs = store.jobs_of_levels(list(plan.levels))
    todo = [j for j in jobs.values() if j.state == "PLANNED" or j.state in RESUMABLE_STATES]
    return result, jobs, todo


def submit_prepared(
    store: Store, run: Launch, jobs: dict[str, Job], todo: list[Job], result: LaunchResult
) -> LaunchResult:
    """The submission half of a launch, after prepare()."""
    return _submit(store, run.spec, jobs, todo, run.kind, result, None, run.job_env)


class CodeChanged(SubmitError):
    """The checkout changed between planning and its snapshot: nothing was submitted."""


def freeze_code(plan: SweepPlan) -> str:
    """OUTPUT/_code/<hash>: the packages the jobs import, as they are now (core/code.py). Under
    reuse same-code the plan's level ids hold the code it was planned with: a snapshot that does
    not hold that very code (the checkout was edited between the two) is refused."""
    refs = plan_lab_refs(plan)
    code_dir = snapshot(plan.output_dir, labs=lab_packages(refs))
    if plan.code is not None:
        copied = code_identity(code_dir)
        if copied.files != plan.code.files or any(copied.lab(r) != plan.code.lab(r) for r in refs):
            raise CodeChanged(f"the code changed while this launch planned it (snapshot {code_dir}); launch again")
    return str(code_dir)


def plan_lab_refs(plan: SweepPlan) -> list[str]:
    """The lab code a plan's levels run (import paths: criteria, models, data sets)."""
    refs: set[str] = set()
    for lv in plan.levels.values():
        block = (lv.step or {}).get("plugin")
        if isinstance(block, dict):
            refs.add(str(block["fn"]))
        refs.update(r for r in (model_of(lv.train), data_of(lv.train)) if r is not None and is_ref(r))
    return sorted(refs)


def _check_parents(store: Store, plan: SweepPlan, bad: dict[str, str]) -> None:
    """The finished levels that levels still to train continue from: their folders are about to
    be read (weights, masks), so they are checked like any level reused from disk."""
    states = store.level_states(list(plan.levels))
    todo = [lv for lid, lv in plan.levels.items() if lid in states and not states[lid].finished]
    parents = {lv.parent for lv in todo if lv.parent and lv.parent in states and states[lv.parent].finished}
    bad.update(check_folders({lid: f"{plan.levels_dir}/{lid}" for lid in sorted(parents) if lid not in bad}))


def resume(
    store: Store,
    sweep: str,
    include_failed: bool = False,
    executor_kind: str | None = None,
    on_progress: Callable[[], None] | None = None,
    job_env: Mapping[str, str] | None = None,
) -> LaunchResult:
    """Submit the sweep's jobs that were stopped (preempted, timed out, lost; with
    `include_failed`, failed and cancelled ones too). `job_env`: variables their trainers get
    (resume --reuse: TP_REUSE)."""
    spec = stored_spec(store, sweep)
    level_ids = sweep_level_ids(store, sweep)
    result = LaunchResult(sweep)
    result.imported = sync_from_disk(store, store_level_dirs(store, level_ids), bad=result.bad)
    jobs = store.jobs_of_levels(level_ids)
    jobs = {j.job_id: j for j in reconcile_jobs(store, list(jobs.values()), spec.executor)}
    states = {"PLANNED", *RESUMABLE_STATES} | ({"FAILED", "CANCELLED"} if include_failed else set())
    todo = [j for j in jobs.values() if j.state in states]
    return _submit(store, spec, jobs, todo, executor_kind or spec.executor.kind, result, on_progress, job_env)


def _submit(
    store: Store,
    spec: SweepSpec,
    jobs: dict[str, Job],
    todo: list[Job],
    kind: str,
    result: LaunchResult,
    on_progress: Callable[[], None] | None,
    job_env: Mapping[str, str] | None = None,
) -> LaunchResult:
    submit_jobs(store, spec, todo, kind, result, on_progress, env=job_env)
    for j in store.jobs(list(jobs)).values():
        if j.job_id not in result.submitted and j.job_id not in result.waiting:
            result.skipped[j.state] = result.skipped.get(j.state, 0) + 1
    return result


def cancel(
    store: Store,
    jobs: list[Job],
    spec: ExecutorSpec | None = None,
    state: str = "CANCELLED",
    message: str = "cancelled by tp-sweep cancel",
) -> list[str]:
    """Record the jobs `state` (CANCELLED; PRUNED: a search's pruner stopped the trial), then stop
    them in the scheduler."""
    cancelled = []
    sched: dict[tuple[str, str], list[str]] = {}  # (executor, scheduler id) -> jobs cancelled in it
    for j in jobs:
        # Recorded first, so a trainer stopping on the scheduler's signal finds it cancelled.
        if not store.set_job_state(
            j.job_id,
            state,
            message=message,
            only_from=(*ACTIVE_STATES, "PLANNED", "PREEMPTED"),
        ):
            continue
        cancelled.append(j.job_id)
        # Read again: a supervisor (or launch) may have resubmitted it since `jobs` was read.
        fresh = store.jobs([j.job_id]).get(j.job_id) or j
        if fresh.sched_id and fresh.executor:
            sched.setdefault((fresh.executor, fresh.sched_id), []).append(j.job_id)
    # A packed scheduler job (executor.pack) also trains chains not cancelled here: it stays,
    # and stops the cancelled ones itself (slurm/job.py PackedJob, within PACK_LOOK_S).
    others = store.jobs_in_sched([sid for _, sid in sched], exclude=cancelled)
    for (kind, sched_id), _ in sched.items():
        if not others.get(sched_id):
            make_executor(kind, spec or ExecutorSpec(), Path(".")).cancel([sched_id])
    return cancelled
