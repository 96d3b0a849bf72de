"""Layer-wise density distributions (ERK, balanced, uniform) and exact integer keep counts.

All functions take `shapes = {layer name: weight shape}` and an overall target density, and
return per-layer densities whose weighted sum is the target exactly (in real numbers);
`counts_for` then turns them into integers that sum exactly to the global keep count.
Torch-free: plain Python arithmetic on sizes.
"""

from __future__ import annotations

import math


def _sizes(shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    return {n: math.prod(s) for n, s in shapes.items()}


def _check(density: float) -> None:
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")


def erk_densities(
    shapes: dict[str, tuple[int, ...]], density: float, power_scale: float = 1.0
) -> dict[str, float]:
    """Erdős–Rényi-Kernel (Evci et al. 2020): density_l = eps * ((sum of dims)/(prod of dims))^power.

    eps is solved so the kept total equals density * total exactly. A layer whose density would
    exceed 1 is kept dense and eps is re-solved over the others. Marking a layer dense frees
    budget (it takes n_l < eps*r_l*n_l), so eps only grows and every layer that exceeded 1 still
    does: capping all offenders at once per pass is therefore the same as capping one at a time.
    """
    _check(density)
    sizes = _sizes(shapes)
    raw = {n: (sum(s) / sizes[n]) ** power_scale for n, s in shapes.items()}
    target = density * sum(sizes.values())
    dense: set[str] = set()
    while True:
        rest = [n for n in shapes if n not in dense]
        budget = target - sum(sizes[n] for n in dense)
        weight = sum(raw[n] * sizes[n] for n in rest)
        if not rest or weight == 0:
            break
        eps = budget / weight
        over = {n for n in rest if eps * raw[n] > 1.0}
        if not over:
            break
        dense |= over
    return {n: 1.0 if n in dense else min(1.0, max(0.0, eps * raw[n])) for n in shapes}


def balanced_densities(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Balanced (Gadhikar et al. 2023): every layer keeps the same number k of weights.

    Layers smaller than k are kept dense and the remainder is shared by the others
    (water-filling over sizes in increasing order).
    """
    _check(density)
    sizes = _sizes(shapes)
    remaining = density * sum(sizes.values())
    order = sorted(sizes, key=lambda name: sizes[name])
    keep: dict[str, float] = {}
    for i, n in enumerate(order):
        k = remaining / (len(order) - i)  # equal share among the layers not yet assigned
        keep[n] = min(float(sizes[n]), k)
        remaining -= keep[n]
    return {n: keep[n] / sizes[n] if sizes[n] else 1.0 for n in shapes}


def uniform_densities(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    _check(density)
    return {n: density for n in shapes}


def counts_for(shapes: dict[str, tuple[int, ...]], densities: dict[str, float], total_keep: int) -> dict[str, int]:
    """Integer keep counts, one per layer, summing exactly to `total_keep`.

    Largest-remainder rounding of density_l * n_l: when the densities are consistent with
    total_keep, every layer ends within one weight of its real-valued share.
    """
    sizes = _sizes(shapes)
    if not 0 <= total_keep <= sum(sizes.values()):
        raise ValueError(f"total_keep {total_keep} outside [0, {sum(sizes.values())}]")
    ideal = {n: min(max(densities[n], 0.0), 1.0) * sizes[n] for n in shapes}
    counts = {n: min(sizes[n], math.floor(ideal[n])) for n in shapes}
    return _fix_total(counts, sizes, ideal, total_keep)


def _fix_total(
    counts: dict[str, int], caps: dict[str, int], ideal: dict[str, float], total: int
) -> dict[str, int]:
    """Add (or remove) single weights, largest (smallest) remainder first, until the sum is exact."""
    diff = total - sum(counts.values())
    while diff != 0:
        if diff > 0:
            cands = sorted((n for n in counts if counts[n] < caps[n]), key=lambda n: counts[n] - ideal[n])
        else:
            cands = sorted((n for n in counts if counts[n] > 0), key=lambda n: ideal[n] - counts[n])
        if not cands:
            raise ValueError("cannot reach the requested total within the layer sizes")
        step = 1 if diff > 0 else -1
        for n in cands[: abs(diff)]:
            counts[n] += step
        diff = total - sum(counts.values())
    return counts


def cap_counts(target: dict[str, int], available: dict[str, int]) -> dict[str, int]:
    """Cap each layer's count at what it can still keep, moving the shortfall to layers with room.

    A layer can keep at most the weights its current mask keeps (pruned weights never return);
    the shortfall is shared in proportion to the other layers' spare room so the sum stays exact.
    """
    counts = {n: min(target[n], available[n]) for n in target}
    shortfall = sum(target.values()) - sum(counts.values())
    if shortfall:
        room = {n: available[n] - counts[n] for n in target}
        total_room = sum(room.values())
        if total_room < shortfall:
            raise ValueError("mask keeps fewer weights than requested")
        ideal = {n: counts[n] + shortfall * room[n] / total_room for n in target}
        counts = _fix_total({n: math.floor(ideal[n]) for n in target}, available, ideal, sum(target.values()))
    return counts
