"""Levels through the launch operation (in-process; its local jobs train in their own processes):
level 0 trained once for every method that shares it, results equal to each method launched
alone, sweeps extended by training only what is new, and the store rebuilt from the output folder."""

from __future__ import annotations

import json
import shutil

import pytest

from cli.common import json_text
from core.errors import UserError
from orchestrator.operations.launch import LaunchRequest, dry_run
from orchestrator.operations.store_admin import import_output
from tests.inprocess import dry_run_json, launch_here, query_rows, status_json, store_url
from tests.sweeputil import epochs_trained, same_levels, tiny_spec, tp, write_spec

METHODS = ["dense", "imp", "imp_wr", "imp_lrr", "random"]


def _spec(name: str, methods: list[str], sparsities: list[float], output_dir) -> dict:
    spec = tiny_spec(name, output_dir=str(output_dir))
    spec["grid"] = {"method": methods, "sparsity": sparsities, "seed": [0]}
    spec["trainer"]["overrides"]["prune.rewind_iterations"] = 2  # one epoch per level: k inside it
    return spec


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """All five methods at {0.5, 0.8} in one sweep: level 0, then per iterative method trunk 1
    (0.5), trunk 2 (0.25) and a branch from it to 0.8 -> 1 + 4 x 3 = 13 levels, of which random's
    trunk 2 only gives its mask: 12 trainings."""
    tmp = tmp_path_factory.mktemp("shared")
    path = write_spec(tmp, _spec("shared", METHODS, [0.5, 0.8], tmp / "tp-runs"))
    dry = dry_run_json(path, tmp)
    launch_here(path, tmp)
    return tmp, path, dry


@pytest.mark.slow
def test_level_zero_is_trained_once_for_all_methods(shared):
    tmp, _, dry = shared
    assert (dry["level_trainings"], dry["mask_only_levels"], dry["levels_to_train"]) == (12, 1, 12)
    assert dry["jobs"] == 6  # random's branch needs no trained parent: a job of its own
    assert dry["naive_level_trainings"] == 1 + 4 * (2 + 4)
    assert status_json("shared", tmp)["counts"] == {"COMPLETED": 5}
    assert epochs_trained(tmp, "shared") == 12  # one epoch per level, each level once
    rows = query_rows("shared", tmp)
    level0 = {r["level_id"] for r in rows if r["method"] == "dense"}
    assert len(level0) == 1
    logs = "".join(p.read_text() for p in (tmp / "tp-runs" / "_jobs" / "shared").glob("*/*_log.out"))
    assert logs.count(f"[level {level0.pop()} dense 0 epoch 0]") == 1


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_each_method_equals_itself_launched_alone(shared, tmp_path, method):
    tmp, _, _ = shared
    path = write_spec(tmp_path, _spec("alone", [method], [0.5, 0.8], tmp_path / "tp-runs"))
    launch_here(path, tmp_path)
    mine = query_rows("alone", tmp_path)
    theirs = [r for r in query_rows("shared", tmp) if r["method"] == method]
    assert [(r["sparsity"], r["level_id"], r["test_acc"]) for r in mine] == [
        (r["sparsity"], r["level_id"], r["test_acc"]) for r in theirs
    ]
    assert same_levels(tmp_path / "tp-runs", tmp / "tp-runs", [r["level_id"] for r in mine])


@pytest.mark.slow
def test_extending_a_sweep_trains_only_the_new_levels(shared):
    tmp, _, _ = shared
    before = epochs_trained(tmp, "shared")
    wider = write_spec(tmp, _spec("shared", METHODS, [0.5, 0.8, 0.9], tmp / "tp-runs"))
    dry = dry_run_json(wider, tmp)
    # 0.9 at rate 0.5: trunk 3 (0.125) and a branch from it to 0.1, for each iterative method
    # (random's trunk 3 a mask only).
    assert (dry["levels_done"], dry["levels_to_train"]) == (12, 7)
    launch_here(wider, tmp)
    assert epochs_trained(tmp, "shared") - before == 7
    assert status_json("shared", tmp)["counts"] == {"COMPLETED": 5}
    rows = query_rows("shared", tmp)
    assert {r["sparsity"] for r in rows if r["method"] == "imp"} == {0.5, 0.8, 0.9}
    assert all(r["state"] == "COMPLETED" and r["test_acc"] is not None for r in rows)


