"""GPU benchmark of the real levels loop: images/s per GPU, trainer against a plain loop.

    python bench/bench_gpu.py                     # everything, within 6 minutes on one H100/H200
    python bench/bench_gpu.py --models resnet50 --no-compile --steps 50
    python bench/bench_gpu.py --dry-run           # tiny sizes on the CPU: what the tests run

Needs only what a GPU machine without internet has (torch, torchvision, numpy, pyyaml) and this
repository: no FFCV (it cannot be built there), no store, no Slurm, no hydra; the report lists
any such module that got imported, and the run fails if one did. The data are therefore synthetic and
GPU-resident (`synthetic_gpu`, trainer/data/device_synthetic.py): random uint8 images drawn once
on the device, gathered and normalised there per batch, so the loader costs next to nothing and
the figures are the model step's. No JPEG decoding is measured.

1. Throughput, per model (ResNet-50, ResNet-18 at 176 px, ImageNet's training resolution), with
   and without torch.compile:
   `trainer.level_trainer.LevelTrainer` trains one dense level (the real levels loop: LR
   schedule, mask hook, on-device metrics, a checkpoint after every epoch) on imagenet_rn50's
   config with bf16 autocast and channels_last; its images/s are the epochs' wall time between
   the trainer's per-epoch reports, which includes what the previous epoch's checkpoint costs the
   loop (the host copy; the write runs in the background) and excludes evaluation (one batch,
   last epoch only). Epoch 0 (warm-up, compile) is dropped. Against it, a plain hand-written
   loop (autocast, SGD with momentum, zero_grad, backward, step) on the same batches, model init
   and compile setting, timed with device synchronisation over the same measured epochs. Goals:
   ResNet-50 >= 6,000 images/s per GPU, trainer/plain >= 0.95.
2. CIFAR-shaped levels (ResNet-20, VGG-16 with batch norm): a dense level through the trainer
   on the device-resident CIFAR loader (`data.loader: device`: uint8 images on the device,
   flipped and translated there per batch) over random 32 px images written in CIFAR's own
   format (50,000, batch 512): images/s, TFLOP/s and the fraction of the bf16 peak above.
3. The asynchronous checkpoint: trainer over plain loop on 100-step epochs of the first model
   (eager), the epoch checkpoint written by the background writer (the trainer as it is) and,
   for comparison, written before training goes on (`SyncTimedTrainer`); with each, the seconds
   the checkpoint holds the loop up, and the background write's own seconds.
4. A 2-level IMP run (prune.rate 0.2: dense level 0, then level 1 at 80 % density by global
   magnitude, rewound to init): the pruning step, every file write, and each level's images/s.
5. The job entry on the device: `torchrun -m trainer.job` on a 2-level IMP job (it replaces the
   old gpu_smoke.py, which needed hydra), COMPLETED with the achieved sparsity checked.

One process on one GPU, so no DDP wrapper or all-reduce is timed. Results go to --out (JSON,
rewritten after every section, so a run cut short keeps what it measured).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from gpu_report import (  # noqa: E402
    DATA_NOTE,
    IMAGENET_TRAIN,
    RATIO_GOAL,
    RN50_GOAL,
    datasheet_tflops,
    environment,
    error_text,
    forbidden_imported,
    fs_type,
    matmul_tflops,
    print_report,
    train_flops_per_image,
)
from torch import nn  # noqa: E402

from core.atomic import write_json_atomic  # noqa: E402
from core.config import resolve  # noqa: E402
from core.layout import LevelDir  # noqa: E402
from core.levels import content_hash, plan_levels  # noqa: E402
from trainer.distributed import DistInfo, StopFlag  # noqa: E402
from trainer.level_trainer import LevelTrainer, Stopped  # noqa: E402
from trainer.models import build_model  # noqa: E402


class Recorder:
    """The trainer's per-epoch reports, stamped with the host clock (the device is idle then:
    the epoch's metrics were just copied to the host)."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.results: dict[str, dict[str, Any]] = {}

    def heartbeat(self, level_id: str, epoch: int) -> None: ...

    def log_epoch(self, level_id: str, epoch: int, metrics: dict[str, Any]) -> None:
        self.epochs.append({"level": level_id, "epoch": epoch, "t": time.perf_counter(), **metrics})

    def finish_level(self, level_id: str, result: dict[str, Any]) -> None:
        self.results[level_id] = result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class TimedTrainer(LevelTrainer):
    """LevelTrainer unchanged, with clocks around the steps the benchmark reports."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.timings: dict[str, list[float]] = defaultdict(list)
        self.sizes: dict[str, int] = {}

    def _clock(self, what: str, fn, *args: Any) -> Any:
        _sync(self.info.device)
        t0 = time.perf_counter()
        out = fn(*args)
        _sync(self.info.device)
        self.timings[what].append(time.perf_counter() - t0)
        return out

    def _save(self, obj: Any, path: Path) -> None:
        name = Path(path).name
        if threading.current_thread() is threading.main_thread():
            self._clock(f"write {name}", super()._save, obj, path)
        else:  # the background checkpoint writer: host memory to disk, no device work to wait for
            t0 = time.perf_counter()
            super()._save(obj, path)
            self.timings[f"write {name}"].append(time.perf_counter() - t0)
        self.sizes[name] = Path(path).stat().st_size

    def _checkpoint(self, *args: Any, **kw: Any) -> None:  # the critical path: wait, host copy, hand-off
        self._clock("checkpoint", lambda: super(TimedTrainer, self)._checkpoint(*args, **kw))

    def _prune(self, level, mask):
        return self._clock("prune", super()._prune, level, mask)

    def _prepare(self, level, d):
        return self._clock("prepare level", super()._prepare, level, d)

    def run_level(self, level, snapshots=()) -> None:
        self._clock(f"level {level.depth}", super().run_level, level, snapshots)

    def _epoch_metrics(self, net, res, epoch):
        t0 = time.perf_counter()  # evaluation ends with a host copy: the clock needs no sync
        metrics = super()._epoch_metrics(net, res, epoch)
        metrics["eval_s"] = time.perf_counter() - t0
        return metrics


class SyncTimedTrainer(TimedTrainer):
    """Every checkpoint written before training goes on, as before the background writer."""

    def _checkpoint(self, *args: Any, **kw: Any) -> None:
        super()._checkpoint(*args, **{**kw, "wait": True})


def make_config(
    a: argparse.Namespace, model: str, compile_: bool, epochs: int, steps: int, method: str = "dense"
) -> dict[str, Any]:
    data = {
        "name": "synthetic_gpu",
        "batch_size": a.batch_size,
        "test_batch_size": a.batch_size,
        "shape": [3, a.resolution, a.resolution],
        "classes": 1000,
        "size": steps * a.batch_size,
        "test_size": a.batch_size,
        "data_seed": 0,
    }
    base = resolve("imagenet_rn50")
    return resolve(
        "imagenet_rn50",
        {
            "method": method,
            "model.name": model,
            "data": data,
            "schedule.epochs": epochs,
            "schedule.peak_epoch": min(2, epochs),
            "optimizer.lr": base["optimizer"]["lr"] * a.batch_size / base["data"]["batch_size"],
            "train.compile": compile_,
            "train.precision": a.precision,
            "train.channels_last": True,
            "train.eval_every": epochs,
            "prune.rate": 0.2,
        },
    )


def plain_loop(a: argparse.Namespace, cfg: dict[str, Any], loader, device: torch.device) -> list[float]:
    """Seconds per measured epoch of a minimal loop on the trainer's own batches."""
    torch.manual_seed(int(cfg["seed"]))  # the trainer's initial weights
    model = build_model(cfg["model"], 1000, (3, a.resolution, a.resolution)).to(device)
    model = model.to(memory_format=torch.channels_last)
    o = cfg["optimizer"]
    opt = torch.optim.SGD(model.parameters(), lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg["train"]["label_smoothing"])
    net = torch.compile(model) if cfg["train"]["compile"] else model
    bf16 = a.precision == "bf16" or (a.precision == "auto" and device.type == "cuda")
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    loader.set_epoch(0)
    for i, (x, y) in enumerate(loader):  # warm-up: compile, cuDNN plans, the allocator
        if i >= a.warmup_steps:
            break
        step(x, y)
    times = []
    for epoch in range(1, int(cfg["schedule"]["epochs"])):
        loader.set_epoch(epoch)
        _sync(device)
        t0 = time.perf_counter()
        for x, y in loader:
            step(x, y)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _mem_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def plant(levels, levels_dir: Path) -> Path:
    """Each level's level.json, as a launch writes it: a trainer refuses a folder without one."""
    for lv in levels:
        write_json_atomic(LevelDir(levels_dir / lv.level_id).description, lv.description())
    return levels_dir


