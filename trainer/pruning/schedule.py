"""Level schedules: which density each pruning level trains at. Torch-free (the planner uses it).

An iterative run trains dense at level 0, then prunes at most `rate` of the remaining weights per
level and must land exactly on every target sparsity its grid asks for. Between two consecutive
targets we take the fewest equal geometric steps that respect the rate, so no level is a sliver
(a greedy 0.8^k walk would overshoot a target and then need a tiny corrective level).
"""
from __future__ import annotations

import math

from trainer.pruning.registry import MethodInfo


class ScheduleError(ValueError):
    pass


def level_densities(method: MethodInfo, sparsities: list[float], rate: float) -> list[float]:
    """Densities (fraction of prunable weights kept) of each level, in training order."""
    if method.schedule == "dense":
        return [1.0]
    targets = sorted({round(1.0 - float(s), 12) for s in sparsities}, reverse=True)
    if not targets:
        raise ScheduleError(f"method {method.name!r} needs at least one target sparsity")
    if any(not 0.0 < d <= 1.0 for d in targets):
        raise ScheduleError(f"target sparsities must lie in [0, 1): {sparsities}")
    if method.schedule == "oneshot":
        if len(targets) != 1:
            raise ScheduleError(f"one-shot method {method.name!r} takes one sparsity per run")
        return targets
    if not 0.0 < rate < 1.0:
        raise ScheduleError(f"prune.rate must lie in (0, 1), got {rate}")
    densities = [1.0]
    for target in targets:
        current = densities[-1]
        if target >= current:
            continue  # sparsity 0 target: the dense level already is it
        steps = math.ceil(math.log(target / current) / math.log(1.0 - rate) - 1e-9)
        factor = (target / current) ** (1.0 / steps)
        densities.extend(current * factor**k for k in range(1, steps))
        densities.append(target)
    return densities


def target_levels(densities: list[float], sparsities: list[float]) -> dict[float, int]:
    """Level index at which each target sparsity is reached."""
    out = {}
    for s in sparsities:
        d = round(1.0 - float(s), 12)
        matches = [i for i, x in enumerate(densities) if abs(x - d) < 1e-9]
        if not matches:
            raise ScheduleError(f"sparsity {s} is not visited by the schedule {densities}")
        out[float(s)] = matches[0]
    return out