@pytest.mark.slow
def test_a_second_store_and_a_rebuilt_store_show_the_same_results(shared):
    tmp, path, _ = shared
    first = query_rows("shared", tmp)
    other = f"sqlite:///{tmp / 'other.db'}"
    res = launch_here(path, tmp, db=other).result
    assert res is not None and not res.submitted and not res.waiting  # nothing to submit
    assert res.imported > 0  # found finished on disk: imported into the new store
    st = status_json("shared", tmp, db=other)
    assert st["counts"] == {"COMPLETED": 5} and all(r["test_acc"] is not None for r in st["runs"])
    # Lose the store; rebuild it from the output folder.
    (tmp / "tp-results.db").unlink()
    for extra in tmp.glob("tp-results.db-*"):
        extra.unlink()
    out = import_output(store_url(tmp), str(tmp / "tp-runs"))  # the default store of tmp
    assert out.counts["sweeps"] == 1 and not out.bad and not out.refused
    assert query_rows("shared", tmp) == first
    table = tp("query", "shared", cwd=tmp, check=True).stdout
    assert "imp_lrr" in table
    with pytest.raises(UserError, match="not a turboprune output folder") as bad:
        import_output(f"sqlite:///{tmp / 'nowhere.db'}", str(tmp / "nowhere"))
    assert bad.value.exit_code == 2 and not (tmp / "nowhere.db").exists()
    shutil.rmtree(tmp / "tp-runs" / "_jobs" / "shared", ignore_errors=True)  # logs no longer needed


def test_tampered_level_folders_are_named_and_never_imported(shared):
    """A copy of the output folder with a renamed level folder, an edited level.json, a truncated
    metrics.json and a parent that is a path: `db import` names each one, exits 1 and imports the
    rest; `launch --dry-run` counts none of them as done."""
    tmp, _, _ = shared
    copy = tmp / "tampered"
    shutil.copytree(tmp / "tp-runs", copy, ignore=shutil.ignore_patterns("_jobs", "wandb"))
    rows = [r for r in query_rows("shared", tmp) if r["method"] != "dense" and r["sparsity"] in (0.5, 0.8)]
    renamed, edited, truncated, pathy = (r["level_id"] for r in rows[:4])
    levels = copy / "levels"
    (levels / renamed).rename(levels / "0123456789abcdef")
    desc = json.loads((levels / edited / "level.json").read_text())
    desc["density"] = 0.9
    (levels / edited / "level.json").write_text(json.dumps(desc))
    text = (levels / truncated / "metrics.json").read_text()
    (levels / truncated / "metrics.json").write_text(text[: len(text) // 2])
    desc = json.loads((levels / pathy / "level.json").read_text())
    desc["parent"] = "../../../etc"
    (levels / pathy / "level.json").write_text(json.dumps(desc))

    db = f"sqlite:///{tmp / 'tampered.db'}"
    out = import_output(db, str(copy))
    assert out.bad and not out.refused  # what `db import` exits 1 on
    err = " ".join(f"{where}: {why}" for where, why in sorted(out.bad.items()))  # as it prints them
    assert "folder name '0123456789abcdef' differs from the level_id" in err
    assert f"{renamed}: no level.json" in err
    assert f"{edited}: its description does not hash to its id" in err
    assert f"{truncated}: metrics.json cannot be read" in err
    assert f"{pathy}: parent '../../../etc' is not a level id" in err
    stored = {r["level_id"]: r for r in query_rows("shared", tmp, db=db, levels=True)}
    for lid in (renamed, edited, truncated, pathy):
        assert lid not in stored  # never recorded: a level is imported whole or not at all
    good = [r["level_id"] for r in rows if r["level_id"] not in (renamed, edited, truncated, pathy)]
    assert good and all(stored[lid]["test_acc"] is not None for lid in good)

    spec = _spec("shared", METHODS, [0.5, 0.8], copy)
    dry = dry_run(LaunchRequest(str(write_spec(tmp / "tampered", spec)), db=f"sqlite:///{tmp / 'none.db'}"))
    assert dry.exit_code == 1
    info = json.loads(json_text(dry.info()))
    assert {p.rsplit("/", 1)[-1] for p in info["bad_levels"]} == {edited, truncated, pathy}
    assert info["levels_done"] == info["level_trainings"] - 4


@pytest.mark.slow
def test_a_random_method_draws_the_same_masks_under_either_reuse_policy(shared, tmp_path):
    """Under reuse any the level ids hold no code; the masks random draws (mask-only trunk level
    included) and the results are those of the same-code sweep, bit for bit."""
    import torch

    tmp, _, _ = shared
    spec = _spec("anyreuse", ["random"], [0.5, 0.8], tmp_path / "tp-runs")
    spec["reuse"] = "any"
    launch_here(write_spec(tmp_path, spec), tmp_path)
    mine = query_rows("anyreuse", tmp_path)
    # (An earlier test of this module may have extended the shared sweep to 0.9.)
    theirs = [r for r in query_rows("shared", tmp) if r["method"] == "random" and r["sparsity"] in (0.5, 0.8)]
    assert [r["level_id"] for r in mine] != [r["level_id"] for r in theirs]  # other ids...
    assert [(r["sparsity"], r["test_acc"]) for r in mine] == [(r["sparsity"], r["test_acc"]) for r in theirs]
    for a, b in zip(mine, theirs):  # ...the same masks and weights
        wa = torch.load(tmp_path / "tp-runs" / "levels" / a["level_id"] / "final.pt", weights_only=False)
        wb = torch.load(tmp / "tp-runs" / "levels" / b["level_id"] / "final.pt", weights_only=False)
        for part in ("mask", "model"):
            assert wa[part].keys() == wb[part].keys()
            assert all(torch.equal(wa[part][k], wb[part][k]) for k in wa[part]), part
