"""One epoch of training and one evaluation pass, short enough to read in one sitting.

Metrics stay on the device as running sums and are reduced across ranks once per epoch, so the
hot loop never waits for the host (no .item() per step).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trainer.distributed import DistInfo, StopFlag
from trainer.optim import lr_factor, set_lr


@dataclass
class StepHooks:
    """What the level loop needs to see from inside an epoch."""

    after_step: Callable[[], None]  # mask enforcement, after every optimizer step
    at_step: dict[int, Callable[[], None]] = field(
        default_factory=dict
    )  # level step -> callback (imp_wr snapshot)
    heartbeat: Callable[[], None] | None = None
    heartbeat_every_s: float = 60.0


@dataclass
class EpochResult:
    sums: torch.Tensor  # [loss_sum, correct, count], on CPU, reduced across ranks when complete
    seconds: float
    stopped_at: int | None  # step within the epoch where a stop signal was honoured
    steps: int = 0  # optimizer steps taken in this call
    lr: float = 0.0  # learning rate of the last step

    @property
    def loss(self) -> float:
        return float(self.sums[0] / self.sums[2].clamp(min=1))

    @property
    def acc(self) -> float:
        return float(self.sums[1] / self.sums[2].clamp(min=1))


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_epoch(
    model: nn.Module,
    batches: Iterable,
    opt: torch.optim.Optimizer,
    *,
    info: DistInfo,
    epoch: int,
    steps_per_epoch: int,
    base_lr: float,
    schedule: dict[str, Any],
    loss_fn: nn.Module,
    hooks: StepHooks,
    stop: StopFlag,
    precision: str = "auto",
    channels_last: bool = False,
    skip: int = 0,
    carry: torch.Tensor | None = None,
) -> EpochResult:
    """Train over `batches`; the first `skip` batches were already trained before a resume
    (their partial sums come in `carry`)."""
    model.train()
    sums = (carry.clone() if carry is not None else torch.zeros(3, dtype=torch.float64)).to(info.device)
    start = time.perf_counter()
    last_beat = time.monotonic()
    steps, lr = 0, 0.0
    for i, (x, y) in enumerate(batches):
        if i < skip:
            continue
        step = epoch * steps_per_epoch + i
        if step in hooks.at_step:
            hooks.at_step[step]()
        if stop.should_stop(step):
            return EpochResult(_reduce(sums, info, complete=False), time.perf_counter() - start, i, steps, lr)
        lr = set_lr(opt, base_lr, lr_factor(step, steps_per_epoch, schedule))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(info.device, precision):
            out = model(x)
            loss = loss_fn(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hooks.after_step()
        steps += 1
        with torch.no_grad():
            n = y.shape[0]
            sums[0] += loss.detach().double() * n
            sums[1] += (out.argmax(dim=1) == y).sum()
            sums[2] += n
        if hooks.heartbeat and time.monotonic() - last_beat > hooks.heartbeat_every_s:
            hooks.heartbeat()
            last_beat = time.monotonic()
    end_step = (epoch + 1) * steps_per_epoch
    if end_step in hooks.at_step:  # a snapshot exactly at the end of an epoch
        hooks.at_step[end_step]()
    return EpochResult(_reduce(sums, info), time.perf_counter() - start, None, steps, lr)


def _reduce(sums: torch.Tensor, info: DistInfo, complete: bool = True) -> torch.Tensor:
    if complete and info.distributed:
        dist.all_reduce(sums)
    return sums.cpu()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable,
    *,
    info: DistInfo,
    loss_fn: nn.Module,
    precision: str = "auto",
    channels_last: bool = False,
) -> dict[str, float]:
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=info.device)  # loss, top1, top5, count
    for x, y in batches:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(info.device, precision):
            out = model(x)
        out = out.float()
        sums[0] += loss_fn(out, y).double() * y.shape[0]
        k = min(5, out.shape[1])
        topk = out.topk(k, dim=1).indices
        sums[1] += (topk[:, 0] == y).sum()
        sums[2] += (topk == y[:, None]).any(dim=1).sum()
        sums[3] += y.shape[0]
    if info.distributed:
        dist.all_reduce(sums)
    s = sums.cpu().tolist()
    n = max(s[3], 1.0)
    return {"test_loss": s[0] / n, "test_acc": s[1] / n, "test_top5": s[2] / n}
