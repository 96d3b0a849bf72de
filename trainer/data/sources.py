"""Readers of raw data sets for the beton writer: each is an indexable of (HxWx3 uint8, int label).

- ImageFolderSource: a folder of class subfolders of images (JPEG/PNG/...), classes sorted by name
  as torchvision's ImageFolder does. ``verify()`` fully decodes every image and returns the ones
  that fail (corrupt or truncated), so the writer can skip them.
- CifarSource: the official python-pickle layout, as an archive (cifar-10-python.tar.gz) or its
  extracted folder; CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test with
  fine_labels), detected from the files present and unpickled safely (cifar_files.py).
- DigitsSource: scikit-learn's digits, same fixed 80/20 split as the in-memory ``digits`` data set,
  scaled to 0..255 and upscaled 4x (nearest) to 3x32x32 so image pipelines apply unchanged.
- SyntheticSource: the ``synthetic`` data set's Gaussian blobs mapped to uint8 RGB.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from . import DataError
from .cifar_files import read_cifar
from .memory import digits_split, load_digits_arrays, synthetic_arrays

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def load_rgb(path: str) -> np.ndarray:
    from PIL import Image  # PIL: only where image files are read

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _decode_error(path: str) -> str | None:
    try:
        load_rgb(path)
        return None
    except Exception as exc:  # noqa: BLE001 - any decode failure makes the image unusable
        return f"{type(exc).__name__}: {exc}"


class ImageFolderSource:
    def __init__(self, root: str):
        if not os.path.isdir(root):
            raise DataError(f"{root}: no such folder")
        self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        if not self.classes:
            raise DataError(f"{root}: no class subfolders (expected {root}/<class>/<image>)")
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            for dirpath, _, files in sorted(os.walk(os.path.join(root, name), followlinks=True)):
                for f in sorted(files):
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        self.samples.append((os.path.join(dirpath, f), label))
        if not self.samples:
            raise DataError(f"{root}: no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        return load_rgb(path), label

    def verify(self, workers: int = 1, advance=None) -> dict[int, str]:
        """Decode every image; return {index: error} of those that fail."""
        paths = [p for p, _ in self.samples]
        bad: dict[int, str] = {}
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                results = pool.map(_decode_error, paths, chunksize=64)
                for i, err in enumerate(results):
                    if err:
                        bad[i] = err
                    if advance:
                        advance()
        else:
            for i, p in enumerate(paths):
                err = _decode_error(p)
                if err:
                    bad[i] = err
                if advance:
                    advance()
        return bad


class CifarSource:
    """One split of CIFAR-10 or CIFAR-100 (the archive, its extracted folder, or a folder holding
    either), read by cifar_files (a restricted unpickler: no code runs from the files)."""

    def __init__(self, root: str, split: str = "train"):
        if split not in ("train", "test"):
            raise DataError(f"split must be train or test, got {split!r}")
        a = read_cifar(root)
        self.variant, self.num_classes = a.variant, a.num_classes
        x, y = (a.train_x, a.train_y) if split == "train" else (a.test_x, a.test_y)
        self.images = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        self.labels = y

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def digits_uint8(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) uint8 digits and labels, the in-memory data set's split."""

    images, labels = load_digits_arrays()
    tr, te = digits_split(labels)
    idx = tr if split == "train" else te
    img = np.round(images[idx] * (255.0 / 16.0)).astype(np.uint8)
    img = img.repeat(4, axis=1).repeat(4, axis=2)
    return np.ascontiguousarray(np.stack([img] * 3, axis=-1)), labels[idx]


class ArraySource:
    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int):
        self.images, self.labels, self.num_classes = images, labels, num_classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def digits_source(split: str = "train") -> ArraySource:
    return ArraySource(*digits_uint8(split), num_classes=10)


def synthetic_source(
    split: str = "train", *, size: int = 256, classes: int = 10, image_size: int = 32, data_seed: int = 0
) -> ArraySource:

    xtr, ytr, xte, yte = synthetic_arrays((3, image_size, image_size), classes, size, max(1, size // 4), data_seed)
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    img = np.clip(np.round(128 + 40 * x.numpy()), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return ArraySource(np.ascontiguousarray(img), y.numpy(), classes)
