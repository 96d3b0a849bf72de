"""Layer density distributions and integer counts: exact totals, caps, redistribution."""

from __future__ import annotations

import math

import pytest

from core.density import (
    balanced_densities,
    cap_counts,
    counts_for,
    erk_densities,
    uniform_densities,
)

# A tiny first conv (3*16*9 = 432 weights, huge (sum dims)/(prod dims)) that ERK would push above
# density 1, next to big layers: the classic case the old seed got wrong.
SHAPES = {
    "conv1": (16, 3, 3, 3),
    "conv2": (64, 16, 3, 3),
    "conv3": (128, 64, 3, 3),
    "conv4": (256, 128, 3, 3),
    "fc": (10, 256),
}


def sizes(shapes):
    return {n: math.prod(s) for n, s in shapes.items()}


def kept(shapes, dens):
    return sum(dens[n] * math.prod(shapes[n]) for n in shapes)


@pytest.mark.parametrize("density", [0.5, 0.2, 0.1, 0.05, 0.01])
def test_erk_exact_with_capped_layers(density):
    dens = erk_densities(SHAPES, density)
    total = sum(sizes(SHAPES).values())
    assert kept(SHAPES, dens) == pytest.approx(density * total, rel=1e-12)
    assert all(0 <= d <= 1 for d in dens.values())
    # uncapped layers keep the ERK proportionality density ∝ (sum of dims)/(prod of dims)
    free = [n for n, d in dens.items() if d < 1]
    ratios = [dens[n] / (sum(SHAPES[n]) / math.prod(SHAPES[n])) for n in free]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-12)


def test_erk_caps_small_layer_and_redistributes():
    dens = erk_densities(SHAPES, 0.5)
    assert dens["conv1"] == 1.0 and dens["fc"] == 1.0  # would exceed 1: kept dense
    # naive (uncapped) eps undershoots: the capped layers' excess is given to the rest
    s = sizes(SHAPES)
    raw = {n: sum(SHAPES[n]) / s[n] for n in SHAPES}
    eps_naive = 0.5 * sum(s.values()) / sum(raw[n] * s[n] for n in SHAPES)
    assert eps_naive * raw["conv1"] > 1
    assert dens["conv4"] > eps_naive * raw["conv4"]


def test_erk_cascading_caps():
    """Capping one layer raises eps, which pushes a second layer over 1 too."""
    shapes = {"a": (2, 2), "b": (8, 8), "c": (200, 200)}
    dens = erk_densities(shapes, 0.3)
    assert dens["a"] == 1.0 and dens["b"] == 1.0
    assert kept(shapes, dens) == pytest.approx(0.3 * sum(sizes(shapes).values()))


def test_erk_power_scale_and_edges():
    flat = erk_densities(SHAPES, 0.2, power_scale=0.0)  # power 0: every raw score 1 -> uniform
    assert all(d == pytest.approx(0.2) for d in flat.values())
    assert all(d == 1.0 for d in erk_densities(SHAPES, 1.0).values())
    assert all(d == 0.0 for d in erk_densities(SHAPES, 0.0).values())
    with pytest.raises(ValueError):
        erk_densities(SHAPES, 1.5)


@pytest.mark.parametrize("density", [0.9, 0.5, 0.1, 0.01])
def test_balanced_same_count_with_cap(density):
    dens = balanced_densities(SHAPES, density)
    s = sizes(SHAPES)
    assert kept(SHAPES, dens) == pytest.approx(density * sum(s.values()), rel=1e-12)
    counts = {n: dens[n] * s[n] for n in SHAPES}
    uncapped = [c for n, c in counts.items() if dens[n] < 1]
    assert max(uncapped) == pytest.approx(min(uncapped))
    for n, c in counts.items():  # a capped layer is one too small to take the common count
        if dens[n] == 1:
            assert c <= max(uncapped) + 1e-9


def test_balanced_caps_small_layers():
    # 10% of 380,848 = 38,085: a fifth each would exceed conv1 (432) and fc (2,560); the re-shared
    # rest then exceeds conv2 (9,216) too; conv3 and conv4 split what is left equally.
    dens = balanced_densities(SHAPES, 0.1)
    assert dens["conv1"] == dens["fc"] == dens["conv2"] == 1.0
    s = sizes(SHAPES)
    assert dens["conv3"] * s["conv3"] == pytest.approx(dens["conv4"] * s["conv4"])
    assert dens["conv3"] * s["conv3"] == pytest.approx((38084.8 - 432 - 2560 - 9216) / 2)


def test_uniform():
    assert uniform_densities(SHAPES, 0.3) == {n: 0.3 for n in SHAPES}


@pytest.mark.parametrize("fn", [erk_densities, balanced_densities, uniform_densities])
@pytest.mark.parametrize("density", [0.5, 0.1, 0.01, 0.001])
def test_counts_exact_and_within_one(fn, density):
    s = sizes(SHAPES)
    total_keep = round(density * sum(s.values()))
    dens = fn(SHAPES, density)
    counts = counts_for(SHAPES, dens, total_keep)
    assert sum(counts.values()) == total_keep
    for n in SHAPES:
        assert 0 <= counts[n] <= s[n]
        assert abs(counts[n] - dens[n] * s[n]) <= 1.0


def test_counts_for_rejects_impossible_totals():
    with pytest.raises(ValueError):
        counts_for(SHAPES, uniform_densities(SHAPES, 1.0), sum(sizes(SHAPES).values()) + 1)


def test_cap_counts_moves_shortfall():
    out = cap_counts({"a": 10, "b": 10, "c": 10}, {"a": 4, "b": 100, "c": 20})
    assert out["a"] == 4 and sum(out.values()) == 30
    assert out["b"] <= 100 and out["c"] <= 20 and out["b"] > 10 and out["c"] > 10
    assert cap_counts({"a": 3}, {"a": 5}) == {"a": 3}
    with pytest.raises(ValueError):
        cap_counts({"a": 10, "b": 10}, {"a": 5, "b": 10})
