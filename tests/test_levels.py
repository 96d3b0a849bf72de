"""The levels loop in one process: rewinding semantics of imp, imp_wr and imp_lrr, masks held at
zero, and the schedule each level trains with."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from trainer import checkpoint as ckpt
from trainer.config import resolve
from trainer.distributed import DistInfo, StopFlag
from trainer.levels import LevelRunner, RunDesc
from trainer.pruning.registry import get_method
from trainer.pruning.schedule import level_densities

INFO = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
K = 3  # imp_wr rewind point, in iterations


class ListRecorder:
    """Keeps what the trainer reports, as the store would."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, int, dict[str, Any]]] = []
        self.levels: dict[int, dict[str, Any]] = {}

    def heartbeat(self, level: int, epoch: int) -> None: ...

    def log_epoch(self, level: int, epoch: int, metrics: dict[str, Any]) -> None:
        self.epochs.append((level, epoch, metrics))

    def finish_level(self, level: int, metrics: dict[str, Any]) -> None:
        self.levels[level] = metrics


def make_runner(tmp: Path, method: str, sparsities=(0.5,), **over) -> tuple[LevelRunner, ListRecorder]:
    cfg = resolve("digits_mlp", {"method": method, "seed": 0, "schedule.epochs": 2,
                                 "model.hidden": [32], "data.batch_size": 128, "prune.rate": 0.5,
                                 "prune.rewind_iterations": K, **over})
    densities = level_densities(get_method(method), list(sparsities), 0.5)
    rec = ListRecorder()
    desc = RunDesc("test", method, 0, list(sparsities), densities, cfg)
    return LevelRunner(desc, tmp, INFO, rec, StopFlag(INFO)), rec


def _masked(weights: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v * mask[k] if k in mask else v) for k, v in weights.items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["imp", "imp_wr", "imp_lrr"])
def test_rewinding_semantics(tmp_path, method):
    runner, rec = make_runner(tmp_path, method)
    runner.run()
    assert sorted(rec.levels) == [0, 1]
    init = ckpt.load(tmp_path / "init.pt")["model"]
    trained0 = ckpt.load(tmp_path / "level_0/final.pt")["model"]
    mask = ckpt.load(tmp_path / "level_1/mask.pt")
    # Re-create level 1's starting point from the files the run left.
    runner._prepare_level(1, runner.desc.densities[1])
    start = {k: v.clone() for k, v in runner.model.state_dict().items()}
    expected = {"imp": init, "imp_lrr": trained0,
                "imp_wr": ckpt.load(tmp_path / "rewind.pt")["model"] if method == "imp_wr" else None}[method]
    assert _equal(start, _masked(expected, mask))
    if method == "imp_wr":
        snap = ckpt.load(tmp_path / "rewind.pt")
        assert snap["step"] == K and snap["optimizer"]["state"]  # momentum buffers came along
        assert not _equal(snap["model"], init) and not _equal(snap["model"], trained0)
    steps_per_epoch = rec.epochs[0][2]["steps"]
    level1 = [m for lvl, _, m in rec.epochs if lvl == 1]
    level0 = [m for lvl, _, m in rec.epochs if lvl == 0]
    if method == "imp_wr":  # replays the schedule from step k, not from 0
        assert level1[0]["steps"] == steps_per_epoch - K
    else:  # the whole schedule again (LRR: same weights, learning rate restarted)
        assert level1[0]["steps"] == steps_per_epoch
    assert [m["lr"] for m in level1] == pytest.approx([m["lr"] for m in level0])


def test_masked_weights_stay_zero_and_sparsity_is_exact(tmp_path):
    runner, rec = make_runner(tmp_path, "imp", sparsities=(0.5, 0.75))
    runner.run()
    for level, density in enumerate(runner.desc.densities):
        final = ckpt.load(tmp_path / f"level_{level}/final.pt")
        for name, m in final["mask"].items():
            assert torch.count_nonzero(final["model"][name][~m]) == 0, (level, name)
        assert rec.levels[level]["achieved_sparsity"] == pytest.approx(1 - density, abs=1e-3)


def test_oneshot_prunes_at_init_and_trains_once(tmp_path):
    runner, rec = make_runner(tmp_path, "snip", sparsities=(0.9,))
    runner.run()
    assert list(rec.levels) == [0]
    assert rec.levels[0]["achieved_sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert (tmp_path / "level_0/mask.pt").exists()


def test_results_are_deterministic(tmp_path):
    a, _ = make_runner(tmp_path / "a", "random", sparsities=(0.5,))
    b, _ = make_runner(tmp_path / "b", "random", sparsities=(0.5,))
    a.run()
    b.run()
    wa = ckpt.load(tmp_path / "a/level_1/final.pt")
    wb = ckpt.load(tmp_path / "b/level_1/final.pt")
    assert _equal(wa["model"], wb["model"]) and _equal(wa["mask"], wb["mask"])
