"""The levels loop in one process: rewinding semantics of imp, imp_wr and imp_lrr, masks held at
zero, levels that compute the same thing in any job, and checkpoints that cannot run code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from core.atomic import write_json_atomic
from core.config import resolve
from core.layout import LevelDir
from core.levels import plan_levels
from trainer import checkpoint as ckpt
from trainer.distributed import DistInfo, StopFlag
from trainer.level_trainer import LevelTrainer

INFO = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
K = 3  # imp_wr rewind point, in iterations


class ListRecorder:
    """Keeps what the trainer reports, as the store would."""

    def __init__(self) -> None:
        self.epochs: list[tuple[str, int, dict[str, Any]]] = []
        self.levels: dict[str, dict[str, Any]] = {}

    def heartbeat(self, level_id: str, epoch: int) -> None: ...

    def log_epoch(self, level_id: str, epoch: int, metrics: dict[str, Any]) -> None:
        self.epochs.append((level_id, epoch, metrics))

    def finish_level(self, level_id: str, result: dict[str, Any]) -> None:
        self.levels[level_id] = result


def config(method: str, **over) -> dict:
    return resolve(
        "digits_mlp",
        {
            "method": method,
            "seed": 0,
            "schedule.epochs": 2,
            "model.hidden": [32],
            "data.batch_size": 128,
            "prune.rate": 0.5,
            "prune.rewind_iterations": K,
            **over,
        },
    )


def train(tmp: Path, method: str, sparsities=(0.5,), snapshots: bool = True, **over):
    """Plan a run's levels as a sweep would and train them all; returns (lineage, recorder, trainer)."""
    cfg = config(method, **over)
    run = plan_levels(method, cfg, list(sparsities))
    for lv in run.levels:
        write_json_atomic(LevelDir(tmp / lv.level_id).description, lv.description())
    snaps = {}
    if snapshots:
        for lv in run.levels:
            if lv.step and lv.step["rewind"] == "step":
                snaps[lv.root] = [lv.step["rewind_to"]]
    rec = ListRecorder()
    trainer = LevelTrainer(run.levels[0].train, tmp, INFO, rec, StopFlag(INFO))
    trainer.run(run.levels, snaps)
    return run, rec, trainer


def final(tmp: Path, level_id: str) -> dict:
    return ckpt.load_weights(LevelDir(tmp / level_id).final)


def _masked(weights: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v * mask[k] if k in mask else v) for k, v in weights.items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["imp", "imp_wr", "imp_lrr"])
def test_rewinding_semantics(tmp_path, method):
    run, rec, trainer = train(tmp_path, method)
    l0, l1 = run.levels
    assert set(rec.levels) == {l0.level_id, l1.level_id}
    init = ckpt.load_weights(LevelDir(tmp_path / l0.level_id).init)["model"]
    trained0 = final(tmp_path, l0.level_id)["model"]
    # Re-create level 1's starting point from the files the run left.
    mask, opt, start = trainer._prepare(l1, LevelDir(tmp_path / l1.level_id))
    begin = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    if method == "imp_wr":
        snap = ckpt.load_weights(LevelDir(tmp_path / l0.level_id).snapshot(K))
        assert snap["step"] == K and snap["optimizer"]["state"]
        assert not _equal(snap["model"], init) and not _equal(snap["model"], trained0)
        expected = snap["model"]
        assert start == K and not opt.state_dict()["state"]  # the papers: a fresh optimizer at k
    else:
        expected = {"imp": init, "imp_lrr": trained0}[method]
        assert start == 0
    assert _equal(begin, _masked(expected, mask))
    steps_per_epoch = rec.epochs[0][2]["steps"]
    level1 = [m for lid, _, m in rec.epochs if lid == l1.level_id]
    level0 = [m for lid, _, m in rec.epochs if lid == l0.level_id]
    if method == "imp_wr":  # replays the schedule (and data order) from step k, not from 0
        assert level1[0]["steps"] == steps_per_epoch - K
    else:  # the whole schedule again (LRR: same weights, learning rate restarted)
        assert level1[0]["steps"] == steps_per_epoch
    assert [m["lr"] for m in level1] == pytest.approx([m["lr"] for m in level0])


