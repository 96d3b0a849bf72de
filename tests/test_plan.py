"""Planning: content-addressed levels on a grid-independent trunk, branches, shared level 0, jobs."""

from __future__ import annotations

import math

import pytest

from core.config import resolve
from core.levels import LevelSpec, LineageError, content_hash, plan_levels, trunk_density
from orchestrator.plan.grid import plan_sweep, run_id_for
from orchestrator.plan.jobs import group_jobs
from orchestrator.plan.spec import load_spec, parse_spec
from tests.sweeputil import REPO, tiny_spec

ITERATIVE = ["imp", "imp_wr", "imp_lrr"]


def _cfg(method: str, **over) -> dict:
    return resolve("digits_mlp", {"method": method, "seed": 0, **over})


def test_ids_stable_under_key_order_and_float_format():
    a = {"optimizer": {"lr": 0.1, "weight_decay": 5e-4}, "seed": 0, "epochs": 4}
    b = {"epochs": 4.0, "seed": 0, "optimizer": {"weight_decay": 0.0005, "lr": 1e-1}}
    assert run_id_for(a) == run_id_for(b) and content_hash(a) == content_hash(b)
    assert run_id_for(a) != run_id_for({**a, "seed": 1})


@pytest.mark.parametrize("method", ITERATIVE)
def test_the_level_serving_a_target_does_not_depend_on_the_grid(method):
    alone = plan_levels(method, _cfg(method), [0.9])
    grid = plan_levels(method, _cfg(method), [0.5, 0.8, 0.9])
    assert alone.serving[0.9].level_id == grid.serving[0.9].level_id
    # The trunk is the same path whatever the grid holds: every level of `alone` is in `grid`.
    assert {lv.level_id for lv in alone.levels} <= {lv.level_id for lv in grid.levels}


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.36])
def test_trunk_prunes_a_fixed_rate_and_branches_land_exactly(rate):
    run = plan_levels("imp", _cfg("imp", **{"prune.rate": rate}), [0.5, 0.8, 0.9, 0.95])
    trunk = [lv for lv in run.levels if lv.kind in ("dense", "trunk")]
    for depth, lv in enumerate(trunk):
        assert lv.depth == depth and lv.density == pytest.approx((1 - rate) ** depth)
    for s, lv in run.serving.items():
        assert lv.density == pytest.approx(1 - s, abs=1e-9)
        if lv.kind == "branch":  # from the deepest trunk level still denser than the target
            parent = next(t for t in trunk if t.level_id == lv.parent)
            assert parent.density > 1 - s >= trunk_density(rate, parent.depth + 1)
            assert (parent.density - lv.density) / parent.density <= rate  # never more than a step


def test_a_target_on_the_trunk_needs_no_branch_and_trunk_landing_overshoots():
    run = plan_levels("imp", _cfg("imp", **{"prune.rate": 0.2}), [0.36])
    assert run.serving[0.36].kind == "trunk" and run.serving[0.36].depth == 2
    assert [lv.kind for lv in run.levels] == ["dense", "trunk", "trunk"]
    trunk = plan_levels("imp", _cfg("imp", **{"prune.landing": "trunk"}), [0.5, 0.9])
    assert {s: (lv.kind, lv.depth) for s, lv in trunk.serving.items()} == {
        0.5: ("trunk", 4),
        0.9: ("trunk", 11),
    }  # 0.8^4 = 0.41, 0.8^11 = 0.086: at or past the target
    assert all(lv.kind != "branch" for lv in trunk.levels)


def test_level_zero_is_shared_by_every_method_that_trains_dense_from_init():
    ids = {
        m: plan_levels(m, _cfg(m), [0.0] if m == "dense" else [0.5]).levels[0]
        for m in ("dense", "imp", "imp_wr", "imp_lrr", "random", "random_erk", "random_balanced")
    }
    assert len({lv.level_id for lv in ids.values()}) == 1
    assert all(lv.kind == "dense" and lv.parent is None for lv in ids.values())
    assert plan_levels("imp", _cfg("imp", seed=1), [0.5]).levels[0].level_id != ids["imp"].level_id
    # What only the pruning steps read does not change level 0; what training reads does.
    assert plan_levels("imp", _cfg("imp", **{"prune.rate": 0.3}), [0.5]).levels[0].level_id == ids["imp"].level_id
    assert (
        plan_levels("imp", _cfg("imp", **{"optimizer.lr": 0.05}), [0.5]).levels[0].level_id != ids["imp"].level_id
    )


