"""The pruner of each criterion: core/methods.py names the criteria (torch-free, for the planner);
this maps each name to the function that computes its mask, `pruner(model, mask, density, ctx)`."""

from __future__ import annotations

from collections.abc import Callable

from core.methods import get_criterion
from trainer.pruning.methods import (
    prune_dense,
    prune_magnitude,
    prune_random_balanced,
    prune_random_erk,
    prune_random_layerwise,
    prune_random_uniform,
    prune_reinit,
    prune_snip,
)
from trainer.pruning.synflow import prune_synflow

PRUNERS: dict[str, Callable] = {
    "dense": prune_dense,
    "magnitude": prune_magnitude,
    "snip": prune_snip,
    "synflow": prune_synflow,
    "random_erk": prune_random_erk,
    "random_balanced": prune_random_balanced,
    "random_uniform": prune_random_uniform,
    "reinit": prune_reinit,
    "random_layerwise": prune_random_layerwise,
}


def pruner_for(criterion: str) -> Callable:
    """The function that prunes by `criterion` (a ValueError naming the known ones if unknown)."""
    get_criterion(criterion)
    return PRUNERS[criterion]


def pruner_for_step(step: dict) -> Callable:
    """The function that prunes a level's step: a lab's criterion (a step with a `plugin` block:
    trainer/pruning/plugin.py) or a built-in one by name."""
    if isinstance(step.get("plugin"), dict):
        from trainer.pruning.plugin import prune_plugin  # only for a lab's criterion: it imports the lab's code

        return prune_plugin
    return pruner_for(str(step["criterion"]))