def test_rewind_optimizer_restores_step_k_momentum(tmp_path):
    run, _, trainer = train(tmp_path, "imp_wr", **{"prune.rewind_optimizer": True})
    _, opt, start = trainer._prepare(run.levels[1], LevelDir(tmp_path / run.levels[1].level_id))
    snap = ckpt.load_weights(LevelDir(tmp_path / run.levels[0].level_id).snapshot(K))
    assert start == K and opt.state_dict()["state"]
    for k, v in opt.state_dict()["state"].items():
        assert torch.equal(v["momentum_buffer"], snap["optimizer"]["state"][k]["momentum_buffer"])


def test_masked_weights_stay_zero_and_sparsity_is_exact(tmp_path):
    run, rec, _ = train(tmp_path, "imp", sparsities=(0.5, 0.7))  # trunk 0.5, branch to 0.3
    assert [lv.kind for lv in run.levels] == ["dense", "trunk", "branch"]
    for lv in run.levels:
        f = final(tmp_path, lv.level_id)
        for name, m in f["mask"].items():
            assert torch.count_nonzero(f["model"][name][~m]) == 0, (lv.kind, name)
        assert rec.levels[lv.level_id]["achieved_sparsity"] == pytest.approx(1 - lv.density, abs=1e-3)
    branch, trunk1 = run.levels[2], run.levels[1]
    assert branch.parent == trunk1.level_id
    m_branch, m_trunk = final(tmp_path, branch.level_id)["mask"], final(tmp_path, trunk1.level_id)["mask"]
    assert all(not (m_branch[k] & ~m_trunk[k]).any() for k in m_branch)  # pruned from its parent