def test_methods_part_after_level_zero_and_one_shot_levels_stand_alone():
    lv1 = {m: plan_levels(m, _cfg(m), [0.2]).serving[0.2] for m in ("imp", "imp_wr", "imp_lrr", "random")}
    assert len({lv.level_id for lv in lv1.values()}) == 4  # same density, other rewind or criterion
    snip = plan_levels("snip", _cfg("snip"), [0.5, 0.9])
    assert [lv.kind for lv in snip.levels] == ["oneshot", "oneshot"]
    assert all(lv.parent is None and lv.root == lv.level_id for lv in snip.levels)
    assert plan_levels("snip", _cfg("snip"), [0.0]).serving[0.0].kind == "dense"  # nothing to prune


def test_imp_wr_rewind_point_is_part_of_the_step():
    a = plan_levels("imp_wr", _cfg("imp_wr"), [0.2]).serving[0.2]
    b = plan_levels("imp_wr", _cfg("imp_wr", **{"prune.rewind_epochs": 2}), [0.2]).serving[0.2]
    c = plan_levels("imp_wr", _cfg("imp_wr", **{"prune.rewind_optimizer": True}), [0.2]).serving[0.2]
    assert a.step["rewind_to"] == {"epochs": 1} and a.step["rewind_optimizer"] is False
    assert len({a.level_id, b.level_id, c.level_id}) == 3


def test_too_many_levels_is_a_clear_error():
    with pytest.raises(LineageError, match=r"sparsity 0.9999 at prune.rate 0.01 needs \d+ levels"):
        plan_levels("imp", _cfg("imp", **{"prune.rate": 0.01}), [0.9999])


def test_a_level_description_must_hash_to_its_id():
    lv = plan_levels("imp", _cfg("imp"), [0.5]).serving[0.5]
    d = lv.description()
    assert LevelSpec.from_dict(d) == lv
    with pytest.raises(LineageError, match="does not hash to its id"):
        LevelSpec.from_dict({**d, "density": 0.4})
    with pytest.raises(LineageError, match="does not hash to its id"):
        LevelSpec.from_dict({**d, "density": 0.4, "step": {**d["step"], "density": 0.4}})


def test_sweep_plan_shares_levels_and_counts_the_saving():
    spec = tiny_spec("p")
    spec["grid"] = {
        "method": ["dense", "imp", "imp_wr", "snip"],
        "sparsity": [0.5, 0.8],
        "seed": [0, 1],
        "optimizer.lr": [0.1, 0.05],
    }
    plan = plan_sweep(parse_spec(spec))
    assert len(plan.runs) == 4 * 2 * 2 and len(plan.points) == 2 * 2 * (1 + 2 + 2 + 2)
    # per seed x lr: level 0; imp and imp_wr: trunk 1 (0.5), trunk 2 (0.25) + branch (0.2); snip: 2
    assert len(plan.levels) == 4 * (1 + 3 + 3 + 2)
    counts = plan.counts()
    assert counts["levels_to_train"] == len(plan.levels)
    assert counts["naive_level_trainings"] == 4 * (1 + (2 + 4) * 2 + 2)
    assert plan.counts(set(list(plan.levels)[:5]))["levels_done"] == 5
    ids = [lv for lv in plan.levels]
    assert ids == list(plan_sweep(parse_spec(spec)).levels)  # deterministic
    for lid, lv in plan.levels.items():  # parents come first
        assert lv.parent is None or ids.index(lv.parent) < ids.index(lid)
    wr_root = {lv.root for lv in plan.levels.values() if lv.step and lv.step["rewind"] == "step"}
    assert set(plan.snapshots) == wr_root and all(v == [{"epochs": 1}] for v in plan.snapshots.values())


