"""Plan a sweep: expand the grid into runs, the levels they need, and the level serving each point.

A run is one method x seed x axes configuration (its id: a hash of its resolved config); a level
is one training, identified by what it computes (core/levels.py). Runs share levels: every
method that trains dense from init shares level 0, and a later sweep that adds a target, a seed or
a method to a finished one adds only the levels that are new. Which levels are already done, and
which jobs train the rest, is decided against the store (orchestrator/control/controller.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import config as trainer_config
from core.code import CodeIdentity, code_identity
from core.levels import LevelSpec, LineageError, RunLevels, level_epochs, level_number, plan_levels, run_id
from core.method_lookup import get_method
from orchestrator.plan.spec import RESERVED_AXES, SpecError, SweepSpec


@dataclass(frozen=True)
class GridPoint:
    method: str
    sparsity: float  # the target; 0.0 for dense
    seed: int
    axes: dict[str, Any]  # every other grid axis, by its dotted key
    run_id: str
    level_id: str  # the level that serves it
    depth: int  # its level in the run: that level's depth, a control's parent's (level_number)
    naive_levels: int  # levels a job for this point alone would train


@dataclass
class RunPlan:
    run_id: str
    method: str
    seed: int
    axes: dict[str, Any]
    config: dict[str, Any]  # fully resolved trainer config (method and seed included)
    levels: list[str] = field(default_factory=list)  # ids, in training order
    points: list[GridPoint] = field(default_factory=list)
    # each level's role in this run (dense, oneshot, trunk, branch, control): a level shared by
    # runs may be a trunk level of one and a branch of another
    kinds: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, run_id: str, method: str, seed: int, axes: dict[str, Any], config: dict[str, Any], lineage: RunLevels
    ) -> RunPlan:
        """The run that trains `lineage`'s levels (its grid points are added with `point`)."""
        trained = lineage.trained
        return cls(
            run_id,
            method,
            seed,
            axes,
            config,
            [lv.level_id for lv in trained],
            kinds={lv.level_id: lv.kind for lv in trained},
        )

    def point(self, sparsity: float, level: LevelSpec, naive_levels: int) -> GridPoint:
        """The grid point of this run at target `sparsity`, served by `level`."""
        return GridPoint(
            self.method,
            sparsity,
            self.seed,
            self.axes,
            self.run_id,
            level.level_id,
            level_number(level.kind, level.depth),
            naive_levels,
        )

    @property
    def sparsities(self) -> list[float]:
        return [p.sparsity for p in self.points]


@dataclass
class SweepPlan:
    spec: SweepSpec
    runs: list[RunPlan]
    points: list[GridPoint]
    levels: dict[str, LevelSpec]  # every level any run needs, parents before children
    # imp_wr rewind points each root level must write: root id -> [{"iterations": k} | {"epochs": e}]
    snapshots: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reuse: str = "same-code"  # the policy it was planned under
    code: CodeIdentity | None = None  # the code it was planned for (reuse same-code; None: any)
    # Levels in `levels` that no run trains (their masks are computed by the jobs below them:
    # core.levels.RunLevels.mask_only); never recorded in the store or given a job.
    mask_only: set[str] = field(default_factory=set)
    # The spec's folder as it resolved when the plan was made (against the working directory
    # then): a later chdir, or a process that plans again elsewhere, does not move it.
    output_dir: str = field(init=False)

    def __post_init__(self) -> None:
        self.output_dir = str(Path(self.spec.output_dir).expanduser().resolve())

    @property
    def trained(self) -> dict[str, LevelSpec]:
        """The levels the sweep trains (every level but the mask-only ones), parents first."""
        return {lid: lv for lid, lv in self.levels.items() if lid not in self.mask_only}

    @property
    def levels_dir(self) -> str:
        return str(Path(self.output_dir) / "levels")

    def epochs_of(self, level_id: str) -> int:
        """What the level trains: an imp_wr level starts at its rewind point (level_epochs)."""
        return level_epochs(self.levels[level_id])

    def naive_epochs_of(self, p: GridPoint) -> int:
        """Epochs a lone job for `p` trains: its serving level's chain from level 0, each level
        as it trains (the root in full, the others as the serving level does)."""
        lv = self.levels[p.level_id]
        if p.naive_levels <= 1 or lv.parent is None:
            return p.naive_levels * self.epochs_of(p.level_id)
        root = self.levels.get(lv.root)
        first = self.epochs_of(lv.root) if root is not None else int(lv.train["schedule"]["epochs"])
        return first + (p.naive_levels - 1) * self.epochs_of(p.level_id)

    def counts(self, done: set[str] | None = None) -> dict[str, int]:
        """Level trainings this plan needs, those already done, and what one job per grid point,
        each training all its own levels, would cost."""
        trained = self.trained
        done = (done or set()) & set(trained)
        todo = [lid for lid in trained if lid not in done]
        return {
            "grid_points": len(self.points),
            "runs": len(self.runs),
            "level_trainings": len(trained),
            "mask_only_levels": len(self.mask_only),
            "levels_done": len(done),
            "levels_to_train": len(todo),
            "naive_level_trainings": sum(p.naive_levels for p in self.points),
            "epochs": sum(self.epochs_of(lid) for lid in todo),
            "naive_epochs": sum(self.naive_epochs_of(p) for p in self.points),
        }


