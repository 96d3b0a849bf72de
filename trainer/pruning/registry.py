"""Pruning methods by name: schedule, rewind point, data needs and a lazy pointer to the pruner.

Torch-free on purpose: the orchestrator's planner imports this to expand a sweep into levels and
must answer in about a second, so pruners are referenced as "module:function" strings and only
imported by `MethodInfo.load()` inside the trainer.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Literal

Schedule = Literal["dense", "oneshot", "iterative"]
Rewind = Literal["init", "step", "none"]


@dataclass(frozen=True)
class MethodInfo:
    name: str
    schedule: Schedule  # dense: 1 level; oneshot: prune at init, train once; iterative: prune/rewind/retrain
    rewind: Rewind  # where weights go after pruning: init, the step-k snapshot, or stay (LR rewinding)
    needs_data: bool  # the pruner needs ctx.batches
    pruner: str  # "module:function", imported lazily

    def load(self) -> Callable:
        module_name, _, func_name = self.pruner.partition(":")
        return getattr(importlib.import_module(module_name), func_name)


_M = "trainer.pruning.methods"

METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo("dense", "dense", "init", False, f"{_M}:prune_dense"),
        MethodInfo("imp", "iterative", "init", False, f"{_M}:prune_magnitude"),
        MethodInfo("imp_wr", "iterative", "step", False, f"{_M}:prune_magnitude"),
        MethodInfo("imp_lrr", "iterative", "none", False, f"{_M}:prune_magnitude"),
        MethodInfo("snip", "oneshot", "init", True, f"{_M}:prune_snip"),
        MethodInfo("synflow", "oneshot", "init", False, "trainer.pruning.synflow:prune_synflow"),
        MethodInfo("er_erk", "oneshot", "init", False, f"{_M}:prune_random_erk"),
        MethodInfo("er_balanced", "oneshot", "init", False, f"{_M}:prune_random_balanced"),
        MethodInfo("random_erk", "iterative", "init", False, f"{_M}:prune_random_erk"),
        MethodInfo("random_balanced", "iterative", "init", False, f"{_M}:prune_random_balanced"),
        MethodInfo("random", "iterative", "init", False, f"{_M}:prune_random_uniform"),
    )
}


def get_method(name: str) -> MethodInfo:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown pruning method {name!r}; known: {', '.join(METHODS)}") from None
