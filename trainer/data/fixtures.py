"""Small real-format inputs for tests and benchmarks (no data set can be downloaded here).

- ``make_image_folder``: class subfolders of JPEG (or PNG) files written by PIL; each class has its
  own colour so the classes are learnable.
- ``make_cifar_pickles``: fake CIFAR-10/100 batches in the official python-pickle layout.
"""

from __future__ import annotations

import os
import pickle

import numpy as np


def class_image(rng: np.random.Generator, label: int, classes: int, h: int, w: int) -> np.ndarray:
    """HxWx3 uint8: a class-specific base colour plus noise and a random bright square."""
    hue = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 151 + 160) % 256])
    img = hue + rng.normal(0, 25, (h, w, 3))
    y, x = rng.integers(0, max(1, h // 2)), rng.integers(0, max(1, w // 2))
    img[y : y + h // 3, x : x + w // 3] = 255
    return np.clip(img, 0, 255).astype(np.uint8)


def make_image_folder(
    root: str,
    classes: int = 3,
    per_class: int = 10,
    size=(40, 48),
    seed: int = 0,
    fmt: str = "JPEG",
    quality: int = 90,
) -> list[tuple[str, int]]:
    """Write root/class_k/img_i.jpg; returns [(path, label)] in ImageFolder order."""
    from PIL import Image  # PIL: only where image files are made

    rng = np.random.default_rng(seed)
    out = []
    ext = ".jpg" if fmt == "JPEG" else "." + fmt.lower()
    for c in range(classes):
        d = os.path.join(root, f"class_{c:03d}")
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            p = os.path.join(d, f"img_{i:05d}{ext}")
            kw = {"quality": quality} if fmt == "JPEG" else {}
            Image.fromarray(class_image(rng, c, classes, *size)).save(p, fmt, **kw)
            out.append((p, c))
    return out


def _dump(path: str, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar_pickles(
    root: str, variant: str = "cifar10", per_batch: int = 12, test_size: int = 10, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Official layout, bytes keys as in the real files; rows are 3072 = 3 planes of 32x32.
    Returns {"train": (N,32,32,3) uint8, labels), "test": (...)} for comparison."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    classes = 10 if variant == "cifar10" else 100

    def batch(n: int):
        labels = rng.integers(0, classes, n)
        imgs = np.stack([class_image(rng, int(c), classes, 32, 32) for c in labels])
        rows = imgs.transpose(0, 3, 1, 2).reshape(n, 3072)
        return imgs, labels, rows

    if variant == "cifar10":
        train_i, train_l = [], []
        for b in range(1, 6):
            imgs, labels, rows = batch(per_batch)
            _dump(
                os.path.join(root, f"data_batch_{b}"),
                {
                    b"batch_label": f"training batch {b} of 5".encode(),
                    b"labels": labels.tolist(),
                    b"data": rows,
                    b"filenames": [b"x.png"] * per_batch,
                },
            )
            train_i.append(imgs)
            train_l.append(labels)
        imgs, labels, rows = batch(test_size)
        _dump(
            os.path.join(root, "test_batch"),
            {b"batch_label": b"testing batch 1 of 1", b"labels": labels.tolist(), b"data": rows},
        )
        _dump(
            os.path.join(root, "batches.meta"),
            {
                b"label_names": [f"c{i}".encode() for i in range(10)],
                b"num_vis": 3072,
                b"num_cases_per_batch": per_batch,
            },
        )
        return {"train": (np.concatenate(train_i), np.concatenate(train_l)), "test": (imgs, labels)}
    out = {}
    for split, n in (("train", per_batch * 5), ("test", test_size)):
        imgs, labels, rows = batch(n)
        _dump(
            os.path.join(root, split),
            {
                b"filenames": [b"x.png"] * n,
                b"fine_labels": labels.tolist(),
                b"coarse_labels": (labels // 5).tolist(),
                b"data": rows,
            },
        )
        out[split] = (imgs, labels)
    _dump(
        os.path.join(root, "meta"),
        {
            b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"c{i}".encode() for i in range(20)],
        },
    )
    return out