def test_oneshot_prunes_at_init_and_trains_once(tmp_path):
    run, rec, _ = train(tmp_path, "snip", sparsities=(0.9,))
    (lv,) = run.levels
    assert lv.kind == "oneshot" and list(rec.levels) == [lv.level_id]
    assert rec.levels[lv.level_id]["achieved_sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert LevelDir(tmp_path / lv.level_id).mask.exists() and LevelDir(tmp_path / lv.level_id).init.exists()


@pytest.mark.parametrize("method", ["imp", "imp_wr", "imp_lrr", "random"])
def test_a_level_is_the_same_computation_in_any_job(tmp_path, method):
    """Grid independence, bit for bit: the level serving 0.9 of a {0.9} run and of a
    {0.5, 0.8, 0.9} run (which trains other levels in between) has the same id and weights."""
    alone, _, _ = train(tmp_path / "alone", method, sparsities=(0.9,), **{"schedule.epochs": 1})
    grid, _, _ = train(tmp_path / "grid", method, sparsities=(0.5, 0.8, 0.9), **{"schedule.epochs": 1})
    lid = alone.serving[0.9].level_id
    assert grid.serving[0.9].level_id == lid and len(grid.levels) > len(alone.levels)
    a, b = final(tmp_path / "alone", lid), final(tmp_path / "grid", lid)
    assert _equal(a["model"], b["model"]) and _equal(a["mask"], b["mask"])


def test_a_missing_rewind_snapshot_is_replayed_exactly(tmp_path):
    """Level 0 trained without knowing about imp_wr (say, for imp): the snapshot at step k is
    replayed from init when imp_wr needs it, and equals the one written while training."""
    ref, _, _ = train(tmp_path / "ref", "imp_wr", snapshots=True)
    run, _, _ = train(tmp_path / "late", "imp_wr", snapshots=False)
    root, lv1 = run.levels[0].level_id, run.levels[1].level_id
    a = ckpt.load_weights(LevelDir(tmp_path / "ref" / root).snapshot(K))
    b = ckpt.load_weights(LevelDir(tmp_path / "late" / root).snapshot(K))
    assert _equal(a["model"], b["model"])
    assert _equal(final(tmp_path / "ref", lv1)["model"], final(tmp_path / "late", lv1)["model"])


def test_finished_levels_are_reported_not_retrained(tmp_path):
    run, first, _ = train(tmp_path, "imp")
    before = {lv.level_id: LevelDir(tmp_path / lv.level_id).final.stat().st_mtime_ns for lv in run.levels}
    _, again, _ = train(tmp_path, "imp")
    assert again.epochs == [] and set(again.levels) == set(first.levels)
    assert again.levels[run.levels[1].level_id]["test_acc"] == first.levels[run.levels[1].level_id]["test_acc"]
    assert before == {lid: LevelDir(tmp_path / lid).final.stat().st_mtime_ns for lid in before}
    result = json.loads(LevelDir(tmp_path / run.levels[1].level_id).metrics.read_text())
    assert result["level_id"] == run.levels[1].level_id and len(result["history"]) == 2


def test_dry_run_epochs_are_the_epochs_imp_wr_levels_record(tmp_path):
    """An imp_wr level resumes the schedule at its rewind point: the plan counts (launch --dry-run's
    `epochs`, status's epochs left) what the levels then record, not a full schedule each."""
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.spec import parse_spec

    spec = {
        "name": "wr",
        "trainer": {
            "config": "digits_mlp",
            "overrides": {
                "schedule.epochs": 3,
                "model.hidden": [32],
                "data.batch_size": 256,
                "prune.rate": 0.5,
                "prune.rewind_epochs": 2,
            },
        },
        "grid": {"method": ["imp_wr"], "sparsity": [0.5, 0.7], "seed": [0]},
    }
    plan = plan_sweep(parse_spec(spec, "wr"))
    counts = plan.counts()
    levels = list(plan.levels.values())
    for lv in levels:
        write_json_atomic(LevelDir(tmp_path / lv.level_id).description, lv.description())
    rec = ListRecorder()
    LevelTrainer(levels[0].train, tmp_path, INFO, rec, StopFlag(INFO)).run(levels, plan.snapshots)
    recorded = {lid: r["epochs"] for lid, r in rec.levels.items()}
    assert recorded == {lv.level_id: 3 if lv.parent is None else 1 for lv in levels}
    assert counts["epochs"] == sum(recorded.values()) == 5
    assert counts["naive_epochs"] == (3 + 1) + (3 + 1 + 1)  # 0.5: trunk 1; 0.7: a branch from it


def test_prunable_and_whole_network_sparsity_both_counted(tmp_path):
    """keep_first_last_dense and prune.layers_to_ignore keep layers dense: the network is then
    denser than its prunable weights, and each level records both sparsities, its nonzero
    parameters and its multiply-adds. A 64-32-16-10 MLP: 2048 + 512 + 160 weights, 58 biases."""
    from trainer.pruning.masks import ignored_names

    total, macs = 2048 + 512 + 160 + 58, 2048 + 512 + 160
    cases = [
        ({"prune.keep_first_last_dense": True}, 512 // 2),  # only 32x16 prunable
        ({"prune.layers_to_ignore": ["<last>"]}, (2048 + 512) // 2),  # all but 16x10
        ({"prune.layers_to_ignore": ["1", "5.weight"]}, 512 // 2),
    ]  # module and weight names
    for over, zeros in cases:
        run, rec, _ = train(
            tmp_path, "imp", sparsities=(0.5,), **{"model.hidden": [32, 16], "schedule.epochs": 1, **over}
        )
        res = rec.levels[run.levels[-1].level_id]
        assert res["achieved_sparsity"] == 0.5, over
        assert res["params"] == total and res["nonzero_params"] == total - zeros, over
        assert res["network_sparsity"] == pytest.approx(zeros / total), over
        assert (res["flops_dense"], res["flops"]) == (macs, macs - zeros), over
    # a pattern that names nothing is an error, not a silent no-op
    with pytest.raises(ValueError, match="'fcc' matches no conv or linear weight"):
        ignored_names(["1.weight", "3.weight"], ["fcc"])
    # unset, it is not in the step: every level planned before the option keeps its id
    assert "layers_to_ignore" not in plan_levels("imp", config("imp"), [0.5]).levels[1].step


@pytest.mark.parametrize("method", ["random", "random_erk", "random_balanced"])
def test_random_methods_train_only_what_serves_a_target_bit_for_bit(tmp_path, method):
    """A random mask reads only the mask before it and training restarts from init: the trunk
    levels that serve no target are not trained, their masks are drawn on the way, and every
    target's level ends with the masks and weights it had when the whole trunk trained."""
    sparsities = (0.5, 0.9)  # rate 0.5: trunk 1 serves 0.5; trunk 2 and 3 lead to the branch to 0.9
    whole, rec_whole, _ = train(tmp_path / "whole", method, sparsities, **{"schedule.epochs": 1})
    assert len(whole.mask_only) == 3  # level 0, trunk 2, trunk 3
    cfg = config(method, **{"schedule.epochs": 1})
    run = plan_levels(method, cfg, list(sparsities))
    for lv in run.levels:
        write_json_atomic(LevelDir(tmp_path / "lean" / lv.level_id).description, lv.description())
    rec = ListRecorder()
    LevelTrainer(run.levels[0].train, tmp_path / "lean", INFO, rec, StopFlag(INFO)).run(run.trained, {})
    assert sorted(rec.levels) == sorted(lv.level_id for lv in run.trained) and len(rec.levels) == 2
    for lv in run.serving.values():
        a, b = final(tmp_path / "whole", lv.level_id), final(tmp_path / "lean", lv.level_id)
        assert _equal(a["mask"], b["mask"]) and _equal(a["model"], b["model"]), lv.kind
        assert rec.levels[lv.level_id]["test_acc"] == rec_whole.levels[lv.level_id]["test_acc"]
    assert not LevelDir(tmp_path / "lean" / run.levels[2].level_id).final.exists()  # trunk 2: a mask only


def test_lottery_ticket_controls_reuse_imps_trunk_one_level_per_target(tmp_path):
    """imp_reinit trains IMP's mask from a fresh initialisation; imp_layerwise_random a random
    mask with IMP's weight count in every layer, from IMP's initialisation. Each is one level
    below the IMP level serving the target: IMP's levels are the very ones an imp run trains."""
    sparsities = (0.5, 0.8)  # rate 0.5: trunk 1 serves 0.5, a branch from trunk 2 serves 0.8
    one = {"schedule.epochs": 1}
    imp = plan_levels("imp", config("imp", **one), list(sparsities))
    for method in ("imp_reinit", "imp_layerwise_random"):
        run, rec, trainer = train(tmp_path, method, sparsities, **one)
        assert [lv.level_id for lv in run.levels[: len(imp.levels)]] == [lv.level_id for lv in imp.levels]
        assert len(run.levels) == len(imp.levels) + 2 and run.mask_only == set()
        init = ckpt.load_weights(LevelDir(tmp_path / run.levels[0].root).init)["model"]
        for s in sparsities:
            c, base = run.serving[s], imp.serving[s]
            assert (c.kind, c.parent, c.depth) == ("control", base.level_id, base.depth + 1)
            assert c.density == base.density
            mine, theirs = final(tmp_path, c.level_id)["mask"], final(tmp_path, base.level_id)["mask"]
            assert all(int(mine[n].sum()) == int(theirs[n].sum()) for n in theirs)  # IMP's per-layer counts
            assert rec.levels[c.level_id]["achieved_sparsity"] == pytest.approx(s, abs=1e-3)
            start = ckpt.load_weights(LevelDir(tmp_path / c.level_id).mask)["mask"]
            if method == "imp_reinit":
                assert _equal(mine, theirs)  # IMP's very mask...
                fresh = trainer._fresh_init(c.step["init_seed"])
                assert not torch.equal(fresh["1.weight"], init["1.weight"])  # ...from another init
            else:
                assert not _equal(mine, theirs) and _equal(start, mine)  # a redrawn mask
    assert (
        len(
            {lv.level_id for lv in plan_levels("imp_reinit", config("imp_reinit", seed=1), [0.5]).levels}
            & {lv.level_id for lv in imp.levels}
        )
        == 0
    )  # another seed: other levels (and init)