def throughput(a, model: str, compile_: bool, device, stop, tmp: Path) -> dict[str, Any]:
    cfg = make_config(a, model, compile_, a.epochs, a.steps)
    level = plan_levels("dense", cfg, [0.0]).levels[0]
    rec = Recorder()
    root = plant([level], tmp / f"{model}_{compile_}")
    tr = TimedTrainer(level.train, root, DistInfo(0, 1, 0, device), rec, stop)
    print(
        f"[bench] {model} compile={compile_}: plain loop ({a.warmup_steps} warm-up steps, then "
        f"{a.epochs - 1} x {a.steps} steps)",
        flush=True,
    )
    plain = plain_loop(a, cfg, tr.loaders.train, device)
    _reset_compiler()  # the trainer compiles its own model from scratch, as a job would
    print(
        f"[bench] {model} compile={compile_}: trainer ({a.epochs} epochs x {a.steps} steps, epoch 0 dropped)",
        flush=True,
    )
    tr.run_level(level)
    eps = rec.epochs
    walls = _epoch_walls(rec)
    images = a.steps * a.batch_size
    t_ips = images * len(walls) / sum(walls)
    p_ips = images * len(plain) / sum(plain)
    # _checkpoint call k (k >= 1) ends epoch k-1: it lies inside measured interval k (call 0 is
    # the level's start). Without it, the per-image cost; with one per ImageNet epoch, the ratio a
    # real epoch (1.28 M images, not a few ten thousand) would see.
    ckpt = tr.timings["checkpoint"][1 : 1 + len(walls)]
    flops = train_flops_per_image(cfg["model"], a.resolution)
    tflops = t_ips * flops / 1e12
    peak, mm = getattr(a, "peak_tflops", None), getattr(a, "matmul_tflops", None)
    per_image = (sum(walls) - sum(ckpt)) / (images * len(walls))
    imagenet_ips = IMAGENET_TRAIN / (IMAGENET_TRAIN * per_image + statistics.mean(ckpt or [0.0]))
    return {
        "trainer_images_per_s": round(t_ips, 1),
        "trainer_in_loop_images_per_s": round(statistics.median(e["images_per_s"] for e in eps[1:]), 1),
        "plain_images_per_s": round(p_ips, 1),
        "ratio": round(t_ips / p_ips, 4),
        "ratio_imagenet_epoch": round(imagenet_ips / p_ips, 4),
        "trainer_epoch_s": [round(w, 3) for w in walls],
        "plain_epoch_s": [round(p, 3) for p in plain],
        "warmup_epoch_s": round(eps[0]["seconds"], 2),
        "eval_s": round(eps[-1]["eval_s"], 2),
        "checkpoint_s": round(statistics.mean(ckpt), 3) if ckpt else None,
        "checkpoint_write_s": _mean(tr.timings["write checkpoint.pt"]),
        "checkpoint_mb": round(tr.sizes.get("checkpoint.pt", 0) / 2**20, 1),
        "peak_mem_gb": _mem_gb(device),
        # Significant figures, not decimals: a CPU dry run does a few GFLOP/s, which two decimals
        # of TFLOP/s rounded to 0.0.
        "train_gflop_per_image": float(f"{flops / 1e9:.4g}"),
        "trainer_tflops": float(f"{tflops:.4g}"),
        "fraction_of_datasheet_peak": round(tflops / peak, 4) if peak else None,
        "fraction_of_matmul": round(tflops / mm, 4) if mm else None,
    }


