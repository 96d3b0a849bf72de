"""FFCV loaders (cifar and imagenet recipes) and the ImageFolder fallback."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from trainer.data import LoaderContext, build_loaders
from trainer.data.fixtures import make_image_folder
from trainer.data.normalisation import CIFAR_MEAN, CIFAR_STD
from trainer.data.sources import ArraySource, synthetic_source
from trainer.data.write import write_beton, write_source

pytestmark = pytest.mark.ffcv


def indexed_beton(path: str, n: int, seed: int) -> np.ndarray:
    """A raw 32x32 beton whose label is the example's index, so loaders reveal their order."""
    src = synthetic_source("train", size=n, classes=4, image_size=32, data_seed=seed)
    write_source(ArraySource(src.images, np.arange(n), n), path, write_mode="raw", progress=False)
    return src.images


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifar_like")
    train, val = str(d / "train.beton"), str(d / "val.beton")
    images = {"train": indexed_beton(train, 200, 0), "val": indexed_beton(val, 50, 1)}
    cfg = {
        "name": "cifar10",
        "batch_size": 32,
        "test_batch_size": 16,
        "train_path": train,
        "val_path": val,
        "num_workers": 2,
    }
    return cfg, images


def ids(loader, key=None):
    if key is not None:
        loader.set_epoch(key)
    return torch.cat([y.clone() for _, y in loader])


@pytest.mark.slow
def test_cifar_loader_order_and_shapes(cifar_like):
    cfg, images = cifar_like
    L = build_loaders(cfg, LoaderContext(seed=5))
    assert (L.num_classes, L.input_shape, L.train_size) == (10, (3, 32, 32), 200)
    assert len(L.train) == 200 // 32 and len(L.test) == 4
    first = ids(L.train, 3)
    assert len(first) == 192 and len(set(first.tolist())) == 192  # shuffled, drop last, no repeats
    assert torch.equal(ids(L.train, 3), first)
    assert not torch.equal(ids(L.train, 4), first)
    x, y = next(iter(L.train))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    # val: fixed order, every example once, no augmentation: un-normalising gives the raw pixels
    xs, ys = zip(*[(x.clone(), y.clone()) for x, y in L.test])
    assert torch.equal(torch.cat(ys), torch.arange(50))
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    pixels = (torch.cat(xs) * std + mean).round().permute(0, 2, 3, 1)
    assert torch.equal(pixels.to(torch.uint8), torch.from_numpy(images["val"]))
    # a fresh loader (a resumed run) at the same key replays the order; another seed does not
    again = build_loaders(cfg, LoaderContext(seed=5))
    assert torch.equal(ids(again.train, 3), first)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    make_image_folder(str(root / "train"), classes=3, per_class=12, size=(48, 64), seed=0)
    make_image_folder(str(root / "val"), classes=3, per_class=4, size=(48, 64), seed=1)
    for split in ("train", "val"):
        write_beton(
            "imagefolder", str(root / split), str(root / f"{split}.beton"), write_mode="jpg", progress=False
        )
    return root


@pytest.mark.slow
def test_imagenet_recipe_with_progressive_resizing(folder):
    cfg = {
        "name": "beton",
        "batch_size": 8,
        "train_path": str(folder / "train.beton"),
        "val_path": str(folder / "val.beton"),
        "num_workers": 2,
        "resolution": 48,
        "val_resolution": 40,
        "min_res": 32,
        "max_res": 64,
        "end_ramp": 2,
        "subset": 24,
    }
    L = build_loaders(cfg, LoaderContext(seed=0))
    assert (L.num_classes, L.input_shape, L.train_size) == (3, (3, 40, 40), 24)
    L.train.set_epoch(0)
    assert len(L.train) == 3 and next(iter(L.train))[0].shape == (8, 3, 32, 32)
    L.train.set_epoch(2)
    assert next(iter(L.train))[0].shape == (8, 3, 64, 64)
    assert (L.train_shape(0), L.train_shape(2)) == ((3, 32, 32), (3, 64, 64))  # the cost's input
    x, y = zip(*[(x.clone(), y.clone()) for x, y in L.test])
    assert torch.cat(x).shape == (12, 3, 40, 40)
    assert torch.bincount(torch.cat(y)).tolist() == [4, 4, 4]
    assert torch.cat(x).abs().mean() < 3  # normalised, float32
    assert torch.cat(x).dtype == torch.float32


def test_imagefolder_fallback_matches_shapes_and_order_rules(folder):
    cfg = {"name": "imagefolder", "root": str(folder), "batch_size": 8, "resolution": 32, "num_workers": 0}
    L = build_loaders(cfg, LoaderContext(seed=1))
    assert (L.num_classes, L.input_shape, L.train_size, len(L.train)) == (3, (3, 32, 32), 36, 4)
    L.train.set_epoch(2)
    a = [(x, y) for x, y in L.train]
    L.train.set_epoch(2)
    b = [(x, y) for x, y in L.train]
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert a[0][0].shape == (8, 3, 32, 32)
    tested = build_loaders({**cfg, "val_resolution": 40}, LoaderContext(seed=1))
    assert (tested.input_shape, tested.train_shape(2)) == ((3, 40, 40), (3, 32, 32))
    ys = torch.cat([y for _, y in L.test])
    assert len(ys) == 12 and torch.bincount(ys).tolist() == [4, 4, 4]
    with pytest.raises(ValueError, match="no such folder"):
        build_loaders({**cfg, "root": str(folder / "nope")}, LoaderContext())


def test_missing_paths_are_clear(tmp_path):
    with pytest.raises(ValueError, match="train_path"):
        build_loaders({"name": "imagenet", "batch_size": 8}, LoaderContext())
    assert not os.path.exists(tmp_path / "x")
