"""Plan a sweep: expand the grid into runs with content-addressed ids and their pruning levels.

Grid points that differ only in target sparsity share one iterative trajectory: an IMP run visits
0.5, 0.8 and 0.9 on its way down, so one run (one job) answers all three, where a naive sweep
would train each point's levels again from scratch. One-shot methods get a run per sparsity;
`dense` ignores the sparsity axis.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from orchestrator.spec import RESERVED_AXES, SweepSpec
from trainer import config as trainer_config
from trainer.pruning.registry import get_method
from trainer.pruning.schedule import level_densities, target_levels


@dataclass(frozen=True)
class GridPoint:
    method: str
    sparsity: float  # the target; 0.0 for dense
    seed: int
    axes: dict[str, Any]  # every other grid axis, by its dotted key
    run_id: str = ""
    level: int = 0  # the level of its run at which the target is reached


@dataclass
class RunPlan:
    run_id: str
    method: str
    seed: int
    axes: dict[str, Any]
    sparsities: list[float]
    densities: list[float]  # one per level
    config: dict[str, Any]  # fully resolved trainer config (method and seed included)
    points: list[GridPoint] = field(default_factory=list)

    @property
    def levels_total(self) -> int:
        return len(self.densities)

    @property
    def epochs_per_level(self) -> int:
        return int(self.config["schedule"]["epochs"])

    def description(self) -> dict[str, Any]:
        """What the job needs besides its checkpoints: written to RUN_DIR/run.json."""
        return {
            "run_id": self.run_id,
            "method": self.method,
            "seed": self.seed,
            "sparsities": self.sparsities,
            "densities": self.densities,
            "config": self.config,
        }


@dataclass
class SweepPlan:
    spec: SweepSpec
    runs: list[RunPlan]
    points: list[GridPoint]

    def counts(self) -> dict[str, int]:
        """Work this plan does against one-job-per-grid-point, each training all its own levels."""
        level_trainings = sum(r.levels_total for r in self.runs)
        epochs = sum(r.levels_total * r.epochs_per_level for r in self.runs)
        by_id = {r.run_id: r for r in self.runs}
        naive_levels = sum(p.level + 1 for p in self.points)
        naive_epochs = sum((p.level + 1) * by_id[p.run_id].epochs_per_level for p in self.points)
        return {
            "grid_points": len(self.points),
            "runs": len(self.runs),
            "level_trainings": level_trainings,
            "naive_level_trainings": naive_levels,
            "epochs": epochs,
            "naive_epochs": naive_epochs,
        }


def _canonical(obj: Any) -> Any:
    """Normalise so the hash is stable under key order and float formatting (1.0 == 1, 5e-4 == 0.0005)."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    if isinstance(obj, float):
        return float(repr(obj))
    return obj


def run_id_for(config: dict[str, Any], sparsities: list[float]) -> str:
    blob = json.dumps(_canonical({"config": config, "sparsities": sparsities}),
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    extra_axes = [k for k in spec.grid if k not in RESERVED_AXES]
    seeds = spec.grid.get("seed", [0])
    # Group grid points by everything but the sparsity: each group is one trajectory.
    groups: dict[str, tuple[dict[str, Any], list[float]]] = {}
    for values in itertools.product(*(spec.grid[k] for k in extra_axes)) if extra_axes else [()]:
        axes = dict(zip(extra_axes, values))
        for method, seed in itertools.product(spec.grid["method"], seeds):
            info = get_method(method)
            sparsities = [0.0] if info.schedule == "dense" else [float(s) for s in spec.grid["sparsity"]]
            overrides = {**spec.trainer.overrides, **axes, "method": method, "seed": int(seed)}
            config = trainer_config.resolve(spec.trainer.config, overrides)
            if info.schedule == "oneshot":
                for s in sparsities:
                    groups.setdefault(run_id_for(config, [s]), (config, []))[1].append(s)
            else:
                key = run_id_for(config, sorted(set(sparsities)))
                groups.setdefault(key, (config, []))[1].extend(sparsities)

    runs: list[RunPlan] = []
    points: list[GridPoint] = []
    for run_id, (config, sparsities) in groups.items():
        sparsities = sorted(set(sparsities))
        info = get_method(config["method"])
        densities = level_densities(info, sparsities, float(config["prune"]["rate"]))
        at_level = target_levels(densities, sparsities) if info.schedule != "dense" else {0.0: 0}
        axes = {k: trainer_config.get_dotted(config, k) for k in extra_axes}
        run = RunPlan(run_id, config["method"], int(config["seed"]), axes, sparsities, densities, config)
        run.points = [GridPoint(run.method, s, run.seed, axes, run_id, at_level[s]) for s in sparsities]
        runs.append(run)
        points.extend(run.points)
    return SweepPlan(spec, runs, points)