def _mean(xs: list[float]) -> float | None:
    return round(statistics.mean(xs), 4) if xs else None


def _epoch_walls(rec: Recorder) -> list[float]:
    """Wall time of each epoch after the first, between the trainer's reports, less evaluation."""
    eps = rec.epochs
    return [e["t"] - prev["t"] - e["eval_s"] for prev, e in zip(eps, eps[1:])]


def write_synthetic_cifar(root: Path, size: int, test_size: int) -> Path:
    """A CIFAR-10 folder in the downloaded layout (data_batch_1..5, test_batch) of random images:
    what the device loader reads, at CIFAR's size on a GPU."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-size // 5)
    for name, n in [*((f"data_batch_{i}", per) for i in range(1, 6)), ("test_batch", test_size)]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    return folder


def cifar_config(a: argparse.Namespace, model: str, root: Path) -> dict[str, Any]:
    return resolve(
        "cifar10_resnet20",
        {
            "model.name": model,
            "data": {
                "name": "cifar10",
                "loader": "device",
                "root": str(root),
                "batch_size": a.cifar_batch_size,
                "test_batch_size": a.cifar_batch_size,
            },
            "schedule.epochs": a.epochs,
            "schedule.peak_epoch": min(2, a.epochs),
            "train.precision": a.precision,
            "train.channels_last": True,
            "train.eval_every": a.epochs,
        },
    )


def cifar_level(a, model: str, device, stop, tmp: Path) -> dict[str, Any]:
    """A dense CIFAR-shaped level through the real trainer on the device-resident CIFAR loader
    (flip and translate on the device), on random 32 px images in CIFAR's own format."""
    root = tmp / "cifar"
    if not root.exists():
        write_synthetic_cifar(root, a.cifar_size, a.cifar_batch_size)
    cfg = cifar_config(a, model, root)
    level = plan_levels("dense", cfg, [0.0]).levels[0]
    rec = Recorder()
    tr = TimedTrainer(level.train, plant([level], tmp / f"cifar_{model}"), DistInfo(0, 1, 0, device), rec, stop)
    steps = tr.steps_per_epoch
    print(f"[bench] CIFAR {model}: {a.epochs} epochs x {steps} steps of {a.cifar_batch_size} (epoch 0 dropped)")
    tr.run_level(level)
    walls = _epoch_walls(rec)
    ips = steps * a.cifar_batch_size * len(walls) / sum(walls)
    flops = train_flops_per_image(cfg["model"], 32, classes=10)
    tflops = ips * flops / 1e12
    peak, mm = getattr(a, "peak_tflops", None), getattr(a, "matmul_tflops", None)
    return {
        "loader": "device (cifar10, data.loader: device)",
        "batch_size": a.cifar_batch_size,
        "steps_per_epoch": steps,
        "images_per_s": round(ips, 1),
        "in_loop_images_per_s": round(statistics.median(e["images_per_s"] for e in rec.epochs[1:]), 1),
        "epoch_s": [round(w, 3) for w in walls],
        "checkpoint_s": _mean(tr.timings["checkpoint"][1:]),
        "peak_mem_gb": _mem_gb(device),
        "train_gflop_per_image": float(f"{flops / 1e9:.4g}"),
        "trainer_tflops": float(f"{tflops:.4g}"),
        "fraction_of_datasheet_peak": round(tflops / peak, 4) if peak else None,
        "fraction_of_matmul": round(tflops / mm, 4) if mm else None,
    }


