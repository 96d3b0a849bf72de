"""Levels and their identity: what each pruning level computes, and the hash that names it.

Torch-free on purpose: the planner (orchestrator/) and the trainer both import this, so the id a
sweep plans is the id the trainer writes, and neither imports the other.

A level is one training of the network under one mask. It is fully described by
  - its parent level (None for a level that starts from the seed's initial weights),
  - its pruning step: the criterion, the density it prunes to, the criterion's own settings, and
    where the weights go afterwards (rewind), and
  - the training config (everything in the run's config but `method` and `prune`).
Its id is a hash of exactly that, so a level is the same computation in every sweep, method and
store that asks for it, and is trained once. `dense`, `imp`, `imp_wr`, `imp_lrr` and the random
methods share level 0 (dense training from init) whenever their training config and seed agree.

The trunk of an iterative method prunes a fixed `prune.rate` of the remaining weights per level, so
trunk level L keeps (1 - rate)^L whatever targets the grid holds. A target is served by the trunk
level that equals it, or (prune.landing: branch) by a branch: from the deepest trunk level still
denser than the target, one pruning step to exactly the target, rewound and trained as the method
does. With prune.landing: trunk, the first trunk level at or past the target serves it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import UserError
from core.method_lookup import get_method
from core.methods import CRITERIA, METHODS

# Keys of a run's config that do not change what a level trains: the method picks the pruning
# steps (described in each step), `prune` only feeds them, and `logging` only says where metrics
# go besides the store.
NOT_TRAINING = ("method", "prune", "logging")
# A trunk level serves a target whose density it equals to this precision (float noise: 0.8**2
# is 0.6400000000000001 while a user writes sparsity 0.36).
DENSITY_TOL = 1e-9
# Levels one run may plan; deeper trunks come from a tiny prune.rate or sparsity near 1.
MAX_LEVELS_PER_RUN = 100


class LineageError(UserError, ValueError):
    """A run whose levels cannot be planned (e.g. too many levels for its rate and targets)."""


def canonical(obj: Any) -> Any:
    """Normalise so hashes are stable under key order and float formatting (1.0 == 1, 5e-4 == 0.0005)."""
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    if isinstance(obj, float):
        return float(repr(obj))
    return obj


def canonical_json(obj: Any) -> str:
    return json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"))


def content_hash(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]


def run_id(config: dict[str, Any], code: list[str] | None = None) -> str:
    """A run (method x seed x axes) is what it computes: turning W&B on keeps its id. Under
    `reuse: same-code`, `code` (its levels' codes) is part of what it computes: a run whose code
    changed is another run, with other levels (its old ones stay recorded under the old run)."""
    body: dict[str, Any] = {"config": {k: v for k, v in identity_config(config).items() if k != "logging"}}
    if code:
        body["code"] = sorted(set(code))
    return content_hash(body)


def training_config(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in identity_config(config).items() if k not in NOT_TRAINING}


# Keys whose listed values compute exactly what a config without the key computes: such a key is
# hashed (and handed to the trainer) as if absent, so spelling out today's behaviour renames
# nothing. data.loader: ffcv (or null) is the loader cifar10/cifar100 always used; device is
# another computation (other batches) and stays in the id (docs/data.md).
DEFAULT_EQUIVALENT: dict[tuple[str, str], tuple[Any, ...]] = {("data", "loader"): (None, "ffcv")}


def identity_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` without the keys that hold a default-equivalent value (DEFAULT_EQUIVALENT)."""
    out = config
    for (section, key), same in DEFAULT_EQUIVALENT.items():
        sec = out.get(section)
        if isinstance(sec, dict) and key in sec and sec[key] in same:
            out = {**out, section: {k: v for k, v in sec.items() if k != key}}
    return out


def trunk_density(rate: float, depth: int) -> float:
    return round((1.0 - rate) ** depth, 12)


@dataclass(frozen=True)
class LevelSpec:
    """One level: what it computes (parent, step, train) and where it sits (root, depth, kind)."""

    level_id: str
    parent: str | None
    root: str  # the level whose init.pt (and rewind snapshots) it rewinds to
    depth: int  # 0 for a root; parent's depth + 1 otherwise
    kind: str  # dense | oneshot | trunk | branch | control: its role in the run that planned it
    density: float  # fraction of prunable weights kept
    step: dict[str, Any] | None  # the pruning step; None for dense training from init
    train: dict[str, Any] = field(repr=False)
    code: str | None = None  # reuse same-code: the code it runs (core/code.py), hashed too

    def description(self) -> dict[str, Any]:
        """LEVEL_DIR/level.json: everything a trainer needs to compute this level."""
        out = {
            "level_id": self.level_id,
            "parent": self.parent,
            "root": self.root,
            "depth": self.depth,
            "kind": self.kind,
            "density": self.density,
            "step": self.step,
            "train": self.train,
        }
        if self.code is not None:
            out["code"] = self.code
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LevelSpec:
        code = d.get("code")
        spec = cls(
            str(d["level_id"]),
            d.get("parent"),
            str(d["root"]),
            int(d["depth"]),
            str(d["kind"]),
            float(d["density"]),
            d.get("step"),
            dict(d["train"]),
            None if code is None else str(code),
        )
        stepped = round(float(spec.step["density"]), 12) if spec.step else 1.0
        hashed = level_id(spec.parent, spec.step, spec.train, code=spec.code)
        if hashed != spec.level_id or stepped != spec.density:
            raise LineageError(
                f"level {spec.level_id}: its description does not hash to its id (edited or damaged level.json)"
            )
        return spec

    @property
    def seed(self) -> int:
        return int(self.train.get("seed", 0))


def level_id(
    parent: str | None,
    step: dict[str, Any] | None,
    train: dict[str, Any],
    train_json: str | None = None,
    code: str | None = None,
) -> str:
    """content_hash({"parent", "step", "train"}), and "code" under reuse same-code (without it the
    id is what it always was). `train_json` (canonical_json(train)), when a caller hashes many
    levels of one training config, spares canonicalising it every time: the text is the same, so
    is the id (planning 10,000 grid points spent most of its time here)."""
    if train_json is None:
        body: dict[str, Any] = {"parent": parent, "step": step, "train": train}
        if code is not None:
            body["code"] = code
        return content_hash(body)
    # what json.dumps(sort_keys=True) writes for these keys ("code" sorts first)
    blob = (
        "" if code is None else f'"code":{canonical_json(code)},'
    ) + f'"parent":{canonical_json(parent)},"step":{canonical_json(step)},"train":{train_json}'
    return hashlib.sha256(("{" + blob + "}").encode()).hexdigest()[:16]


def model_of(train: dict[str, Any]) -> str | None:
    """The model a training config builds (model.name): which model family file its code counts."""
    model = train.get("model")
    return str(model["name"]) if isinstance(model, dict) and model.get("name") is not None else None


def data_of(train: dict[str, Any]) -> str | None:
    """The data set a training config reads (data.name): a lab's (`module:function`) counts its code."""
    data = train.get("data")
    return str(data["name"]) if isinstance(data, dict) and data.get("name") is not None else None


def code_free_id(level: LevelSpec, spec_of: Callable[[str], LevelSpec]) -> str:
    """The level's id with no code in it or in its ancestors': what `reuse: any` names it.
    Random draws (masks) are seeded by it, so a random mask is a function of the level's lineage
    and config alone: the same under either reuse policy and whatever version of the trainer
    draws it. `spec_of` gives an ancestor's spec from its id (its level.json)."""
    if level.code is None:
        return level.level_id
    parent = code_free_id(spec_of(level.parent), spec_of) if level.parent else None
    return level_id(parent, level.step, level.train)


def prune_step(method: str, prune: dict[str, Any], density: float) -> dict[str, Any]:
    """The pruning step of `method` to `density`: criterion, its settings, and the rewind rule."""
    info = get_method(method)
    crit = CRITERIA[info.criterion]
    step: dict[str, Any] = {
        "criterion": info.criterion,
        "density": round(float(density), 12),
        "keep_first_last_dense": bool(prune.get("keep_first_last_dense", False)),
    }
    ignore = sorted({str(p) for p in prune.get("layers_to_ignore") or ()})
    if ignore:  # in the step only when set, so every level planned before the option keeps its id
        step["layers_to_ignore"] = ignore
    for key in crit.params:
        step[key] = prune.get(key)
    if crit.plugin is not None:  # a lab's criterion: its function, scope and params (core/method_decl.py)
        step["plugin"] = crit.plugin
    step["rewind"] = info.rewind
    if info.rewind == "step":
        # Frankle et al. 2020 / open_lth: weights from step k, schedule and data order resumed at
        # k, a fresh optimizer; rewind_optimizer also restores step k's momentum (the old default).
        if prune.get("rewind_iterations") is not None:
            step["rewind_to"] = {"iterations": int(prune["rewind_iterations"])}
        else:
            step["rewind_to"] = {"epochs": float(prune.get("rewind_epochs", 0))}
        step["rewind_optimizer"] = bool(prune.get("rewind_optimizer", False))
    return step


def skipped_epochs(step: dict[str, Any] | None) -> int:
    """Epochs of the schedule a level does not train: an imp_wr level resumes the schedule at its
    rewind point k, so it records the epochs from k's epoch on (the one k falls in counts whole).
    With `rewind_iterations` the steps per epoch are the data's, unknown here: 0, an upper bound
    on what the level trains short of one epoch per full epoch that k spans."""
    if not step or step.get("rewind") != "step":
        return 0
    to = step.get("rewind_to") or {}
    if "epochs" in to:
        return max(0, math.floor(float(to["epochs"]) + 1e-9))
    return 0


def level_epochs(level: LevelSpec) -> int:
    """The epochs `level` trains and records: its schedule's, less those its rewind skips."""
    return max(0, int(level.train["schedule"]["epochs"]) - skipped_epochs(level.step))


class Coder(Protocol):
    """What plan_levels needs of core.code.CodeIdentity: the code of a level with a given step,
    model (its config's model.name) and data set (data.name)."""

    def for_step(self, step: dict[str, Any] | None, model: str | None, data: str | None = None) -> str: ...


def reinit_seed(seed: int) -> int:
    """The fresh initialisation of imp_reinit at run seed `seed`: one per seed (every target of
    a run is compared with the same fresh init), never another run's seed (seed + 1 would
    reuse the next run's initial weights)."""
    return int(hashlib.sha256(f"reinit {int(seed)}".encode()).hexdigest()[:15], 16)


def control_step(method: str, prune: dict[str, Any], density: float, seed: int) -> dict[str, Any]:
    """A control's step below the level serving a target: the criterion (reinit: keep its mask;
    random_layerwise: redraw it with its per-layer counts), the density (the served level's) and
    the rewind; reinit also names its fresh initialisation's seed."""
    info = get_method(method)
    step: dict[str, Any] = {
        "criterion": info.criterion,
        "density": round(float(density), 12),
        "keep_first_last_dense": bool(prune.get("keep_first_last_dense", False)),
    }
    ignore = sorted({str(p) for p in prune.get("layers_to_ignore") or ()})
    if ignore:
        step["layers_to_ignore"] = ignore
    step["rewind"] = info.rewind
    if info.rewind == "reinit":
        step["init_seed"] = reinit_seed(seed)
    return step


def _make(
    parent: LevelSpec | None,
    kind: str,
    density: float,
    step: dict[str, Any] | None,
    train: dict[str, Any],
    train_json: str | None = None,
    code: Coder | None = None,
) -> LevelSpec:
    c = code.for_step(step, model_of(train), data_of(train)) if code is not None else None
    lid = level_id(parent.level_id if parent else None, step, train, train_json, c)
    return LevelSpec(
        lid,
        parent.level_id if parent else None,
        parent.root if parent else lid,
        parent.depth + 1 if parent else 0,
        kind,
        round(float(density), 12),
        step,
        train,
        c,
    )


@dataclass
class RunLevels:
    """The levels one run (method x seed x axes) trains, and which level serves each target."""

    levels: list[LevelSpec]  # in training order: parents first
    serving: dict[float, LevelSpec]  # target sparsity -> level
    naive: dict[float, int]  # target -> levels a lone job for it would train
    # Levels whose mask is needed but whose training is not: the trunk levels of a method whose
    # criterion does not read the weights and that rewinds to init (random, random_erk,
    # random_balanced), where they serve no target. The trainer computes their masks on the way.
    mask_only: set[str] = field(default_factory=set)

    @property
    def trained(self) -> list[LevelSpec]:
        """The levels this run trains, in order."""
        return [lv for lv in self.levels if lv.level_id not in self.mask_only]

    @property
    def codes(self) -> list[str] | None:
        """The codes its levels run (reuse same-code), for its run id; None under reuse any."""
        codes = sorted({lv.code for lv in self.levels if lv.code is not None})
        return codes or None


# The criteria of the lottery-ticket controls: a level pruned by one of them is a control in every
# run that names it (no other method prunes with them).
CONTROL_CRITERIA = frozenset(m.criterion for m in METHODS.values() if m.schedule == "control")


def kind_in_run(level: LevelSpec, config: dict[str, Any]) -> str:
    """The role `level` plays in the run of `config` (what plan_levels names it there): dense,
    oneshot, control, or trunk or branch by the run's prune.rate. A level is shared by every run
    that computes it, and its role may differ between them: trunk level 1 at rate 0.2 (density
    0.8 from level 0) is, to a run at rate 0.5 with target 0.2, a branch from its level 0."""
    if level.step is None:
        return "dense"
    if level.parent is None:
        return "oneshot"
    if level.step.get("criterion") in CONTROL_CRITERIA:
        return "control"
    rate = float((config.get("prune") or {}).get("rate", 0.2))
    return "trunk" if abs(trunk_density(rate, level.depth) - level.density) <= DENSITY_TOL else "branch"


def level_number(kind: str, depth: int) -> int:
    """The pruning round a level shows as (`level` in query): its depth, but a control's is the
    level it controls, its parent: a control adds no pruning round (IMP's level 3 and its
    control are both at level 3, the control one level deeper in the tree)."""
    return depth - 1 if kind == "control" else depth


def plan_levels(
    method: str, config: dict[str, Any], sparsities: list[float], code: Coder | None = None
) -> RunLevels:
    """Levels of one run for its targets. Pure: the same inputs give the same ids anywhere. With
    `code` (reuse same-code: core.code.CodeIdentity), each level's code is part of its id."""
    info = get_method(method)
    train = training_config(config)
    tj = canonical_json(train)  # hashed into every level of the run: canonicalised once
    prune = config.get("prune", {})

    def make(parent: LevelSpec | None, kind: str, density: float, step: dict[str, Any] | None) -> LevelSpec:
        return _make(parent, kind, density, step, train, tj, code)

    dense = make(None, "dense", 1.0, None)
    targets = sorted({float(s) for s in sparsities})
    serving: dict[float, LevelSpec] = {}
    naive: dict[float, int] = {}
    if info.schedule == "dense":
        return RunLevels([dense], {s: dense for s in targets or [0.0]}, {s: 1 for s in targets or [0.0]})
    if info.schedule == "control":  # the base method's levels, then one control per target
        assert info.base is not None
        base = plan_levels(info.base, config, sparsities, code)
        levels_c, serving_c, naive_c = list(base.levels), {}, {}
        for s, lv in base.serving.items():
            if lv.step is None and info.rewind == "reinit":
                raise LineageError(
                    f"{method} at sparsity 0 would be {info.base}'s dense level, trained from the original "
                    f"initialisation, not a reinitialised network: drop sparsity 0 from a grid with {method} "
                    "(the dense method gives the reference)"
                )
            if lv.step is None:  # sparsity 0: every weight kept, none redrawn: the dense level itself
                serving_c[s], naive_c[s] = lv, base.naive[s]
                continue
            step = control_step(method, prune, lv.density, int(config.get("seed", 0)))
            c = make(lv, "control", lv.density, step)
            levels_c.append(c)
            serving_c[s], naive_c[s] = c, base.naive[s] + 1
        return RunLevels(levels_c, serving_c, naive_c, set(base.mask_only))
    levels: dict[str, LevelSpec] = {}
    if info.schedule == "oneshot":
        for s in targets:
            d = 1.0 - s
            lv = dense if d >= 1.0 - DENSITY_TOL else make(None, "oneshot", d, prune_step(method, prune, d))
            levels.setdefault(lv.level_id, lv)
            serving[s], naive[s] = lv, 1
        return RunLevels(list(levels.values()), serving, naive)

    rate = float(prune.get("rate", 0.2))
    landing = prune.get("landing", "branch")
    if not 0.0 < rate < 1.0:
        raise LineageError(f"prune.rate must lie in (0, 1), got {rate}")
    # Which trunk depth each target needs: the level itself, or the parent of its branch.
    plan: dict[float, tuple[int, bool]] = {}  # target -> (trunk depth, needs a branch)
    for s in targets:
        d = 1.0 - s
        if d >= 1.0 - DENSITY_TOL:
            plan[s] = (0, False)
            continue
        exact = math.log(d) / math.log(1.0 - rate)  # trunk depth at which density == d
        depth = max(0, math.floor(exact + 1e-9))
        if abs(trunk_density(rate, depth) - d) <= DENSITY_TOL:
            plan[s] = (depth, False)
        elif abs(trunk_density(rate, depth + 1) - d) <= DENSITY_TOL:
            plan[s] = (depth + 1, False)
        elif landing == "trunk":
            plan[s] = (depth + 1, False)  # first trunk level past the target
        else:
            plan[s] = (depth, True)  # deepest trunk level still denser than the target
    deepest = max((dep for dep, _ in plan.values()), default=0)
    n_branches = sum(1 for _, b in plan.values() if b)
    if deepest + 1 + n_branches > MAX_LEVELS_PER_RUN:
        worst = max(targets)
        raise LineageError(
            f"{method}: sparsity {worst:g} at prune.rate {rate:g} needs {deepest + 1 + n_branches} "
            f"levels; a run may plan at most {MAX_LEVELS_PER_RUN} (raise prune.rate)"
        )
    trunk = [dense]
    for depth in range(1, deepest + 1):
        dens = trunk_density(rate, depth)
        trunk.append(make(trunk[-1], "trunk", dens, prune_step(method, prune, dens)))
    branches_at: dict[int, list[LevelSpec]] = {}
    for s in targets:
        depth, branch = plan[s]
        if branch:
            lv = make(trunk[depth], "branch", 1.0 - s, prune_step(method, prune, 1.0 - s))
            branches_at.setdefault(depth, []).append(lv)
            serving[s] = lv
        else:
            serving[s] = trunk[depth]
        naive[s] = serving[s].depth + 1
    ordered: list[LevelSpec] = []
    for lv in trunk:  # a branch right after its trunk level: its result arrives early
        ordered.append(lv)
        ordered.extend(branches_at.get(lv.depth, []))
    mask_only: set[str] = set()
    if info.rewind == "init" and not CRITERIA[info.criterion].reads_weights:
        # A random mask reads only the mask before it, and training restarts from init: a trunk
        # level that serves no target would be trained for nothing. Its mask is computed (the
        # same draw, seeded by its id) by the job of the first level below it that trains.
        served = {lv.level_id for lv in serving.values()}
        mask_only = {lv.level_id for lv in trunk if lv.level_id not in served}
    return RunLevels(ordered, serving, naive, mask_only)
