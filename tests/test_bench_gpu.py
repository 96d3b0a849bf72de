"""bench/bench_gpu.py stays runnable (its --dry-run, on the CPU), and its device-resident data set
(synthetic_gpu) behaves like the in-memory ones: fixed per pass, DDP-exact, FFCV's layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from trainer.data import DATASETS, DataError, LoaderContext, build_loaders

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = {
    "name": "synthetic_gpu",
    "batch_size": 8,
    "shape": [3, 12, 10],
    "classes": 1000,
    "size": 30,
    "test_size": 11,
    "test_batch_size": 4,
}


def test_synthetic_gpu_batches():
    assert "synthetic_gpu" in DATASETS
    loaders = build_loaders(CFG, LoaderContext(seed=3))
    assert (loaders.num_classes, loaders.input_shape, len(loaders.train)) == (1000, (3, 12, 10), 3)
    loaders.train.set_epoch(5)
    batches = list(loaders.train)
    x, y = batches[0]
    assert x.shape == (8, 3, 12, 10) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)  # the trainer's conversion is free
    assert 0 <= int(y.min()) and int(y.max()) < 1000 and x.std() > 0.5  # normalised random images
    loaders.train.set_epoch(5)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, loaders.train))
    loaders.train.set_epoch(6)
    assert not torch.equal(next(iter(loaders.train))[0], x)
    assert [len(b[1]) for b in loaders.test] == [4, 4, 3]


def test_synthetic_gpu_ddp_is_one_process():
    one = build_loaders(CFG, LoaderContext(seed=1))
    ranks = [build_loaders(CFG, LoaderContext(rank=r, world_size=2, seed=1)) for r in range(2)]
    for lo in [one, *ranks]:
        lo.train.set_epoch(2)
    for full, *parts in zip(one.train, *(r.train for r in ranks)):
        assert torch.equal(torch.cat([p[0] for p in parts]), full[0])
        assert torch.equal(torch.cat([p[1] for p in parts]), full[1])
    seen = torch.cat([y for r in ranks for _, y in r.test])
    assert sorted(seen.tolist()) == sorted(torch.cat([y for _, y in one.test]).tolist())


@pytest.mark.parametrize("bad", [{"shape": [3, 8]}, {"size": 4}, {"mean": [1.0, 2.0]}])
def test_synthetic_gpu_bad_config(bad):
    with pytest.raises(DataError):
        build_loaders({**CFG, **bad}, LoaderContext())


@pytest.mark.slow
def test_bench_gpu_dry_run(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "bench/bench_gpu.py", "--dry-run", "--out", str(out)],
        cwd=REPO,
        env=env,
        text=True,
        capture_output=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "synthetic_gpu" in proc.stdout and "DRY RUN" in proc.stdout
    rep = json.loads(out.read_text())
    assert rep["dry_run"] and rep["forbidden_imported"] == []  # nothing a GPU machine lacks
    assert rep["settings"]["steps_per_epoch"] > 0 and rep["env"]["torch"] == torch.__version__
    eager, compiled = rep["throughput"]
    assert (eager["model"], eager["compile"], eager["status"]) == ("resnet18", False, "ok")
    for key in (
        "trainer_images_per_s",
        "trainer_in_loop_images_per_s",
        "plain_images_per_s",
        "ratio",
        "ratio_imagenet_epoch",
        "checkpoint_s",
        "checkpoint_mb",
        "train_gflop_per_image",
        "trainer_tflops",
    ):
        assert eager[key] > 0, key
    assert eager["fraction_of_datasheet_peak"] is None  # a CPU has no datasheet bf16 peak here
    assert len(eager["trainer_epoch_s"]) == len(eager["plain_epoch_s"]) == rep["settings"]["epochs"] - 1
    assert (compiled["compile"], compiled["status"]) == (True, "skipped")
    imp = rep["imp"]
    assert imp["status"] == "ok" and [lv["kind"] for lv in imp["levels"]] == ["dense", "trunk"]
    assert imp["levels"][0]["achieved_sparsity"] == 0.0
    assert abs(imp["levels"][1]["achieved_sparsity"] - 0.2) < 1e-4
    assert imp["prune_s"] > 0 and imp["levels"][1]["images_per_s_last_epoch"] > 0
    assert {"checkpoint.pt", "init.pt", "mask.pt", "final.pt"} <= set(imp["writes"])
    assert rep["job"]["status"] == "ok" and rep["job"]["state"] == "COMPLETED" and rep["job"]["ok"]
    # CIFAR-shaped levels on the device loader, and the asynchronous checkpoint's ratios
    assert [(r["model"], r["status"]) for r in rep["cifar"]] == [("resnet20", "ok"), ("vgg16_bn", "ok")]
    for r in rep["cifar"]:
        assert r["images_per_s"] > 0 and r["trainer_tflops"] > 0 and r["steps_per_epoch"] == 4
        assert r["fraction_of_datasheet_peak"] is None  # no datasheet peak on a CPU
    ck = rep["async_checkpoint"]
    assert ck["status"] == "ok" and ck["model"] == "resnet18"
    for key in ("ratio_async", "ratio_sync", "checkpoint_s_async", "checkpoint_s_sync", "checkpoint_write_s"):
        assert ck[key] > 0, key
    assert "CIFAR resnet20 (device loader" in proc.stdout and "written in the background" in proc.stdout
