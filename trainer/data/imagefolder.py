"""torchvision ImageFolder + DataLoader fallback for users without .beton files (``imagefolder``).

Same recipe as the FFCV imagenet pipeline: train RandomResizedCrop(res) + horizontal flip, val
Resize(res / (224/256)) + CenterCrop(res), normalised with the (0..255-scale) mean/std. Order is
the in-memory one: pass ``key`` shuffles with ``default_rng([seed, key])``, rank r takes its
contiguous chunk of each global batch (drop last); test rank r takes examples r::W. Augmentation
randomness is seeded per (seed, key, example), so a resumed pass repeats the same crops whatever
the number of workers or ranks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from . import DataError, LoaderContext, Loaders, per_rank_batch, register, to_device
from .ffcv_loaders import DEFAULT_CROP_RATIO
from .memory import epoch_permutation
from .normalisation import IMAGENET_MEAN, IMAGENET_STD


def folder_transforms(train: bool, res: int, mean, std):
    from torchvision import transforms as T  # torch (seconds)

    norm = T.Normalize([m / 255 for m in mean], [s / 255 for s in std])
    if train:
        return T.Compose([T.RandomResizedCrop(res, antialias=True), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    return T.Compose(
        [T.Resize(int(round(res / DEFAULT_CROP_RATIO)), antialias=True), T.CenterCrop(res), T.ToTensor(), norm]
    )


def open_image_folder(path: str, transform=None):
    """ImageFolder with clear errors for a missing or empty folder."""
    from torchvision.datasets import ImageFolder  # torch (seconds)

    if not os.path.isdir(path):
        raise DataError(f"{path}: no such folder")
    try:
        return ImageFolder(path, transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:  # torchvision: no class folders / no images
        raise DataError(f"{path}: not an image folder of class subfolders ({exc})") from exc


class SeededSamples(torch.utils.data.Dataset):
    """Draws each example's augmentation from its own seed (seed, key, index), so crops do not
    depend on worker scheduling, and restores the CPU RNG so the caller's stream is untouched.
    (torch.random.fork_rng costs about 3x more per image inside DataLoader workers.)"""

    def __init__(self, ds, seed: int, key: int):
        self.ds, self.seed, self.key = ds, int(seed), int(key)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        s = int(np.random.SeedSequence([self.seed, self.key, int(i)]).generate_state(1)[0])
        saved = torch.get_rng_state()
        torch.default_generator.manual_seed(s)
        try:
            return self.ds[i]
        finally:
            torch.set_rng_state(saved)


class FolderTrainLoader:
    def __init__(self, ds, global_batch: int, ctx: LoaderContext, workers: int, n: int):
        self.ds, self.ctx, self.workers, self.n = ds, ctx, workers, n
        self.global_batch = global_batch
        self.local_batch = per_rank_batch(global_batch, ctx.world_size)
        self.key = 0

    def set_epoch(self, key: int) -> None:
        self.key = int(key)

    def __len__(self) -> int:
        return self.n // self.global_batch

    def batches(self) -> list[list[int]]:
        perm = epoch_permutation(self.n, self.ctx.seed, self.key)
        lo = self.ctx.rank * self.local_batch
        return [
            perm[i * self.global_batch + lo : i * self.global_batch + lo + self.local_batch].tolist()
            for i in range(len(self))
        ]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        dl = torch.utils.data.DataLoader(
            SeededSamples(self.ds, self.ctx.seed, self.key),
            batch_sampler=self.batches(),
            num_workers=self.workers,
            pin_memory=self.ctx.device.type == "cuda",
        )
        self.key += 1
        for x, y in dl:
            yield to_device(x, y, self.ctx.device)


class FolderTestLoader:
    def __init__(self, ds, global_batch: int, ctx: LoaderContext, workers: int):
        self.ds = torch.utils.data.Subset(ds, list(range(ctx.rank, len(ds), ctx.world_size)))
        self.ctx, self.workers = ctx, workers
        self.local_batch = per_rank_batch(global_batch, ctx.world_size, "test_batch_size")

    def set_epoch(self, key: int) -> None:
        pass

    def __len__(self) -> int:
        return -(-len(self.ds) // self.local_batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        dl = torch.utils.data.DataLoader(
            self.ds,
            batch_size=self.local_batch,
            shuffle=False,
            num_workers=self.workers,
            pin_memory=self.ctx.device.type == "cuda",
        )
        for x, y in dl:
            yield to_device(x, y, self.ctx.device)


@register("imagefolder")
def build_imagefolder(cfg: dict, ctx: LoaderContext) -> Loaders:
    root = cfg.get("root")
    if not root:
        raise DataError("imagefolder needs root (a folder with train/ and val/ subfolders)")
    res = int(cfg.get("resolution", 224))
    val_res = int(cfg.get("val_resolution") or res)
    mean = tuple(cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(cfg.get("std") or IMAGENET_STD)
    train = open_image_folder(os.path.join(root, "train"), folder_transforms(True, res, mean, std))
    val = open_image_folder(os.path.join(root, "val"), folder_transforms(False, val_res, mean, std))
    n = len(train)
    if cfg.get("subset"):
        n = min(n, int(cfg["subset"]))
    workers = int(cfg.get("num_workers", 2))
    bs = int(cfg["batch_size"])
    if n < bs:
        raise DataError(f"{root}/train: {n} images, fewer than batch_size={bs}")
    return Loaders(
        train=FolderTrainLoader(train, bs, ctx, workers, n),
        test=FolderTestLoader(val, int(cfg.get("test_batch_size") or bs), ctx, workers),
        num_classes=len(train.classes),
        input_shape=(3, val_res, val_res),
        train_size=n,
        train_shape_of=lambda _key: (3, res, res),
    )