def async_checkpoint(a, model: str, device, stop, tmp: Path) -> dict[str, Any]:
    """Trainer over plain loop on --steps-step epochs (eager), with the epoch checkpoint written in
    the background (the trainer as it is) and, for comparison, written before training goes on."""
    cfg = make_config(a, model, False, a.epochs, a.steps)
    level = plan_levels("dense", cfg, [0.0]).levels[0]
    out: dict[str, Any] = {"steps_per_epoch": a.steps}
    plain = None
    for name, cls in (("async", TimedTrainer), ("sync", SyncTimedTrainer)):
        rec = Recorder()
        tr = cls(level.train, plant([level], tmp / f"ckpt_{name}"), DistInfo(0, 1, 0, device), rec, stop)
        if plain is None:
            print(f"[bench] checkpoint {model}: plain loop, then the trainer, async and sync", flush=True)
            plain = plain_loop(a, cfg, tr.loaders.train, device)
        tr.run_level(level)
        walls = _epoch_walls(rec)
        out[f"ratio_{name}"] = round(sum(plain) / len(plain) / (sum(walls) / len(walls)), 4)
        out[f"checkpoint_s_{name}"] = _mean(tr.timings["checkpoint"][1:])  # on the critical path
        out[f"trainer_epoch_s_{name}"] = [round(w, 3) for w in walls]
        out["checkpoint_write_s"] = _mean(tr.timings["write checkpoint.pt"])
        out["checkpoint_mb"] = round(tr.sizes.get("checkpoint.pt", 0) / 2**20, 1)
        _free(device)
    out["plain_epoch_s"] = [round(p, 3) for p in plain or []]
    return out