run_id_for = run_id  # the planner's name for it


def _axis_values(config: dict[str, Any], axes: dict[str, Any]) -> dict[str, Any]:
    """A run's axes as status and query show them: a dotted key's value in the resolved config,
    a group choice's option name (`model: lenet`, not the whole model section)."""
    return {
        k: v if trainer_config.is_group_choice(k, v) else trainer_config.get_dotted(config, k)
        for k, v in axes.items()
    }


def plan_sweep(spec: SweepSpec, reuse: str | None = None, code: CodeIdentity | None = None) -> SweepPlan:
    """The sweep's runs, levels and grid points under `reuse` (default: the spec's). Under
    same-code, every level id holds the code it runs: `code`, or the code installed here
    (core.code: what a launch snapshots for its jobs)."""
    reuse = reuse or spec.reuse
    if reuse == "same-code" and code is None:
        code = code_identity()
    elif reuse != "same-code":
        code = None
    extra_axes = [k for k in spec.grid if k not in RESERVED_AXES]
    seeds = spec.grid.get("seed", [0])
    targets = [float(s) for s in spec.grid.get("sparsity", [])]
    runs: dict[str, RunPlan] = {}
    levels: dict[str, LevelSpec] = {}
    snapshots: dict[str, list[dict[str, Any]]] = {}
    points: list[GridPoint] = []
    mask_only: set[str] = set()  # of some run
    trained: set[str] = set()  # by some run (level 0 of random methods may be both)
    combos = itertools.product(*(spec.grid[k] for k in extra_axes)) if extra_axes else [()]
    for values in combos:
        axes = dict(zip(extra_axes, values))
        for method, seed in itertools.product(spec.grid["method"], seeds):
            overrides = {**spec.trainer.overrides, **axes, "method": method, "seed": int(seed)}
            config = trainer_config.resolve(spec.trainer.config, overrides)
            dense = get_method(method).schedule == "dense"
            try:
                lineage = plan_levels(method, config, [0.0] if dense else targets, code)
            except LineageError as exc:
                raise SpecError(f"grid: {exc}") from None  # bad input, exit 2
            run_id = run_id_for(config, lineage.codes)
            if run_id in runs:
                continue
            run = RunPlan.of(run_id, method, int(seed), _axis_values(config, axes), config, lineage)
            mask_only |= lineage.mask_only
            trained |= {lv.level_id for lv in lineage.trained}
            for lv in lineage.levels:
                levels.setdefault(lv.level_id, lv)
                if lv.step and lv.step.get("rewind") == "step":
                    wanted = snapshots.setdefault(lv.root, [])
                    if lv.step["rewind_to"] not in wanted:
                        wanted.append(lv.step["rewind_to"])
            for s, lv in sorted(lineage.serving.items()):
                run.points.append(run.point(s, lv, lineage.naive[s]))
            runs[run_id] = run
            points.extend(run.points)
    return SweepPlan(spec, list(runs.values()), points, levels, snapshots, reuse, code, mask_only - trained)
