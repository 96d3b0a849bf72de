"""FFCV loaders for .beton files (cifar10, cifar100, imagenet, beton).

Pipelines (NormalizeImage runs on the CPU in numba, BEFORE ToTensor: the other order hangs
``Loader()``; see shared NOTES.md):
  imagenet/beton train: RandomResizedCropRGBImageDecoder(res) -> RandomHorizontalFlip
                        -> NormalizeImage(float32) -> ToTensor -> ToTorchImage [-> ToDevice]
  imagenet/beton val:   CenterCropRGBImageDecoder(res, 224/256) -> NormalizeImage -> ...
  cifar train:          SimpleRGBImageDecoder -> RandomHorizontalFlip -> RandomTranslate(2, mean)
                        -> NormalizeImage -> ToTensor -> ToTorchImage [-> ToDevice]
  cifar val:            SimpleRGBImageDecoder -> NormalizeImage -> ToTensor -> ToTorchImage
  labels:               IntDecoder -> ToTensor -> Squeeze(1) [-> ToDevice]; yielded as int64.

Order: FFCV derives pass e's order from (loader seed, e): ``default_rng(seed + e)`` when not
distributed, a DistributedSampler with ``manual_seed(seed + e)`` when distributed. ``set_epoch(key)``
sets the Loader's ``next_epoch`` to ``key``. The Loader seed is ``ffcv_seed(ctx.seed)``, a spread
of the run seed: with the raw seed, run seed 1 pass 0 would replay run seed 0 pass 1.

Train uses FFCV's ``distributed=True`` under DDP (DistributedSampler pads so every rank yields the
same number of batches). Val does NOT: FFCV's distributed sequential order pads with duplicates, so
rank r reads ``indices = r::W`` instead (disjoint, covering; rank batch counts may differ by one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from . import DataError, LoaderContext, Loaders, per_rank_batch, register, resolution_for_epoch
from .beton_file import check_beton
from .cifar_device import build_device_cifar
from .normalisation import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD

DEFAULT_CROP_RATIO = 224 / 256


def ffcv_seed(seed: int) -> int:
    """Spread run seeds apart so FFCV's seed + epoch never aliases across nearby runs."""
    return (int(seed) * 1_000_003 + 12_345) % (2**31 - 1)