def imp_run(a, device, stop, tmp: Path) -> dict[str, Any]:
    cfg = make_config(a, a.imp_model, a.imp_compile, 2, a.imp_steps, method="imp")
    levels = plan_levels("imp", cfg, [0.2]).levels
    assert [lv.kind for lv in levels] == ["dense", "trunk"], [lv.kind for lv in levels]
    rec = Recorder()
    tr = TimedTrainer(levels[0].train, plant(levels, tmp / "imp"), DistInfo(0, 1, 0, device), rec, stop)
    print(
        f"[bench] IMP {a.imp_model} compile={a.imp_compile}: 2 levels x 2 epochs x {a.imp_steps} steps", flush=True
    )
    tr.run(levels, {})
    out: dict[str, Any] = {
        "model": a.imp_model,
        "compile": a.imp_compile,
        "steps_per_epoch": a.imp_steps,
        "epochs_per_level": 2,
        "levels": [],
    }
    for lv in levels:
        eps = [e for e in rec.epochs if e["level"] == lv.level_id]
        wall = tr.timings[f"level {lv.depth}"][0]
        busy = sum(e["seconds"] + e["eval_s"] for e in eps)
        out["levels"].append(
            {
                "depth": lv.depth,
                "kind": lv.kind,
                "density": lv.density,
                "achieved_sparsity": rec.results[lv.level_id]["achieved_sparsity"],
                "images_per_s_last_epoch": round(eps[-1]["images_per_s"], 1),
                "wall_s": round(wall, 2),
                "train_and_eval_s": round(busy, 2),
                "other_s": round(wall - busy, 2),
            }
        )  # set-up, pruning, loads, every file write
    out["prune_s"] = round(sum(tr.timings["prune"]), 3)
    out["prepare_level1_s"] = round(tr.timings["prepare level"][-1], 3)  # load parent, prune, mask, rewind
    out["writes"] = {
        k.split(" ", 1)[1]: {
            "count": len(v),
            "total_s": round(sum(v), 3),
            "mb": round(tr.sizes.get(k.split(" ", 1)[1], 0) / 2**20, 1),
        }
        for k, v in sorted(tr.timings.items())
        if k.startswith("write ")
    }
    out["checkpoint_total_s"] = round(sum(tr.timings["checkpoint"]), 3)
    l0, l1 = out["levels"]
    out["level1_vs_level0"] = round(l1["images_per_s_last_epoch"] / l0["images_per_s_last_epoch"], 4)
    return out


