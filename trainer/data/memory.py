"""In-memory data sets (digits, synthetic) whose DDP split is exactly one process's global batch.

Train pass ``key``: a permutation drawn from ``numpy.random.default_rng([seed, key])`` (a seed
sequence over the pair, so (seed, key) pairs never alias the way seed + key would); global batch i
is perm[i*B:(i+1)*B] and rank r takes its contiguous chunk [r*B/W, (r+1)*B/W). The last partial
global batch is dropped, so every rank yields N // B batches. Test: rank r takes examples r::W in
order. No augmentation: flips/translations would change what an 8x8 digit means.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from . import DataError, LoaderContext, Loaders, per_rank_batch, register, to_device


def epoch_permutation(n: int, seed: int, key: int) -> np.ndarray:
    """The train order of pass ``key``: a pure function of (seed, key)."""
    return np.random.default_rng([int(seed), int(key)]).permutation(n)


class TensorTrainLoader:
    """Shuffled, drop-last batches of in-memory tensors; this rank's chunk of each global batch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, global_batch: int, ctx: LoaderContext):
        self.x, self.y, self.ctx = x, y, ctx
        self.global_batch = global_batch
        self.local_batch = per_rank_batch(global_batch, ctx.world_size)
        if len(x) < global_batch:
            raise DataError(f"train set has {len(x)} examples, fewer than batch_size={global_batch}")
        self.key = 0

    def set_epoch(self, key: int) -> None:
        self.key = int(key)

    def __len__(self) -> int:
        return len(self.x) // self.global_batch

    def global_batch_indices(self, i: int) -> np.ndarray:
        perm = epoch_permutation(len(self.x), self.ctx.seed, self.key)
        return perm[i * self.global_batch : (i + 1) * self.global_batch]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.from_numpy(epoch_permutation(len(self.x), self.ctx.seed, self.key))
        # Without a set_epoch call the next pass still gets a fresh (deterministic) order.
        self.key += 1
        lo = self.ctx.rank * self.local_batch
        for i in range(len(self)):
            idx = perm[i * self.global_batch + lo : i * self.global_batch + lo + self.local_batch]
            yield to_device(self.x[idx], self.y[idx], self.ctx.device)


class TensorTestLoader:
    """Fixed order; rank r sees examples r::W, so the ranks' shards are disjoint and cover the set."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, global_batch: int, ctx: LoaderContext):
        self.x = x[ctx.rank :: ctx.world_size]
        self.y = y[ctx.rank :: ctx.world_size]
        self.ctx = ctx
        self.local_batch = per_rank_batch(global_batch, ctx.world_size, "test_batch_size")

    def set_epoch(self, key: int) -> None:  # order is fixed; kept for the protocol
        pass

    def __len__(self) -> int:
        return -(-len(self.x) // self.local_batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.x), self.local_batch):
            j = i + self.local_batch
            yield to_device(self.x[i:j], self.y[i:j], self.ctx.device)


def make_loaders(xtr, ytr, xte, yte, cfg: dict, ctx: LoaderContext, num_classes: int) -> Loaders:
    subset = cfg.get("subset")
    if subset:
        xtr, ytr = xtr[: int(subset)], ytr[: int(subset)]
    bs = int(cfg["batch_size"])
    tbs = int(cfg.get("test_batch_size") or bs)
    xtr, xte = xtr.float().contiguous(), xte.float().contiguous()
    ytr, yte = ytr.long(), yte.long()
    return Loaders(
        train=TensorTrainLoader(xtr, ytr, bs, ctx),
        test=TensorTestLoader(xte, yte, tbs, ctx),
        num_classes=num_classes,
        input_shape=tuple(xtr.shape[1:]),
        train_size=len(xtr),
    )


def digits_split(y: np.ndarray, test_every: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified 80/20 split: within each class, every 5th example (by index) is test.
    No RNG, so it never depends on the run seed or the scikit-learn version."""
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test[idx[test_every - 1 :: test_every]] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8x8 digits as (N, 8, 8) float in [0, 16] and int labels."""
    from sklearn.datasets import load_digits  # lazy: 1.3 s

    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


@register("digits")
def build_digits(cfg: dict, ctx: LoaderContext) -> Loaders:
    images, labels = load_digits_arrays()
    x = torch.from_numpy(images / 16.0).float().unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    y = torch.from_numpy(labels)
    tr, te = digits_split(labels)
    xtr, xte = x[tr], x[te]
    if cfg.get("normalize", True):
        mean, std = xtr.mean(), xtr.std()
        xtr, xte = (xtr - mean) / std, (xte - mean) / std
    return make_loaders(xtr, y[tr], xte, y[te], cfg, ctx, num_classes=10)


def synthetic_arrays(shape, classes: int, size: int, test_size: int, data_seed: int = 0, noise: float = 1.0):
    """Learnable Gaussian blobs: x = mean[class] + noise * N(0, 1), labels balanced round-robin."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1 or classes < 2 or size < 1 or test_size < 1:
        raise DataError(
            f"synthetic needs shape [C,H,W], classes>=2, size>=1; got {shape}, {classes}, {size}, {test_size}"
        )
    rng = np.random.default_rng([int(data_seed), 0])
    means = rng.standard_normal((classes, *shape)).astype(np.float32)

    def draw(n: int, stream: int):
        r = np.random.default_rng([int(data_seed), stream])
        y = r.permutation(np.arange(n) % classes)
        x = means[y] + noise * r.standard_normal((n, *shape)).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    return (*draw(size, 1), *draw(test_size, 2))


@register("synthetic")
def build_synthetic(cfg: dict, ctx: LoaderContext) -> Loaders:
    classes = int(cfg.get("classes", 10))
    xtr, ytr, xte, yte = synthetic_arrays(
        cfg.get("shape", (3, 8, 8)),
        classes,
        int(cfg.get("size", 1024)),
        int(cfg.get("test_size", 256)),
        int(cfg.get("data_seed", 0)),
        float(cfg.get("noise", 1.0)),
    )
    return make_loaders(xtr, ytr, xte, yte, cfg, ctx, num_classes=classes)