def beton_labels_and_size(path: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Labels (from the metadata, no decoding) and the largest image shape (3, H, W)."""
    from ffcv.reader import Reader  # FFCV (about 7 s)

    r = Reader(path)
    names = r.field_names
    if "image" not in names or "label" not in names:
        raise DataError(f"{path}: needs fields 'image' and 'label', has {names}")
    labels = np.asarray(r.metadata[f"f{names.index('label')}"])
    im = r.metadata[f"f{names.index('image')}"]
    return labels, (3, int(im["height"].max()), int(im["width"].max()))


class FFCVEpochLoader:
    """EpochLoader over an ffcv.loader.Loader: set_epoch picks the pass, yields float32/int64."""

    def __init__(self, loader, device: torch.device, decoder=None, res_schedule=None):
        self.loader = loader
        self.device = device
        self.decoder = decoder  # the resizing decoder, for progressive resizing
        self.res_schedule = res_schedule  # key -> resolution, or None
        self.key = 0

    def set_epoch(self, key: int) -> None:
        self.key = int(key)

    def resolution(self) -> int | None:
        return self.res_schedule(self.key) if self.res_schedule else None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.loader.next_epoch = self.key  # FFCV orders pass e by (seed, e)
        if self.res_schedule is not None:
            res = self.res_schedule(self.key)
            # Buffers are re-allocated per pass from output_size, so no recompile is needed.
            self.decoder.output_size = (res, res)
        self.key += 1
        for x, y in self.loader:
            yield x.float(), y.long()


def _image_pipeline(kind: str, train: bool, res: int, mean, std, device: torch.device):
    from ffcv.fields.rgb_image import (  # FFCV (about 7 s)
        CenterCropRGBImageDecoder,
        RandomResizedCropRGBImageDecoder,
        SimpleRGBImageDecoder,
    )
    from ffcv.transforms import (  # FFCV (about 7 s)
        NormalizeImage,
        RandomHorizontalFlip,
        RandomTranslate,
        ToDevice,
        ToTensor,
        ToTorchImage,
    )

    if kind == "cifar":
        decoder = SimpleRGBImageDecoder()
        augment = [RandomHorizontalFlip(), RandomTranslate(padding=2, fill=tuple(int(m) for m in mean))]
    elif train:
        decoder = RandomResizedCropRGBImageDecoder((res, res))
        augment = [RandomHorizontalFlip()]
    else:
        decoder = CenterCropRGBImageDecoder((res, res), ratio=DEFAULT_CROP_RATIO)
        augment = []
    ops = [
        decoder,
        *(augment if train else []),
        # float32 on the CPU: float16 is for GPU throughput, and the model here wants float32.
        NormalizeImage(np.array(mean), np.array(std), np.float32),
        ToTensor(),
        ToTorchImage(),
    ]
    if device.type == "cuda":
        ops.append(ToDevice(device, non_blocking=True))
    return ops, decoder


def _label_pipeline(device: torch.device):
    from ffcv.fields.basics import IntDecoder  # FFCV (about 7 s)
    from ffcv.transforms import Squeeze, ToDevice, ToTensor  # FFCV (about 7 s)

    # Squeeze(1), not Squeeze(): a last val batch of one example would otherwise become 0-dim.
    ops = [IntDecoder(), ToTensor(), Squeeze(1)]
    if device.type == "cuda":
        ops.append(ToDevice(device, non_blocking=True))
    return ops


def make_ffcv_loader(
    path: str, *, kind: str, train: bool, batch: int, ctx: LoaderContext, cfg: dict, res: int = 0, indices=None
):
    """An ffcv Loader plus its image decoder (returned for progressive resizing)."""
    from ffcv.loader import Loader, OrderOption  # FFCV (about 7 s)

    check_beton(path)
    mean = tuple(cfg.get("mean") or (CIFAR_MEAN if kind == "cifar" else IMAGENET_MEAN))
    std = tuple(cfg.get("std") or (CIFAR_STD if kind == "cifar" else IMAGENET_STD))
    img_ops, decoder = _image_pipeline(kind, train, res, mean, std, ctx.device)
    workers = int(cfg.get("num_workers") or max(1, (os.cpu_count() or 1) // ctx.world_size))
    loader = Loader(
        path,
        batch_size=batch,
        num_workers=workers,
        os_cache=bool(cfg.get("os_cache", True)),
        order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
        distributed=bool(train and ctx.distributed),
        seed=ffcv_seed(ctx.seed),
        indices=indices,
        drop_last=train,
        batches_ahead=int(cfg.get("batches_ahead", 3)),
        pipelines={"image": img_ops, "label": _label_pipeline(ctx.device)},
    )
    return loader, decoder


def check_ranks(ctx: LoaderContext) -> None:
    """FFCV shards the train set through torch.distributed, so the group must exist and agree."""
    if not ctx.distributed:
        if ctx.world_size != 1:
            raise DataError(
                f"world_size={ctx.world_size} without distributed=True: FFCV would "
                "give every rank the whole train set"
            )
        return
    import torch.distributed as dist  # torch (seconds)

    if not (dist.is_available() and dist.is_initialized()):
        raise DataError("ctx.distributed=True but torch.distributed is not initialised")
    if (dist.get_rank(), dist.get_world_size()) != (ctx.rank, ctx.world_size):
        raise DataError(
            f"ctx says rank {ctx.rank}/{ctx.world_size}, the process group says "
            f"{dist.get_rank()}/{dist.get_world_size()}"
        )


def build_ffcv(cfg: dict, ctx: LoaderContext, kind: str, num_classes: int | None) -> Loaders:
    for key in ("train_path", "val_path"):
        if not cfg.get(key):
            raise DataError(f"data set {cfg['name']!r} needs {key} (a .beton file)")
    n_train = check_beton(cfg["train_path"])
    n_val = check_beton(cfg["val_path"])
    check_ranks(ctx)
    bs = per_rank_batch(int(cfg["batch_size"]), ctx.world_size)
    tbs = per_rank_batch(int(cfg.get("test_batch_size") or cfg["batch_size"]), ctx.world_size, "test_batch_size")
    res = int(cfg.get("resolution", 224))
    val_res = int(cfg.get("val_resolution") or res)
    schedule = None
    if kind != "cifar" and cfg.get("min_res"):
        lo, hi = int(cfg["min_res"]), int(cfg.get("max_res") or res)
        end, start = int(cfg.get("end_ramp", 0)), int(cfg.get("start_ramp", 0))
        schedule = lambda k: resolution_for_epoch(k, lo, hi, end, start)  # noqa: E731
        res = schedule(0)
    subset = cfg.get("subset")
    train_idx = np.arange(min(int(subset), n_train)) if subset else None
    train_size = len(train_idx) if train_idx is not None else n_train
    if train_size < bs * ctx.world_size:
        raise DataError(f"{cfg['train_path']}: {train_size} examples, fewer than one batch")
    train, decoder = make_ffcv_loader(
        cfg["train_path"], kind=kind, train=True, batch=bs, ctx=ctx, cfg=cfg, res=res, indices=train_idx
    )
    val_idx = np.arange(n_val)[ctx.rank :: ctx.world_size]
    test, _ = make_ffcv_loader(
        cfg["val_path"], kind=kind, train=False, batch=tbs, ctx=ctx, cfg=cfg, res=val_res, indices=val_idx
    )
    labels, shape = beton_labels_and_size(cfg["train_path"])
    if num_classes is None:
        num_classes = int(cfg.get("num_classes") or int(labels.max()) + 1)
    input_shape = shape if kind == "cifar" else (3, val_res, val_res)
    train_res = res

    def train_shape(key: int) -> tuple[int, int, int]:
        if kind == "cifar":
            return input_shape
        side = schedule(key) if schedule is not None else train_res
        return (3, side, side)

    return Loaders(
        train=FFCVEpochLoader(train, ctx.device, decoder, schedule),
        test=FFCVEpochLoader(test, ctx.device),
        num_classes=num_classes,
        input_shape=input_shape,
        train_size=train_size,
        train_shape_of=train_shape,
    )


def build_cifar(cfg: dict, ctx: LoaderContext, variant: str, num_classes: int) -> Loaders:
    """data.loader picks the loader: absent (or ffcv) FFCV's, device the device-resident one
    (trainer/data/cifar_device.py), another computation, so it is part of the level's id."""
    loader = cfg.get("loader") or "ffcv"
    if loader == "device":
        return build_device_cifar(cfg, ctx, variant, num_classes)
    if loader != "ffcv":
        raise DataError(f"data.loader: {loader!r} is not one of ffcv, device")
    if cfg.get("root"):
        raise DataError("data.root is read by the device loader only: set data.loader: device, or leave root out")
    return build_ffcv(cfg, ctx, "cifar", num_classes)


@register("cifar10")
def build_cifar10(cfg: dict, ctx: LoaderContext) -> Loaders:
    return build_cifar(cfg, ctx, "cifar10", 10)


@register("cifar100")
def build_cifar100(cfg: dict, ctx: LoaderContext) -> Loaders:
    return build_cifar(cfg, ctx, "cifar100", 100)


@register("imagenet")
def build_imagenet(cfg: dict, ctx: LoaderContext) -> Loaders:
    return build_ffcv(cfg, ctx, "imagenet", 1000)


@register("beton")
def build_beton(cfg: dict, ctx: LoaderContext) -> Loaders:
    """Any image/label beton with the imagenet recipe (or cifar's with ``recipe: cifar``)."""
    return build_ffcv(cfg, ctx, "cifar" if cfg.get("recipe") == "cifar" else "imagenet", None)
