"""Optimizers and learning-rate schedules (a pure function of the step, so resume needs no state)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

OPTIMIZERS: dict[str, Callable[[list[nn.Parameter], dict[str, Any]], torch.optim.Optimizer]] = {
    "sgd": lambda params, c: torch.optim.SGD(
        params,
        lr=c["lr"],
        momentum=c.get("momentum", 0.0),
        nesterov=c.get("nesterov", False),
        weight_decay=c.get("weight_decay", 0.0),
    ),
    "adamw": lambda params, c: torch.optim.AdamW(
        params, lr=c["lr"], betas=tuple(c.get("betas", (0.9, 0.999))), weight_decay=c.get("weight_decay", 0.01)
    ),
}


def build_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    name = cfg["name"]
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](list(model.parameters()), cfg)


def _onecycle(t: float, cfg: dict[str, Any]) -> float:
    # Triangular: linear up to peak_epoch, linear down to zero at the end (airbench, ffcv-cifar).
    peak = min(max(cfg.get("peak_epoch", 1) / cfg["epochs"], 1e-9), 1.0)
    return t / peak if t < peak else max(0.0, (1.0 - t) / max(1.0 - peak, 1e-9))


SCHEDULES = {"cosine", "multistep", "onecycle", "constant"}


def lr_factor(step: int, steps_per_epoch: int, cfg: dict[str, Any]) -> float:
    """Multiplier of the base lr at `step` (0-based) of a level, warm-up included."""
    name = cfg["name"]
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; known: {', '.join(sorted(SCHEDULES))}")
    total = max(cfg["epochs"] * steps_per_epoch, 1)
    epoch = step / steps_per_epoch
    warm = cfg.get("warmup_epochs", 0) * steps_per_epoch
    if warm and step < warm:
        return (step + 1) / warm
    t = min(step / total, 1.0)
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if name == "multistep":
        return cfg.get("gamma", 0.1) ** sum(1 for m in cfg.get("milestones", []) if epoch >= m)
    if name == "onecycle":
        return _onecycle(t, cfg)
    return 1.0


def set_lr(opt: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    lr = base_lr * factor
    for group in opt.param_groups:
        group["lr"] = lr
    return lr
