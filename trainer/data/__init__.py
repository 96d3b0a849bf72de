"""Data layer of the trainer: a registry of data sets that build train/test loaders.

Importing this package is cheap: FFCV (about 7 s) and scikit-learn are imported lazily inside the
builders that need them.

``build_loaders(cfg, ctx)`` takes the trainer config's ``data`` section. Keys (all optional except
``name`` and ``batch_size``):

Common
    name             registered data set: digits, synthetic, synthetic_gpu, cifar10, cifar100,
                     imagenet, beton, imagefolder; or a lab's, `module:function` (data/plugin.py)
    batch_size       GLOBAL train batch size; each rank gets batch_size // world_size (must divide)
    test_batch_size  GLOBAL test batch size (default: batch_size); same divisibility rule
    subset           train on the first N training examples only (for quick trials)

In-memory (digits, synthetic) -- DDP is exactly one process on the same global batch
    normalize        digits only: standardise by the train set's mean/std (default True)
    data_seed        synthetic only: seed of the generated data (default 0), independent of ctx.seed
    shape            synthetic only: [C, H, W] (default [3, 8, 8])
    classes          synthetic only: number of classes (default 10)
    size             synthetic only: number of train examples (default 1024)
    test_size        synthetic only: number of test examples (default 256)
    noise            synthetic only: noise std around the class means (default 1.0)

Device-resident (synthetic_gpu): random images drawn once on ctx.device, for throughput
benchmarks without FFCV; keys as for synthetic plus mean/std; see trainer/data/device_synthetic.py

Device-resident CIFAR (cifar10, cifar100 with loader: device); see trainer/data/cifar_device.py
    loader           null or ffcv (default): the FFCV loader below; device: this one
    root             the CIFAR archive as downloaded, its extracted folder, or a folder holding
                     either (without root: train_path/val_path betons, decoded once through FFCV)

FFCV betons (cifar10, cifar100, imagenet, beton); see trainer/data/ffcv_loaders.py
    train_path, val_path   .beton files with fields "image" (RGB) and "label" (int)
    num_workers      FFCV decoding threads (default: CPU count // world_size)
    os_cache         FFCV os_cache (default True: share the page cache between ranks)
    batches_ahead    FFCV prefetch depth (default 3)
    resolution       imagenet/beton: train crop size (default 224)
    val_resolution   imagenet/beton: val centre-crop size (default: resolution)
    min_res, max_res, end_ramp, start_ramp   progressive resizing (imagenet/beton); when min_res is
                     set the train resolution of pass ``key`` is ``resolution_for_epoch(key, ...)``
    mean, std        per-channel, 0..255 scale (default: CIFAR's for cifar*, ImageNet's otherwise)
    num_classes      beton only: override the number of classes (default: max label + 1)
    recipe           beton only: "cifar" for the cifar pipeline (default: the imagenet one)

Folders (imagefolder): torchvision ImageFolder + DataLoader with the FFCV recipe's augmentations
    root             folder with train/ and val/ subfolders of class folders
    num_workers      DataLoader workers (default 2)
    resolution, val_resolution, mean, std   as for imagenet

Batches: x float32 NCHW (FFCV's is a channels_last-strided view), y int64, on ctx.device. FFCV
batches live in buffers that it reuses batches_ahead + 2 batches later: clone a batch you keep
longer than that (e.g. a list of pruning batches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch

from core.errors import UserError
from core.plugins import is_ref


class DataError(UserError, ValueError):
    """Bad data input: missing/empty folder, corrupt image, truncated .beton, bad config."""


@dataclass
class LoaderContext:
    rank: int = 0
    world_size: int = 1
    seed: int = 0  # the run's seed
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    distributed: bool = False  # True under torchrun with an initialised process group


class EpochLoader(Protocol):
    def set_epoch(self, key: int) -> None: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...


@dataclass
class Loaders:
    train: EpochLoader
    test: EpochLoader
    num_classes: int
    input_shape: tuple[int, int, int]  # what the model is built for: the test input
    train_size: int
    # The training input of pass `key` (progressive resizing changes it), when it is not
    # input_shape: ImageNet trains at 160-192 px and tests at 256 px.
    train_shape_of: Callable[[int], tuple[int, int, int]] | None = None

    def train_shape(self, key: int) -> tuple[int, int, int]:
        """The shape of one training example in pass `key` (C, H, W)."""
        return self.train_shape_of(key) if self.train_shape_of is not None else self.input_shape


DATASETS: dict[str, Callable[[dict, LoaderContext], Loaders]] = {}


def register(name: str):
    """Decorator: ``@register("digits") def build(cfg, ctx) -> Loaders``."""

    def deco(fn: Callable[[dict, LoaderContext], Loaders]):
        DATASETS[name] = fn
        return fn

    return deco


def per_rank_batch(global_batch: int, world_size: int, what: str = "batch_size") -> int:
    """The per-rank share of a global batch; it must divide evenly so DDP matches one process."""
    if global_batch <= 0:
        raise DataError(f"{what} must be positive, got {global_batch}")
    if global_batch % world_size:
        raise DataError(f"{what}={global_batch} is not divisible by world_size={world_size}")
    return global_batch // world_size


def build_loaders(cfg: dict, ctx: LoaderContext) -> Loaders:
    name = cfg.get("name")
    if is_ref(name):  # a lab's data set: module:function returning (train, test) (data/plugin.py)
        if "batch_size" not in cfg:
            raise DataError(f"data config for {name!r} needs batch_size")
        from .plugin import build_plugin_loaders  # only for a lab's data set, which imports the lab's code

        return build_plugin_loaders(cfg, ctx)
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    if "batch_size" not in cfg:
        raise DataError(f"data config for {name!r} needs batch_size")
    return DATASETS[name](cfg, ctx)


def resolution_for_epoch(epoch: int, min_res: int, max_res: int, end_ramp: int, start_ramp: int = 0) -> int:
    """Progressive resizing as in ffcv-imagenet: min_res up to start_ramp, max_res from end_ramp,
    linear in between rounded to a multiple of 32 (keeps shapes friendly to conv kernels)."""
    if min_res > max_res:
        raise DataError(f"min_res={min_res} > max_res={max_res}")
    if epoch <= start_ramp:
        return min_res
    if epoch >= end_ramp:
        return max_res
    frac = (epoch - start_ramp) / (end_ramp - start_ramp)
    return int(round((min_res + frac * (max_res - min_res)) / 32)) * 32


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device):
    """Move a batch; non_blocking only pays off (and is only safe to request) for CUDA."""
    if x.device == device and y.device == device:
        return x, y
    nb = device.type == "cuda"
    return x.to(device, non_blocking=nb), y.to(device, non_blocking=nb)


# Registering the builders: these modules import only torch/numpy at top level.
from . import device_synthetic as _device_synthetic  # noqa: E402,F401
from . import ffcv_loaders as _ffcv_loaders  # noqa: E402,F401
from . import imagefolder as _imagefolder  # noqa: E402,F401
from . import memory as _memory  # noqa: E402,F401

__all__ = [
    "DATASETS",
    "DataError",
    "EpochLoader",
    "LoaderContext",
    "Loaders",
    "build_loaders",
    "per_rank_batch",
    "register",
    "resolution_for_epoch",
    "to_device",
]
