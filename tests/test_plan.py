"""Planning: content-addressed run ids, shared trajectories, level schedules."""
from __future__ import annotations

import math

import pytest

from orchestrator.plan import plan_sweep, run_id_for
from orchestrator.spec import parse_spec
from tests.sweeputil import tiny_spec
from trainer.pruning.registry import get_method
from trainer.pruning.schedule import ScheduleError, level_densities, target_levels


def test_run_id_stable_under_key_order_and_float_format():
    a = {"optimizer": {"lr": 0.1, "weight_decay": 5e-4}, "seed": 0, "epochs": 4}
    b = {"epochs": 4.0, "seed": 0, "optimizer": {"weight_decay": 0.0005, "lr": 1e-1}}
    assert run_id_for(a, [0.5, 0.8]) == run_id_for(b, [0.5, 0.8])
    assert run_id_for(a, [0.5, 0.8]) != run_id_for(a, [0.5, 0.9])
    assert run_id_for(a, [0.5]) != run_id_for({**a, "seed": 1}, [0.5])


def test_plan_groups_sparsities_into_trajectories():
    spec = tiny_spec("p")
    spec["grid"] = {"method": ["dense", "imp", "snip"], "sparsity": [0.5, 0.8, 0.9], "seed": [0, 1],
                    "optimizer.lr": [0.1, 0.05]}
    plan = plan_sweep(parse_spec(spec))
    by_method = {}
    for r in plan.runs:
        by_method.setdefault(r.method, []).append(r)
    assert len(by_method["dense"]) == 2 * 2           # seeds x lr; sparsity ignored
    assert len(by_method["imp"]) == 2 * 2             # one trajectory visits all three
    assert len(by_method["snip"]) == 3 * 2 * 2        # one-shot: a run per sparsity
    assert len(plan.points) == 4 + 12 + 12
    imp = by_method["imp"][0]
    assert imp.sparsities == [0.5, 0.8, 0.9]
    assert {p.sparsity for p in imp.points} == {0.5, 0.8, 0.9}
    for p in imp.points:
        assert math.isclose(1 - imp.densities[p.level], p.sparsity)
    assert {r.axes["optimizer.lr"] for r in by_method["imp"]} == {0.1, 0.05}
    ids = [r.run_id for r in plan.runs]
    assert len(set(ids)) == len(ids)
    # Planning is deterministic: the same spec gives the same ids.
    assert ids == [r.run_id for r in plan_sweep(parse_spec(spec)).runs]


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.36])
@pytest.mark.parametrize("targets", [[0.5, 0.8, 0.9, 0.95], [0.99], [0.3], [0.0, 0.5]])
def test_iterative_schedule_visits_every_target_within_rate(rate, targets):
    d = level_densities(get_method("imp"), targets, rate)
    assert d[0] == 1.0
    for prev, cur in zip(d, d[1:]):
        assert cur < prev and cur / prev >= (1 - rate) - 1e-12   # at most `rate` pruned per level
    levels = target_levels(d, targets)
    for s, i in levels.items():
        assert math.isclose(1 - d[i], s, abs_tol=1e-12)
    # Fewest levels: one fewer step between targets would break the rate.
    assert len(d) - 1 == sum(
        math.ceil(math.log(b / a) / math.log(1 - rate) - 1e-9)
        for a, b in zip([1.0] + [1 - t for t in sorted(set(targets)) if t > 0][:-1],
                        [1 - t for t in sorted(set(targets)) if t > 0]))


def test_oneshot_and_dense_schedules():
    assert level_densities(get_method("snip"), [0.9], 0.2) == [pytest.approx(0.1)]
    assert level_densities(get_method("dense"), [0.9], 0.2) == [1.0]
    with pytest.raises(ScheduleError):
        level_densities(get_method("snip"), [0.5, 0.9], 0.2)
    with pytest.raises(ScheduleError):
        level_densities(get_method("imp"), [0.5], 1.0)
