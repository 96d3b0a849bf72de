"""Group the levels that still need training into jobs: chains a scheduler can run.

The levels form trees (each level has one parent). A job follows a chain down a tree; where the
chain forks into several trunks (level 0, which imp, imp_wr, imp_lrr and random all continue
from), the job ends and each trunk becomes a job of its own that waits for it through the
scheduler (a Slurm dependency, or ordering in the local executor), so the methods that share
level 0 run in parallel once it is done and never hold a GPU while they wait. Branches are leaves
(nothing continues from them): they stay in the job of the level they branch from, right after it,
so a branch result arrives as early as its trunk allows.

A job's id is a hash of its levels, so two launches that plan the same work plan the same job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.layout import job_description
from core.levels import LevelSpec, content_hash


@dataclass
class JobPlan:
    job_id: str
    levels: list[str]
    depends_on: list[str] = field(default_factory=list)  # job ids
    snapshots: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # root -> rewind points

    def description(
        self, levels_dir: str, runs: dict[str, Any] | None = None, reuse: str = "any", code_dir: str | None = None
    ) -> dict[str, Any]:
        return job_description(self.job_id, levels_dir, self.levels, self.snapshots, runs or {}, reuse, code_dir)


def runs_of_job(job: JobPlan, runs: list[Any], sweep: str) -> dict[str, Any]:
    """The runs (orchestrator.plan.grid.RunPlan) that need any of `job`'s levels, as the trainer's
    recorders see them: who they are, and which of their targets each level serves."""
    mine = set(job.levels)
    out: dict[str, Any] = {}
    for r in runs:
        if mine.isdisjoint(r.levels):
            continue
        serves: dict[str, list[float]] = {}
        for p in r.points:
            serves.setdefault(p.level_id, []).append(p.sparsity)
        out[r.run_id] = {
            "sweep": sweep,
            "method": r.method,
            "seed": r.seed,
            "axes": r.axes,
            "levels": r.levels,
            "serves": serves,
            "logging": r.config.get("logging") or {},
            "config": r.config,
        }
    return out


BRANCHES_INLINE = "inline: a branch trains in its trunk level's job, right after that level"


def group_jobs(
    to_train: list[LevelSpec], owner: dict[str, str], snapshots: dict[str, list[dict[str, Any]]]
) -> list[JobPlan]:
    """Jobs for `to_train` (parents before children). `owner` maps levels that other jobs are in
    charge of to those jobs: a chain whose parent is there depends on that job."""
    todo = {lv.level_id for lv in to_train}
    children: dict[str, list[str]] = {}
    for lv in to_train:
        if lv.parent in todo:
            children.setdefault(lv.parent, []).append(lv.level_id)

    kinds = {lv.level_id: lv.kind for lv in to_train}

    job_of: dict[str, list[str]] = {}  # level id -> its job's level list (shared object)
    deps_of: dict[int, list[tuple[str, str]]] = {}  # id(level list) -> (level|job, id) it waits for
    chains: list[list[str]] = []
    for lv in to_train:
        parent = lv.parent
        if parent in todo:
            forks = [c for c in children[parent] if kinds[c] != "branch"]
            if lv.kind == "branch" or len(forks) == 1:
                job_of[lv.level_id] = job_of[parent]
                job_of[parent].append(lv.level_id)
                continue
            chain = [lv.level_id]
            deps_of[id(chain)] = [("level", parent)]
        else:
            chain = [lv.level_id]
            deps_of[id(chain)] = [("job", owner[parent])] if parent in owner else []
        job_of[lv.level_id] = chain
        chains.append(chain)

    ids = {id(c): content_hash({"levels": c}) for c in chains}
    jobs = []
    for chain in chains:
        deps = []
        for kind, ref in deps_of[id(chain)]:
            dep = ids[id(job_of[ref])] if kind == "level" else ref
            if dep not in deps:
                deps.append(dep)
        snaps = {lid: list(snapshots[lid]) for lid in chain if lid in snapshots}
        jobs.append(JobPlan(ids[id(chain)], list(chain), deps, snaps))
    return jobs