def test_a_plan_keeps_the_folder_it_resolved_to(tmp_path, monkeypatch):
    """A relative output_dir resolves once, against the working directory when the plan is made;
    a later chdir (a supervisor, a search) does not move the levels."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    plan = plan_sweep(parse_spec({**tiny_spec("p"), "output_dir": "runs"}))
    monkeypatch.chdir(tmp_path / "b")
    assert plan.output_dir == str((tmp_path / "a" / "runs").resolve())
    assert plan.levels_dir == str((tmp_path / "a" / "runs" / "levels").resolve())


def test_jobs_fork_after_level_zero_and_keep_branches_inline():
    spec = tiny_spec("j")
    spec["grid"] = {"method": ["dense", "imp", "imp_wr", "imp_lrr"], "sparsity": [0.5, 0.8], "seed": [0]}
    plan = plan_sweep(parse_spec(spec))
    jobs = group_jobs(list(plan.levels.values()), {}, plan.snapshots)
    root = next(lv for lv in plan.levels.values() if lv.kind == "dense")
    first = next(j for j in jobs if j.levels == [root.level_id])
    assert first.depends_on == [] and set(first.snapshots) == {root.level_id}
    chains = [j for j in jobs if j is not first]
    assert len(chains) == 3 and all(j.depends_on == [first.job_id] for j in chains)
    for j in chains:  # trunk 1, trunk 2, then the branch to 0.8 right after trunk 2
        assert [plan.levels[lid].kind for lid in j.levels] == ["trunk", "trunk", "branch"]
    alone = group_jobs([lv for lv in plan.levels.values() if lv.level_id in plan.runs[1].levels], {}, {})
    assert len(alone) == 1 and alone[0].levels == plan.runs[1].levels
    # A chain whose parent another job is training waits for that job.
    later = group_jobs([plan.levels[lid] for lid in chains[0].levels], {root.level_id: "J0"}, {})
    assert len(later) == 1 and later[0].depends_on == ["J0"]


def test_imagenet_sweep_plans_261_level_trainings():
    spec = load_spec(REPO / "sweeps" / "imagenet_rn50.yaml")
    assert len(plan_sweep(spec).levels) == 261  # 3 seeds x (1 + 3 x 22) + 4 one-shot x 5 x 3
    data = spec.model_dump()
    data["trainer"]["overrides"]["prune.landing"] = "trunk"
    trunk = plan_sweep(parse_spec(data))
    assert len(trunk.levels) == 3 * (1 + 3 * 18) + 60  # 0.98 needs trunk level 18 (0.8^18 = 0.018)
    assert math.isclose(min(lv.density for lv in trunk.levels.values() if lv.kind == "trunk"), 0.8**18)


def test_methods_with_one_level_after_level_zero_still_run_in_parallel():
    spec = tiny_spec("j1")
    spec["grid"] = {"method": ["imp", "imp_lrr", "snip"], "sparsity": [0.5], "seed": [0]}
    plan = plan_sweep(parse_spec(spec))
    jobs = group_jobs(list(plan.levels.values()), {}, {})
    assert sorted(len(j.levels) for j in jobs) == [1, 1, 1, 1]  # level 0, imp, imp_lrr, snip
    root_job = next(j for j in jobs if plan.levels[j.levels[0]].kind == "dense")
    assert sorted(len(j.depends_on) for j in jobs) == [0, 0, 1, 1]
    assert all(j.depends_on in ([], [root_job.job_id]) for j in jobs)


def test_random_methods_plan_no_training_for_levels_that_only_give_masks():
    """digits_lth's random runs train their 4 targets each, not the 13 trunk levels on the way:
    192 level trainings before, 153 now (39 fewer), with the same ids for what is trained."""
    spec = load_spec(REPO / "sweeps" / "digits_lth.yaml").model_dump()
    spec["grid"]["method"] = [m for m in spec["grid"]["method"] if not m.startswith("imp_") or m == "imp_lrr"]
    plan = plan_sweep(parse_spec(spec))
    counts = plan.counts()
    assert (counts["level_trainings"], counts["mask_only_levels"]) == (153, 39)
    assert counts["level_trainings"] + counts["mask_only_levels"] == len(plan.levels) == 192
    random = [r for r in plan.runs if r.method == "random"]
    assert all(len(r.levels) == 4 and all(plan.levels[lid].kind == "branch" for lid in r.levels) for r in random)
    jobs = group_jobs(list(plan.trained.values()), {}, plan.snapshots)
    assert not set(plan.mask_only) & {lid for j in jobs for lid in j.levels}


def test_imp_reinit_at_sparsity_0_is_refused_at_launch(tmp_path):
    """At sparsity 0 IMP's mask keeps every weight, and imp_reinit served IMP's dense level, from
    the original initialisation: no reinitialisation at all, under a control's name. It is
    refused (exit 2, saying why); imp_layerwise_random at 0 is the dense level honestly (every
    weight kept, none redrawn, the original initialisation)."""
    from tests.sweeputil import tp, write_spec

    with pytest.raises(LineageError, match="imp_reinit at sparsity 0 would be imp's dense level"):
        plan_levels("imp_reinit", _cfg("imp_reinit"), [0.0, 0.5])
    assert plan_levels("imp_layerwise_random", _cfg("imp_layerwise_random"), [0.0]).serving[0.0].kind == "dense"
    spec = tiny_spec("reinit0", output_dir=str(tmp_path / "out"))
    spec["grid"] = {"method": ["dense", "imp", "imp_reinit"], "sparsity": [0.0, 0.5], "seed": [0]}
    proc = tp("launch", str(write_spec(tmp_path, spec)), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "drop sparsity 0 from a grid with imp_reinit" in proc.stderr
    assert not (tmp_path / "out").exists()
