"""Record a run started by `python -m trainer` (hydra: one run, or each job of a multirun under any
launcher) in the store, exactly as `tp-sweep launch` would record it, before it trains.

The run becomes a one-run sweep spec (its preset, each section of its config as a whole-section
override, its method, seed and targets as the grid), which goes through the orchestrator's own
path: parse_spec and plan_sweep (so its run id, levels and grid points are the ones `tp-sweep`
plans for that config), write_plan_files, Store.record_plan, the import of levels finished on
disk, and one job for the run's levels, created in a serialized transaction and keyed by the
same content hash the job file carries. The sweep is named after the multirun (or `+sweep=`), so
`tp-sweep status`, `query`, `plot` and `resume` treat it like any other.

Several jobs of one multirun record into the same sweep at once: every write is an upsert, the
job row is keyed by its content hash and created under the store's planning lock, and the sweep's
file OUTPUT/sweeps/<name>.json, which merges what earlier launches recorded, is rewritten under
an exclusive flock (controller.write_plan_files). The stored spec is the last job's (each job's
grid holds its own run); the store and the sweep file hold every run.

Imported only when a store is given: the trainer never imports orchestrator/ otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from core import config as trainer_config
from core.levels import content_hash
from db.reader import ACTIVE_STATES
from db.store import Store
from orchestrator.control.controller import write_plan_files
from orchestrator.control.reconcile import sync_from_disk
from orchestrator.control.submit import db_url_file
from orchestrator.plan.grid import SweepPlan, plan_sweep
from orchestrator.plan.jobs import JobPlan
from orchestrator.plan.spec import parse_spec

_NOT_OVERRIDES = ("method", "seed")


def run_spec(
    sweep: str,
    preset: str | None,  # hydra's config name; None (or one tp-sweep lacks): digits_mlp
    config: dict[str, Any],
    sparsities: list[float],
    output_dir: str,
    executor: str,
    reuse: str = "same-code",
) -> dict[str, Any]:
    """A sweep spec whose one run has exactly `config`: every section replaces the preset's whole
    (a mapping override does), so it resolves to `config` whatever the preset holds; a preset
    from a user's own config folder, unknown to tp-sweep, falls back to the default one."""
    if preset not in trainer_config.available_configs():
        preset = "digits_mlp"
    return {
        "name": sweep,
        "trainer": {"config": preset, "overrides": {k: v for k, v in config.items() if k not in _NOT_OVERRIDES}},
        "grid": {"method": [config["method"]], "sparsity": list(sparsities), "seed": [config["seed"]]},
        "executor": {"kind": executor},
        "output_dir": output_dir,
        "reuse": reuse,
    }


def plan_run(spec_dict: dict[str, Any], config: dict[str, Any], job_file: Path) -> SweepPlan:
    plan = plan_sweep(parse_spec(spec_dict, f"run of sweep {spec_dict['name']}"))
    (run,) = plan.runs
    job = json.loads(job_file.read_text())
    planned, theirs = job["levels"], next(iter(job.get("runs") or {"?": None}))
    # One planner for both: a difference here is a bug, never a reason to record something else.
    if run.run_id != theirs or run.levels != planned:
        raise RuntimeError(
            f"the store's plan of this run ({run.run_id}: {run.levels}) differs from "
            f"the trainer's ({theirs}: {planned})"
        )
    return plan


def record_run(
    url: str,
    sweep: str,
    preset: str | None,  # hydra's config name; None (or one tp-sweep lacks): digits_mlp
    config: dict[str, Any],
    sparsities: list[float],
    output_dir: str,
    job_file: Path,
    executor: str,
    sched_id: str,
    reuse: str = "same-code",
) -> str:
    """Record the run and its job (PENDING on `executor` as `sched_id`, which `tp-sweep status`
    polls); return the owner-only file that hands the store URL to the trainer."""
    spec_dict = run_spec(sweep, preset, config, sparsities, output_dir, executor, reuse)
    plan = plan_run(spec_dict, config, job_file)
    run = plan.runs[0]
    store = Store(url)
    try:
        # merges with what other jobs recorded, under a lock; a bad record is set aside, and said
        for path, why in write_plan_files(plan, spec_dict).items():
            print(f"[tp-sweep] {path}: {why}", file=sys.stderr, flush=True)
        store.record_plan(plan, spec_dict, plan.levels_dir)
        sync_from_disk(store, {lid: f"{plan.levels_dir}/{lid}" for lid in run.levels})
        snapshots = {lid: list(plan.snapshots[lid]) for lid in run.levels if lid in plan.snapshots}
        job = JobPlan(content_hash({"levels": run.levels}), list(run.levels), [], snapshots)
        if job.job_id != job_file.stem:
            raise RuntimeError(f"job file {job_file} is not job {job.job_id}")
        with store.serialized() as s:
            if not store.jobs([job.job_id]):
                store.create_jobs(s, [job], sweep, {job.job_id: str(job_file)})
        state = store.jobs([job.job_id])[job.job_id].state
        # Taken like a submission (compare-and-set); a job active elsewhere is left to its owner,
        # and the level locks keep the two from training a level twice.
        if state not in ACTIVE_STATES and store.claim(job.job_id, (state,)):
            store.submitted(job.job_id, state, sched_id, executor)
    finally:
        store.close()
    return db_url_file(url, output_dir)
