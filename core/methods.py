"""Pruning methods and criteria by name. Torch-free on purpose: the planner imports this to expand
a sweep into levels and must answer in about a second. The functions that prune are the
trainer's (trainer/pruning/registry.py maps each criterion here to one; a test checks both sides
name the same criteria).

A *criterion* is how one pruning step scores weights (a function from model, current mask,
density and a few batches to a new mask). A *method* is a criterion plus a schedule (one-shot at
initialisation, or iterative along a trunk of levels) and a rewind rule. Level ids hash the
criterion and its settings, never the method's name, so methods that compute the same level
(level 0 of every method that trains dense from init) share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Schedule = Literal["dense", "oneshot", "iterative", "control"]
Rewind = Literal["init", "step", "none", "reinit"]


@dataclass(frozen=True)
class Criterion:
    name: str
    needs_data: bool  # the pruner reads ctx.batches
    params: tuple[str, ...] = ()  # prune.* keys that change its result (hashed into level ids)
    reads_weights: bool = True  # False: the new mask depends on the old mask alone (random draws)
    # A lab's criterion (core/method_decl.py): what its pruning step holds as `plugin`, hashed into
    # its level ids: the function's import path, what it returns, its scope and its params.
    plugin: dict[str, Any] | None = None


@dataclass(frozen=True)
class MethodInfo:
    name: str
    schedule: Schedule  # dense: 1 level; oneshot: prune at init, train once; iterative: a trunk;
    # control: the base method's levels, then one level per target below the
    # level serving it (a lottery-ticket control)
    rewind: Rewind  # where weights go after pruning: init, the step-k snapshot, stay (LR
    # rewinding), or a fresh initialisation (reinit)
    criterion: str  # key of CRITERIA; "dense" for the unpruned baseline
    base: str | None = None  # control: the method whose levels it reuses

    @property
    def needs_data(self) -> bool:
        return CRITERIA[self.criterion].needs_data


CRITERIA: dict[str, Criterion] = {
    c.name: c
    for c in (
        Criterion("dense", False, reads_weights=False),
        Criterion("magnitude", False, ("scope",)),
        Criterion("snip", True, ("scope", "snip_batches")),
        # SynFlow's input is all ones: a batch only gives it the input shape.
        Criterion("synflow", False, ("synflow_rounds",)),
        Criterion("random_erk", False, ("erk_power_scale",), reads_weights=False),
        Criterion("random_balanced", False, reads_weights=False),
        Criterion("random_uniform", False, reads_weights=False),
        # The LTH controls, below the level that serves a target: its mask with a fresh init, or
        # a random mask with its per-layer weight counts.
        Criterion("reinit", False, reads_weights=False),
        Criterion("random_layerwise", False, reads_weights=False),
    )
}

METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo("dense", "dense", "init", "dense"),
        MethodInfo("imp", "iterative", "init", "magnitude"),
        MethodInfo("imp_wr", "iterative", "step", "magnitude"),
        MethodInfo("imp_lrr", "iterative", "none", "magnitude"),
        MethodInfo("snip", "oneshot", "init", "snip"),
        MethodInfo("synflow", "oneshot", "init", "synflow"),
        MethodInfo("er_erk", "oneshot", "init", "random_erk"),
        MethodInfo("er_balanced", "oneshot", "init", "random_balanced"),
        MethodInfo("random_erk", "iterative", "init", "random_erk"),
        MethodInfo("random_balanced", "iterative", "init", "random_balanced"),
        MethodInfo("random", "iterative", "init", "random_uniform"),
        # Frankle & Carbin 2019's control (open_lth's randomly_reinitialize): IMP's mask, trained
        # from a fresh random initialisation (another seed) instead of the original one.
        MethodInfo("imp_reinit", "control", "reinit", "reinit", base="imp"),
        # open_lth's randomly_prune (layerwise): a random mask keeping as many weights in each
        # layer as IMP's does, trained from the original initialisation.
        MethodInfo("imp_layerwise_random", "control", "init", "random_layerwise", base="imp"),
    )
}


BUILTIN_METHODS = frozenset(METHODS)
BUILTIN_CRITERIA = frozenset(CRITERIA)


def register(info: MethodInfo, criterion: Criterion | None = None) -> None:
    """Add a lab's method (core/method_decl.py), replacing an earlier lab method of its name (the
    last spec read wins); a built-in name is never replaced."""
    if info.name in BUILTIN_METHODS or (criterion is not None and criterion.name in BUILTIN_CRITERIA):
        raise ValueError(f"method {info.name!r}: a built-in method or criterion has that name; choose another")
    if criterion is not None:
        CRITERIA[criterion.name] = criterion
    METHODS[info.name] = info


def criterion_of(step: dict[str, Any]) -> Criterion:
    """The criterion of a pruning step (a level.json's): built in by name, or a lab's, described
    by the step itself (its `plugin` block), so the trainer needs no registry for it."""
    block = step.get("plugin")
    if isinstance(block, dict):
        return Criterion(
            str(step["criterion"]),
            bool(block.get("reads_data", False)),
            reads_weights=bool(block.get("reads_weights", True)),
            plugin=block,
        )
    return get_criterion(str(step["criterion"]))


def get_criterion(name: str) -> Criterion:
    try:
        return CRITERIA[name]
    except KeyError:
        raise ValueError(f"unknown pruning criterion {name!r}; known: {', '.join(CRITERIA)}") from None