def job_smoke(a, tmp: Path) -> dict[str, Any]:
    """`torchrun -m trainer.job` on a tiny 2-level IMP job, as a scheduler would start it."""
    small = {"batch_size": min(a.batch_size, 32), "resolution": min(a.resolution, 32)}
    cfg = make_config(argparse.Namespace(**{**vars(a), **small}), "resnet18", False, 1, 2, method="imp")
    levels = plan_levels("imp", cfg, [0.2]).levels
    levels_dir = plant(levels, tmp / "job" / "levels")
    ids = [lv.level_id for lv in levels]
    job_file = tmp / "job" / "jobs" / "smoke.json"
    write_json_atomic(
        job_file,
        {"job_id": content_hash({"levels": ids}), "levels_dir": str(levels_dir), "levels": ids, "snapshots": {}},
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if a.device.type == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # init_distributed picks the GPU whenever it sees one
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=1",
            "-m",
            "trainer.job",
            str(job_file),
        ],
        cwd=REPO,
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
    )
    status_file = job_file.with_name("smoke.status.json")
    if not status_file.exists():  # the job died before it could say anything: show why
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
        raise RuntimeError(f"torchrun exited {proc.returncode} without a job status")
    status = json.loads(status_file.read_text())
    result = (
        json.loads((levels_dir / ids[-1] / "metrics.json").read_text()) if status["state"] == "COMPLETED" else {}
    )
    sparsity = result.get("achieved_sparsity")
    ok = proc.returncode == 0 and sparsity is not None and abs(sparsity - 0.2) < 1e-4
    if not ok:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
    return {
        "state": status["state"],
        "message": status.get("message"),
        "exit": proc.returncode,
        "achieved_sparsity": sparsity,
        "ok": ok,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _reset_compiler() -> None:
    if "torch._dynamo" in sys.modules:  # importing it only to reset it costs seconds
        sys.modules["torch._dynamo"].reset()


def _free(device: torch.device) -> None:
    gc.collect()
    _reset_compiler()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet50,resnet18")
    ap.add_argument("--no-compile", action="store_true", help="eager only (skip the torch.compile rows)")
    ap.add_argument("--steps", type=int, default=100, help="steps per epoch")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per measurement; epoch 0 is dropped")
    ap.add_argument("--batch-size", type=int, default=256, help="per GPU")
    ap.add_argument("--resolution", type=int, default=176)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32", "auto"])
    ap.add_argument("--warmup-steps", type=int, default=25, help="plain loop's warm-up steps")
    ap.add_argument("--imp-model", default="resnet50")
    ap.add_argument(
        "--imp-compile",
        action="store_true",
        help="IMP with torch.compile (default eager, as imagenet_rn50 is configured)",
    )
    ap.add_argument("--imp-steps", type=int, default=60)
    ap.add_argument("--no-imp", action="store_true")
    ap.add_argument("--no-job", action="store_true", help="skip the torchrun job-entry check")
    ap.add_argument("--cifar-models", default="resnet20,vgg16_bn", help="CIFAR-shaped levels ('' to skip)")
    ap.add_argument("--cifar-size", type=int, default=50_000, help="CIFAR train images (device-resident)")
    ap.add_argument("--cifar-batch-size", type=int, default=512)
    ap.add_argument("--no-async-checkpoint", action="store_true", help="skip the async/sync checkpoint ratios")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=300,
        help="start no section after this many seconds (the default run then ends within 6 minutes)",
    )
    ap.add_argument(
        "--workdir",
        default=None,
        help="where level folders and checkpoints go (default: a temporary folder; its file system is reported)",
    )
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--out", default="bench_gpu.json")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, resnet18, no compile")
    a = ap.parse_args(argv)
    if a.dry_run:
        # fp32: bf16 autocast on a CPU without bf16 units is emulated, ten times slower
        a.device, a.models, a.resolution, a.batch_size, a.steps, a.epochs = "cpu", "resnet18", 16, 4, 2, 2
        a.warmup_steps, a.imp_model, a.imp_steps, a.imp_compile, a.precision = 1, "resnet18", 2, False, "auto"
        a.cifar_size, a.cifar_batch_size = 32, 8
    if not [m for m in a.models.split(",") if m.strip()]:
        ap.error("--models names no model")
    if a.epochs < 2 or a.steps < 1:
        ap.error("--epochs must be at least 2 (epoch 0 is warm-up) and --steps at least 1")
    if a.device == "auto":
        if not torch.cuda.is_available():
            ap.error("no CUDA device: run with --dry-run, or --device cpu with small sizes")
        a.device = "cuda"
    a.device = torch.device("cuda", 0) if a.device == "cuda" else torch.device("cpu")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    t_start = time.perf_counter()
    device = a.device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    stop = StopFlag(DistInfo(0, 1, 0, device))  # as in a job: SIGINT/SIGTERM stop at a step boundary
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    out = Path(a.out)
    bf16 = a.precision == "bf16" or (a.precision == "auto" and device.type == "cuda")
    precision = "bf16 autocast" if bf16 else "fp32"
    env = environment(device)
    if device.type == "cuda":
        a.peak_tflops = env["datasheet_bf16_tflops"] = datasheet_tflops(env["device"])
        a.matmul_tflops = env["bf16_matmul_tflops"] = round(matmul_tflops(device), 1)
        _free(device)
    pool_gb = a.steps * a.batch_size * 3 * a.resolution**2 / 2**30
    rep: dict[str, Any] = {
        "benchmark": "bench/bench_gpu.py",
        "dry_run": a.dry_run,
        "env": env,
        "data": DATA_NOTE,
        "settings": {
            "resolution": a.resolution,
            "batch_size": a.batch_size,
            "steps_per_epoch": a.steps,
            "epochs": a.epochs,
            "precision": precision,
            "channels_last": True,
            "warmup_steps_plain": a.warmup_steps,
            "data_pool_gb": round(pool_gb, 2),
            "processes": 1,
            "argv": sys.argv[1:] if argv is None else argv,
        },
        "goals": {"resnet50_images_per_s": RN50_GOAL, "ratio": RATIO_GOAL},
        "throughput": [],
        "cifar": [],
        "async_checkpoint": None,
        "imp": None,
        "job": None,
        "forbidden_imported": [],
        "elapsed_s": 0.0,
        "out": str(out),
    }
    print(
        f"[bench] {rep['env']['device']}, torch {rep['env']['torch']}\n[bench] data: {DATA_NOTE}; "
        f"{a.steps * a.batch_size} train images at {a.resolution} px ({pool_gb:.2f} GB uint8) per "
        f"measurement, {a.steps} steps per epoch",
        flush=True,
    )

    def save() -> None:
        rep["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        rep["forbidden_imported"] = forbidden_imported()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rep, indent=1) + "\n")

    sections: list[tuple[str, str, bool]] = []
    for i, model in enumerate(models):
        sections += [("throughput", model, False)] + ([] if a.no_compile else [("throughput", model, True)])
        if i == 0:  # the goals and the checks first: the time budget may cut the tail
            sections += [("cifar", m.strip(), False) for m in a.cifar_models.split(",") if m.strip()]
            sections += [] if a.no_async_checkpoint else [("async_checkpoint", model, False)]
            sections += [] if a.no_imp else [("imp", a.imp_model, a.imp_compile)]
            sections += [] if a.no_job else [("job", "resnet18", False)]
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench_gpu_", dir=a.workdir) as tmpname:
        tmp = Path(tmpname)
        rep["settings"]["checkpoint_fs"] = fs_type(tmp)
        for kind, model, compile_ in sections:
            row: dict[str, Any] = {"model": model, "compile": compile_}
            elapsed = time.perf_counter() - t_start
            if kind in ("throughput", "cifar"):
                rep[kind].append(row)
            else:
                rep[kind] = row
            if compile_ and a.dry_run:
                row.update(status="skipped", note="dry run: no torch.compile on the CPU (minutes of C++ builds)")
            elif elapsed > a.budget_s:
                row.update(status="skipped", note=f"time budget: {elapsed:.0f} s > --budget-s {a.budget_s:.0f}")
            else:
                try:
                    if kind == "throughput":
                        row.update(throughput(a, model, compile_, device, stop, tmp))
                        goal = row["trainer_images_per_s"] >= RN50_GOAL
                        row["goal_met"] = goal if model == "resnet50" and device.type == "cuda" else None
                        row["ratio_met"] = None if a.dry_run else row["ratio"] >= RATIO_GOAL
                    elif kind == "imp":
                        row.update(imp_run(a, device, stop, tmp))
                    elif kind == "cifar":
                        row.update(cifar_level(a, model, device, stop, tmp))
                    elif kind == "async_checkpoint":
                        row.update(async_checkpoint(a, model, device, stop, tmp))
                    else:
                        row.update(job_smoke(a, tmp))
                        failed |= not row["ok"]
                    row["status"] = "ok"
                except Stopped as exc:  # a signal: record what there is and stop
                    row.update(status="stopped", error=str(exc))
                    save()
                    print_report(rep)
                    return 1
                except Exception as exc:  # noqa: BLE001 - OOM, a compile failure: report it, go on with the rest
                    import traceback

                    traceback.print_exc()
                    row.update(status="error", error=error_text(exc))
                    failed = True
                finally:
                    _free(device)
            print(
                f"[bench] {kind} {model} compile={compile_}: {row['status']} "
                f"({time.perf_counter() - t_start:.0f} s so far)",
                flush=True,
            )
            save()
    save()
    print_report(rep)
    return 1 if failed or rep["forbidden_imported"] else 0


if __name__ == "__main__":
    sys.exit(main())
