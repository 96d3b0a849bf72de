"""A lab's data set by import path: `data.name: "mylab.data:make_datasets"`.

The function is called with the data section's other keys (all but the loader's own: name,
batch_size, test_batch_size, subset, num_workers, num_classes) and returns `(train, test)`,
two map-style torch Datasets whose items are `(image tensor (C, H, W), int label)`. The trainer
makes the loaders as for image folders (trainer/data/imagefolder.py): pass `key` shuffles the
training set with `default_rng([seed, key])`, each rank takes its contiguous part of every global
batch (the last partial batch dropped), the test set is split r::W, and each training example's
randomness (augmentations drawing from torch's global generator) is seeded by (seed, key, index):
two ranks see what one would, and a resumed pass repeats the same examples.

The input shape is the first test example's; the number of classes is `data.num_classes` when
set, else the training set's `num_classes` attribute, else `len(train.classes)`, else the largest
label of both sets plus one (every item is read once for it: set one of the others for a large set).
"""

from __future__ import annotations

from typing import Any

import torch

from core.plugins import PluginError, load, source_of, split_ref

from . import DataError, LoaderContext, Loaders
from .imagefolder import FolderTestLoader, FolderTrainLoader

LOADER_KEYS = ("name", "batch_size", "test_batch_size", "subset", "num_workers", "num_classes")


def options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The keys the lab's function is called with."""
    return {k: v for k, v in cfg.items() if k not in LOADER_KEYS}


def datasets(cfg: dict[str, Any]) -> tuple[Any, Any, str]:
    ref = str(cfg["name"])
    fn = load(ref, "data set")
    where = source_of(fn, split_ref(ref)[0])
    try:
        out = fn(**options(cfg))
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - the lab's function failed: one line that says where
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise PluginError(f"data set {ref!r} ({where}) raised {type(exc).__name__}: {first}") from exc
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise PluginError(
            f"data set {ref!r} ({where}): returned {type(out).__name__}, not (train, test) data sets"
        )
    for split, ds in zip(("train", "test"), out):
        if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__"):
            raise PluginError(f"data set {ref!r} ({where}): its {split} set is not a map-style Dataset")
        if len(ds) == 0:
            raise PluginError(f"data set {ref!r} ({where}): its {split} set is empty")
        item = ds[0]
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], torch.Tensor)):
            raise PluginError(f"data set {ref!r} ({where}): a {split} item is not (image tensor, label)")
        if item[0].dim() != 3:
            raise PluginError(
                f"data set {ref!r} ({where}): a {split} image has shape {tuple(item[0].shape)}, not (C, H, W)"
            )
    return out[0], out[1], f"data set {ref!r} ({where})"


def _label(y: Any) -> int:
    return int(y.item()) if isinstance(y, torch.Tensor) else int(y)


def num_classes(cfg: dict[str, Any], train: Any, test: Any) -> int:
    if cfg.get("num_classes"):
        return int(cfg["num_classes"])
    if isinstance(getattr(train, "num_classes", None), int):
        return int(train.num_classes)
    if getattr(train, "classes", None) is not None:
        return len(train.classes)
    return 1 + max(max(_label(ds[i][1]) for i in range(len(ds))) for ds in (train, test))


def build_plugin_loaders(cfg: dict[str, Any], ctx: LoaderContext) -> Loaders:
    train, test, who = datasets(cfg)
    shape = tuple(int(s) for s in test[0][0].shape)
    n = len(train)
    if cfg.get("subset"):
        n = min(n, int(cfg["subset"]))
    bs = int(cfg["batch_size"])
    if n < bs:
        raise DataError(f"{who}: {n} training examples, fewer than batch_size={bs}")
    workers = int(cfg.get("num_workers", 0))
    return Loaders(
        train=FolderTrainLoader(train, bs, ctx, workers, n),
        test=FolderTestLoader(test, int(cfg.get("test_batch_size") or bs), ctx, workers),
        num_classes=num_classes(cfg, train, test),
        input_shape=(shape[0], shape[1], shape[2]),
        train_size=n,
    )
