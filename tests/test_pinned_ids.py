"""Pinned ids: run, level and job ids are names on disk and in every store, so a change that
renames them (a refactor of the hashing, a new key in a preset, a different float format) must
fail here, loudly, instead of retraining everything silently. If a change truly computes
something else, update the literals in the same commit and say so in its message
(docs/levels.md: "When ids change").

The ids of every shipped sweep (runs and levels) are pinned in test_hydra.py; this module pins the
jobs, and spells out a few representative configs by hand so a reader sees what an id names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import config as trainer_config
from core.levels import plan_levels, run_id
from orchestrator.plan.grid import plan_sweep
from orchestrator.plan.jobs import group_jobs
from orchestrator.plan.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data" / "presets"

# (preset, method, target sparsities) -> run id, its levels as (kind, depth, id), the one job's id
PINNED = [
    (
        ("digits_mlp", "imp", [0.5, 0.8]),
        "43896e7bd8048d3c",
        [
            ("dense", 0, "257e1e1a8825d5e5"),
            ("trunk", 1, "4114146a32782650"),
            ("trunk", 2, "6495cf5167046be4"),
            ("trunk", 3, "4cc1edd63b02c589"),
            ("branch", 4, "1902aba98483b991"),
            ("trunk", 4, "27405e3735272239"),
            ("trunk", 5, "1ec7078a2453af3c"),
            ("trunk", 6, "4e34443924895701"),
            ("trunk", 7, "06251073a510787c"),
            ("branch", 8, "ae2d80390dde89c5"),
        ],
        "82f31af23315af3c",
    ),
    (("digits_mlp", "snip", [0.9]), "afc441e778d22699", [("oneshot", 0, "180c0e6933b19bcc")], "d63e5389c78c3375"),
    (
        ("cifar10_resnet20", "imp_wr", [0.8]),
        "db5525abdd00d48e",
        [
            ("dense", 0, "5b666980fd322b87"),
            ("trunk", 1, "d756097818b649d7"),
            ("trunk", 2, "76ee633717d2225b"),
            ("trunk", 3, "e9609951246f1707"),
            ("trunk", 4, "4da0c0d5b2e31dad"),
            ("trunk", 5, "960529fce7c10f6a"),
            ("trunk", 6, "799cb606e2776f8a"),
            ("trunk", 7, "94e038e863b793cd"),
            ("branch", 8, "9e5409535ec9ddd4"),
        ],
        "f7cd8f073a73867c",
    ),
    (
        ("imagenet_rn50", "dense", [0.0]),
        "58c02591ed9961fd",
        [("dense", 0, "d4a18ea8900707b9")],
        "7e4905f252775e61",
    ),
]


@pytest.mark.parametrize(
    "case", PINNED, ids=lambda c: "-".join(map(str, c[0][:2])) if isinstance(c, tuple) else ""
)
def test_representative_configs_keep_their_ids(case):
    (preset, method, sparsities), want_run, want_levels, want_job = case
    cfg = trainer_config.resolve(preset, {"method": method, "seed": 0})
    assert run_id(cfg) == want_run
    levels = plan_levels(method, cfg, sparsities).levels
    assert [(lv.kind, lv.depth, lv.level_id) for lv in levels] == want_levels
    assert [j.job_id for j in group_jobs(list(levels), {}, {})] == [want_job]


def test_shipped_sweeps_keep_their_job_ids():
    want = json.loads((FIXTURES / "job_ids.json").read_text())
    assert sorted(want) == sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
    for name, job_ids in want.items():
        plan = plan_sweep(load_spec(REPO / "sweeps" / f"{name}.yaml"), reuse="any")
        jobs = group_jobs(list(plan.trained.values()), {}, plan.snapshots)  # what a launch submits
        assert sorted(j.job_id for j in jobs) == job_ids, name


def test_a_key_added_to_a_preset_renames_its_levels():
    """The decision in docs/levels.md, held: the hash covers the resolved config, so a new key in
    a preset renames every level of it (and this module fails), while a new schema option that the
    presets leave unset renames nothing."""
    cfg = trainer_config.resolve("digits_mlp", {"method": "imp", "seed": 0})
    assert run_id({**cfg, "train": {**cfg["train"], "new_option": False}}) != run_id(cfg)


def test_same_code_ids_hold_each_level_s_code():
    """reuse same-code (the default) puts a level's code in its id: pinned here for a made-up
    code identity (real ones move with every edit of the trainer), with what each file covers.
    Under reuse any the ids above are unchanged: old output folders stay reachable with it."""
    from core.code import CodeIdentity

    files = {
        "trainer/loop.py": "a" * 16,
        "trainer/pruning/methods.py": "b" * 16,
        "core/levels.py:code_free_id": "c" * 16,
        "trainer/models/small.py": "d" * 16,
        "trainer/pruning/registry.py": "e" * 16,
        "trainer/pruning/synflow.py": "f" * 16,
        "trainer/models/vit.py": "9" * 16,
    }
    code = CodeIdentity("pinned", files)
    cfg = trainer_config.resolve("digits_mlp", {"method": "imp", "seed": 0})
    run = plan_levels("imp", cfg, [0.5], code)
    assert run_id(cfg, run.codes) == "ab527797183b12d7"
    assert [(lv.kind, lv.depth, lv.level_id, lv.code) for lv in run.levels] == [
        ("dense", 0, "0dbe9478e46ee92a", "4c53fb9a4adee6c5"),
        ("trunk", 1, "721ef42c6e5580a0", "4f5959ce21316b02"),
        ("trunk", 2, "326727be055da351", "4f5959ce21316b02"),
        ("trunk", 3, "de4ba8a2615d0c5f", "4f5959ce21316b02"),
        ("branch", 4, "125c1f853bf1ba1c", "4f5959ce21316b02"),
    ]
    assert [lv.level_id for lv in plan_levels("imp", cfg, [0.5]).levels][0] == "257e1e1a8825d5e5"  # as before

    def ids(changed: dict[str, str], method: str) -> list[str]:
        c = trainer_config.resolve("digits_mlp", {"method": method, "seed": 0})
        code = CodeIdentity("x", {**files, **changed})
        return [lv.level_id for lv in plan_levels(method, c, [0.5], code).levels]

    # SynFlow's own file renames SynFlow's level only; the pruners' file every pruned level but
    # level 0; the training loop and the id functions every level; another model's file none.
    assert ids({"trainer/models/vit.py": "0" * 16}, "imp") == ids({}, "imp")
    assert all(a != b for a, b in zip(ids({"trainer/models/small.py": "0" * 16}, "imp"), ids({}, "imp")))
    assert all(a != b for a, b in zip(ids({"core/levels.py:code_free_id": "0" * 16}, "imp"), ids({}, "imp")))
    assert ids({"trainer/pruning/synflow.py": "0" * 16}, "imp") == ids({}, "imp")
    assert ids({"trainer/pruning/synflow.py": "0" * 16}, "synflow") != ids({}, "synflow")
    pruned = ids({"trainer/pruning/methods.py": "0" * 16}, "imp")
    assert pruned[0] == ids({}, "imp")[0] and all(a != b for a, b in zip(pruned[1:], ids({}, "imp")[1:]))
    assert all(a != b for a, b in zip(ids({"trainer/loop.py": "0" * 16}, "imp"), ids({}, "imp")))


@pytest.mark.parametrize("method", ["random", "er_erk", "imp_layerwise_random"])
def test_random_draws_are_seeded_by_the_code_free_id(method):
    """A random mask is drawn from a generator seeded by the level's code-free id: the id reuse
    any gives it, whatever code the same-code id holds, so neither the reuse policy nor an edit of
    the trainer redraws it (a loss fix would otherwise reshuffle every random baseline)."""
    from core.code import CodeIdentity
    from core.levels import code_free_id

    cfg = trainer_config.resolve("digits_mlp", {"method": method, "seed": 0})
    plain = plan_levels(method, cfg, [0.5, 0.9]).levels
    for files in ({"trainer/loop.py": "a" * 16}, {"trainer/loop.py": "b" * 16, "core/density.py": "c" * 16}):
        coded = plan_levels(method, cfg, [0.5, 0.9], CodeIdentity("x", files)).levels
        by_id = {lv.level_id: lv for lv in coded}
        assert [lv.level_id for lv in coded] != [lv.level_id for lv in plain]
        assert [code_free_id(lv, by_id.__getitem__) for lv in coded] == [lv.level_id for lv in plain]
