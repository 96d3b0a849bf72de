"""Trainer loop overhead: images/s of trainer.loop.train_epoch (per-step LR schedule, mask
enforcement, on-device metrics, stop-flag polling) against a minimal hand-written PyTorch loop on
the same model, batches and optimizer, measured in the same run. Goal: ratio >= 0.95.

    python bench/bench_trainer.py [--model resnet20] [--batches 24] [--batch-size 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from trainer.distributed import DistInfo, StopFlag  # noqa: E402
from trainer.loop import StepHooks, autocast, train_epoch  # noqa: E402
from trainer.models import build_model  # noqa: E402
from trainer.pruning.masks import MaskEnforcer, apply_mask, full_mask  # noqa: E402
from trainer.pruning.methods import PruneContext, prune_magnitude  # noqa: E402

SCHEDULE = {"name": "cosine", "epochs": 1, "warmup_epochs": 0}


def make(model_name: str, shape, sparsity: float, device):
    torch.manual_seed(0)
    model = build_model({"name": model_name}, 10, shape).to(device)
    mask = full_mask(model)
    if sparsity:
        mask = prune_magnitude(model, mask, 1 - sparsity, PruneContext(cfg={}, generator=torch.Generator()))
    apply_mask(model, mask)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return model, mask, opt


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(model, opt, batches, loss_fn, precision="fp32", device=torch.device("cpu")) -> float:
    model.train()
    _sync(device)
    start = time.perf_counter()
    for x, y in batches:
        with autocast(device, precision):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - start


def trainer_loop(model, mask, opt, batches, loss_fn, info, stop, precision="fp32") -> float:
    hooks = StepHooks(after_step=MaskEnforcer(model, mask))
    _sync(info.device)
    start = time.perf_counter()
    train_epoch(
        model,
        batches,
        opt,
        info=info,
        epoch=0,
        steps_per_epoch=len(batches),
        base_lr=0.05,
        schedule=SCHEDULE,
        loss_fn=loss_fn,
        hooks=hooks,
        stop=stop,
        precision=precision,
        channels_last=False,
    )
    _sync(info.device)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batches", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = DistInfo(0, 1, 0, device)
    stop = StopFlag(info)
    shape = (3, 32, 32)
    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(a.batch_size, *shape, generator=g).to(device),
            torch.randint(0, 10, (a.batch_size,), generator=g).to(device),
        )
        for _ in range(a.batches)
    ]
    loss_fn = nn.CrossEntropyLoss()
    plain_m, _, plain_o = make(a.model, shape, a.sparsity, device)
    tp_m, tp_mask, tp_o = make(a.model, shape, a.sparsity, device)
    plain_loop(plain_m, plain_o, batches[:3], loss_fn, a.precision, device)  # warm-up (allocator,
    trainer_loop(tp_m, tp_mask, tp_o, batches[:3], loss_fn, info, stop, a.precision)  # kernels)
    plain_t, tp_t = [], []
    for i in range(a.repeats):  # interleaved, alternating who goes first: drift hits both alike
        runs = [
            lambda: plain_t.append(plain_loop(plain_m, plain_o, batches, loss_fn, a.precision, device)),
            lambda: tp_t.append(trainer_loop(tp_m, tp_mask, tp_o, batches, loss_fn, info, stop, a.precision)),
        ]
        for run in runs if i % 2 == 0 else runs[::-1]:
            run()
    n = a.batches * a.batch_size
    plain_ips, tp_ips = n / statistics.median(plain_t), n / statistics.median(tp_t)
    dev = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {dev}; model {a.model}, batch {a.batch_size}, {a.batches} batches, "
        f"sparsity {a.sparsity}, {a.precision}, median of {a.repeats}"
    )
    print(f"plain PyTorch loop : {plain_ips:8.1f} img/s")
    print(f"turboprune loop    : {tp_ips:8.1f} img/s")
    print(f"ratio              : {tp_ips / plain_ips:.3f}  (goal >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
