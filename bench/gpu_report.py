"""What bench_gpu.py says about where it ran and what it measured: environment, goals, the table."""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

import torch

# What a GPU machine without internet lacks (or what only the orchestrator needs): none of these
# may be imported, or the benchmark would not run there.
FORBIDDEN = (
    "ffcv",
    "numba",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "psycopg2",
    "submitit",
    "hydra",
    "omegaconf",
    "wandb",
    "orchestrator",
    "db",
)
RN50_GOAL, RATIO_GOAL = 6000.0, 0.95
# Dense bf16 tensor-core peak, TFLOP/s, from the vendors' datasheets (SXM parts; the H200 has the
# H100's arithmetic): the denominator of "fraction of peak". The benchmark also measures a large
# bf16 matrix product on the card, a ceiling that a real chip reaches.
DATASHEET_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}
IMAGENET_TRAIN = 1_281_167  # images in an ImageNet-1k training epoch
DATA_NOTE = (
    "synthetic_gpu: random uint8 images drawn once on the device and gathered/normalised "
    "there per batch; no FFCV, no JPEG decoding, no host-to-device copies (CIFAR rows: the "
    "device CIFAR loader on random images in CIFAR's format, flipped and translated on the device)"
)


def forbidden_imported() -> list[str]:
    return sorted(m for m in FORBIDDEN if m in sys.modules)


