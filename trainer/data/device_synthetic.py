"""``synthetic_gpu``: random images generated once ON the training device, for throughput benchmarks.

Why it exists: a lent GPU machine has no internet, so FFCV cannot be built there, and a CPU
loader would measure the loader rather than the model step. This set draws its images once on
``ctx.device`` (the GPU; the CPU in tests) and then only gathers and normalises batches there:
no JPEG decoding, no host-to-device copy, no host synchronisation per batch. There is nothing to
learn (labels are random): use it to time training, never to judge accuracy.

Train: ``size`` uint8 images of ``shape`` (C, H, W), stored NHWC, and random labels, drawn from
``data_seed``. Pass ``key``: a permutation drawn on the device from a generator seeded by
(ctx.seed, key); global batch i is perm[i*B:(i+1)*B] and rank r takes its contiguous chunk, as the
in-memory sets do (drop last). A batch is x float32 NCHW with channels_last strides (FFCV's
layout, so the trainer's channels_last conversion is free), normalised with ``mean``/``std``
(0..255 scale, ImageNet's by default), and y int64, both on ctx.device.
Test: ``test_size`` images drawn the same way, fixed order, rank r takes examples r::W.

Keys (defaults as for ``synthetic``, so the trainer schema describes both): shape [3, 8, 8],
classes 10, size 1024 (examples per epoch, all resident: size * C*H*W bytes), test_size 256,
data_seed 0, batch_size, test_batch_size, mean, std.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from . import DataError, LoaderContext, Loaders, register
from .memory import TensorTestLoader, TensorTrainLoader
from .normalisation import IMAGENET_MEAN, IMAGENET_STD, Normalise


def draw_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of ints, through numpy's SeedSequence (no aliasing of pairs)."""
    lo, hi = np.random.SeedSequence([int(p) for p in parts]).generate_state(2)
    return ((int(hi) << 32) | int(lo)) & (2**63 - 1)


def _draw(n: int, shape: tuple[int, int, int], classes: int, seed: int, device: torch.device):
    g = torch.Generator(device=device).manual_seed(seed)
    c, h, w = shape
    x = torch.randint(0, 256, (n, h, w, c), dtype=torch.uint8, device=device, generator=g)
    y = torch.randint(0, classes, (n,), dtype=torch.int64, device=device, generator=g)
    return x, y


class DeviceTrainLoader(TensorTrainLoader):
    """The in-memory train loader's batching and DDP split, with the permutation drawn on the
    device and batches gathered and normalised there."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, global_batch: int, ctx: LoaderContext, norm: Normalise
    ) -> None:
        super().__init__(x, y, global_batch, ctx)
        self.norm = norm

    def permutation(self, key: int) -> torch.Tensor:
        g = torch.Generator(device=self.ctx.device).manual_seed(draw_seed(self.ctx.seed, key))
        return torch.randperm(len(self.x), generator=g, device=self.ctx.device)

    def global_batch_indices(self, i: int) -> np.ndarray:
        perm = self.permutation(self.key)
        return perm[i * self.global_batch : (i + 1) * self.global_batch].cpu().numpy()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = self.permutation(self.key)
        self.key += 1  # without a set_epoch call the next pass still gets a fresh order
        lo = self.ctx.rank * self.local_batch
        for i in range(len(self)):
            idx = perm[i * self.global_batch + lo : i * self.global_batch + lo + self.local_batch]
            yield self.norm(self.x.index_select(0, idx)), self.y.index_select(0, idx)


class DeviceTestLoader(TensorTestLoader):
    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, global_batch: int, ctx: LoaderContext, norm: Normalise
    ) -> None:
        super().__init__(x, y, global_batch, ctx)
        self.norm = norm

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.x), self.local_batch):
            j = i + self.local_batch
            yield self.norm(self.x[i:j]), self.y[i:j]


@register("synthetic_gpu")
def build_synthetic_gpu(cfg: dict, ctx: LoaderContext) -> Loaders:
    shape = tuple(int(s) for s in cfg.get("shape", (3, 8, 8)))
    classes, size = int(cfg.get("classes", 10)), int(cfg.get("size", 1024))
    test_size = int(cfg.get("test_size", 256))
    if len(shape) != 3 or min(shape) < 1 or classes < 2 or size < 1 or test_size < 1:
        raise DataError(
            f"synthetic_gpu needs shape [C,H,W], classes>=2, size>=1, test_size>=1; "
            f"got {list(shape)}, {classes}, {size}, {test_size}"
        )
    mean, std = cfg.get("mean") or IMAGENET_MEAN, cfg.get("std") or IMAGENET_STD
    if len(mean) != shape[0] or len(std) != shape[0]:
        raise DataError(f"synthetic_gpu: mean/std need {shape[0]} values (one per channel)")
    bs = int(cfg["batch_size"])
    tbs = int(cfg.get("test_batch_size") or bs)
    seed = int(cfg.get("data_seed", 0))
    norm = Normalise(mean, std, ctx.device)
    xtr, ytr = _draw(size, shape, classes, draw_seed(seed, 1), ctx.device)
    xte, yte = _draw(test_size, shape, classes, draw_seed(seed, 2), ctx.device)
    return Loaders(
        train=DeviceTrainLoader(xtr, ytr, bs, ctx, norm),
        test=DeviceTestLoader(xte, yte, tbs, ctx, norm),
        num_classes=classes,
        input_shape=shape,
        train_size=size,
    )