def error_text(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    kind = "out of memory" if isinstance(exc, torch.cuda.OutOfMemoryError) else type(exc).__name__
    return f"{kind}: {first[:300]}"


def environment(device: torch.device) -> dict[str, Any]:
    import torchvision

    env = {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(
            device=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            gpu_memory_gb=round(p.total_memory / 2**30, 1),
        )
    else:
        env["device"] = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return env


def datasheet_tflops(device_name: str) -> float | None:
    return next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in device_name), None)


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """The card's bf16 matrix-product rate, n x n x n, after three warm-ups: a measured ceiling."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12


def train_flops_per_image(model_cfg: dict[str, Any], resolution: int, classes: int = 1000) -> float:
    """FLOPs of one training step per image (forward and backward; a multiply-add is 2), counted
    by PyTorch's FlopCounterMode on the CPU over a batch of 2. Convolutions and matrix products
    only: normalisation, activations and the optimizer are a rounding error beside them."""
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.models import build_model

    model = build_model(model_cfg, classes, (3, resolution, resolution))
    x = torch.randn(2, 3, resolution, resolution)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 2


def fs_type(path: Path) -> str:
    """The file system checkpoints go to (a tmpfs write costs far less than a cluster's disk)."""
    best, kind = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mnt, fs = line.split()[:3]
            if str(path.resolve()).startswith(mnt) and len(mnt) > len(best):
                best, kind = mnt, fs
    except OSError:
        pass
    return kind


def _throughput_line(r: dict[str, Any]) -> str:
    head = f"{r['model']:<9} {'yes' if r['compile'] else 'no':<7}"
    if r["status"] != "ok":
        return f"{head} {r['status']}: {r.get('error') or r.get('note')}"
    word = {None: "n/a", True: "met", False: "missed"}
    goal, ratio = word[r["goal_met"]], word[r["ratio_met"]]
    return (
        f"{head} {r['trainer_images_per_s']:>10,.0f} {r['trainer_in_loop_images_per_s']:>9,.0f} "
        f"{r['plain_images_per_s']:>10,.0f} {r['ratio']:>6.3f} {r['ratio_imagenet_epoch']:>9.3f}  "
        f"{goal:<6} {ratio:<6} {r['checkpoint_s']} s, "
        f"{r['checkpoint_mb']} MB"
    )


def print_report(rep: dict[str, Any]) -> None:
    s, env = rep["settings"], rep["env"]
    print(
        f"\n== bench_gpu: {env['device']}, torch {env['torch']}"
        f"{' (DRY RUN: tiny sizes on the CPU, not a measurement)' if rep['dry_run'] else ''}"
    )
    print(f"data: {DATA_NOTE}")
    print(
        f"{s['resolution']} px, batch {s['batch_size']} per GPU, {s['precision']}, channels_last, "
        f"{s['steps_per_epoch']} steps/epoch, {s['epochs']} epochs (epoch 0 dropped), one process on "
        f"one GPU; checkpoints on {s.get('checkpoint_fs')}"
    )
    print(
        f"{'model':<9} {'compile':<7} {'trainer':>10} {'in-loop':>9} {'plain':>10} {'ratio':>6} "
        f"{'@ImageNet':>9}  {'img/s':<6} {'ratio':<6} epoch checkpoint"
    )
    print(f"{'':<17} {'img/s':>10} {'img/s':>9} {'img/s':>10} {'':>6} {'epoch':>9}  {'goal':<6} {'goal':<6}")
    for r in rep["throughput"]:
        print(_throughput_line(r))
    peak, mm = env.get("datasheet_bf16_tflops"), env.get("bf16_matmul_tflops")
    for r in rep["throughput"]:
        if r["status"] == "ok":
            frac = (
                f", {r['fraction_of_datasheet_peak']:.1%} of the datasheet's {peak:.0f} and "
                f"{r['fraction_of_matmul']:.1%} of the measured bf16 matrix product's {mm:.0f} TFLOP/s"
                if peak and mm
                else ""
            )
            print(
                f"{r['model']} compile={'yes' if r['compile'] else 'no'}: {r['train_gflop_per_image']:.2f} GFLOP "
                f"per training image, {r['trainer_tflops']:.1f} TFLOP/s in the trainer{frac}"
            )
    print(
        f"(trainer: epoch wall time with its checkpoint, without evaluation; in-loop: the trainer's "
        f"own figure, steps only; goals: >= {RN50_GOAL:,.0f} img/s for resnet50 on a GPU, ratio >= "
        f"{RATIO_GOAL}; @ImageNet epoch: the ratio with one checkpoint per {IMAGENET_TRAIN:,} images)"
    )
    for r in rep.get("cifar") or []:
        if r["status"] != "ok":
            print(f"CIFAR {r['model']}: {r['status']}: {r.get('error') or r.get('note')}")
            continue
        frac = (
            f", {r['fraction_of_datasheet_peak']:.1%} of the datasheet's and {r['fraction_of_matmul']:.1%} "
            "of the measured matrix product's peak"
            if peak and mm
            else ""
        )
        print(
            f"CIFAR {r['model']} (device loader, batch {r['batch_size']}, {r['steps_per_epoch']} steps/epoch): "
            f"{r['images_per_s']:,.0f} img/s, {r['trainer_tflops']:.2f} TFLOP/s{frac}"
        )
    ck = rep.get("async_checkpoint") or {}
    if ck.get("status") == "ok":
        print(
            f"checkpoint {ck['model']} ({ck['checkpoint_mb']} MB, {ck['steps_per_epoch']}-step epochs): "
            "trainer/plain "
            f"{ck['ratio_async']:.3f} written in the background ({ck['checkpoint_s_async']} s on the loop), "
            f"{ck['ratio_sync']:.3f} written in line ({ck['checkpoint_s_sync']} s); the write takes "
            f"{ck['checkpoint_write_s']} s"
        )
    elif ck:
        print(f"checkpoint: {ck['status']}: {ck.get('error') or ck.get('note')}")
    imp = rep.get("imp") or {}
    if imp.get("status") == "ok":
        print(
            f"IMP {imp['model']} (compile={imp['compile']}), 2 levels x 2 epochs x {imp['steps_per_epoch']} steps:"
        )
        for lv in imp["levels"]:
            print(
                f"  level {lv['depth']} {lv['kind']:<5} density {lv['density']:.2f} (achieved sparsity "
                f"{lv['achieved_sparsity']:.6f}): {lv['images_per_s_last_epoch']:,.0f} img/s in its last "
                f"epoch; wall {lv['wall_s']} s, of which {lv['other_s']} s not training or evaluating"
            )
        w = "; ".join(f"{k} {v['count']}x, {v['total_s']} s ({v['mb']} MB)" for k, v in imp["writes"].items())
        print(
            f"  prune {imp['prune_s']} s (level 1 set-up: load parent, prune, mask, rewind "
            f"{imp['prepare_level1_s']} s); epoch checkpoints with state copy {imp['checkpoint_total_s']} s"
        )
        print(f"  writes: {w}; level 1 / level 0 img/s {imp['level1_vs_level0']}")
    elif imp:
        print(f"IMP: {imp['status']}: {imp.get('error') or imp.get('note')}")
    job = rep.get("job") or {}
    if job.get("status") == "ok":
        print(
            f"job entry (torchrun -m trainer.job, IMP 2 levels): {job['state']}, achieved sparsity "
            f"{job['achieved_sparsity']}, {'ok' if job['ok'] else 'NOT OK'}, {job['seconds']} s"
        )
    elif job:
        print(f"job entry: {job['status']}: {job.get('error') or job.get('note')}")
    bad = rep["forbidden_imported"]
    print(f"imports: {'LOADED ' + ', '.join(bad) if bad else 'none of ' + ', '.join(FORBIDDEN)}")
    print(f"total {rep['elapsed_s']} s; JSON in {rep['out']}")
