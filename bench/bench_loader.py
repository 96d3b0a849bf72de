"""FFCV vs torchvision ImageFolder DataLoader on the same generated JPEGs, same recipe.

Writes N JPEGs (default 10,000 at 64x64, 10 classes) to a temp folder, converts them to a .beton
(JPEG mode), then times full train passes of both loaders as the trainer builds them
(``beton`` and ``imagefolder`` data sets: RandomResizedCrop(res) + flip + normalise, float32
NCHW, batch 256, 2 workers/threads), plus a bare torchvision DataLoader(shuffle=True) with the
same transforms, the baseline of the ratio. FFCV's first pass pays numba JIT: it is reported but
excluded from the throughput. Usage: python bench/bench_loader.py [--images N] [--passes P]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer.data import LoaderContext, build_loaders  # noqa: E402
from trainer.data.fixtures import make_image_folder  # noqa: E402
from trainer.data.write import write_beton  # noqa: E402


def time_pass(loader, key: int) -> tuple[float, int]:
    loader.set_epoch(key)
    t0 = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += x.shape[0]
    return time.perf_counter() - t0, n


class PlainLoader:
    """A bare torchvision DataLoader (shuffle=True, no per-example seeding): the fairest baseline."""

    def __init__(self, root: str, res: int, batch: int, workers: int):
        import torch

        from trainer.data.imagefolder import folder_transforms, open_image_folder
        from trainer.data.normalisation import IMAGENET_MEAN, IMAGENET_STD

        ds = open_image_folder(root, folder_transforms(True, res, IMAGENET_MEAN, IMAGENET_STD))
        self.dl = torch.utils.data.DataLoader(
            ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers
        )

    def set_epoch(self, key: int) -> None:
        pass

    def __iter__(self):
        return iter(self.dl)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--passes", type=int, default=3)
    args = p.parse_args()
    per_class = args.images // args.classes
    res = args.size
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for split, n in (("train", per_class), ("val", max(1, per_class // 10))):
            make_image_folder(
                os.path.join(tmp, split), args.classes, n, (args.size, args.size), seed=hash(split) % 1000
            )
        print(
            f"generated {per_class * args.classes} {args.size}x{args.size} JPEGs in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        for split in ("train", "val"):
            s = write_beton(
                "imagefolder",
                os.path.join(tmp, split),
                os.path.join(tmp, f"{split}.beton"),
                write_mode="jpg",
                jpeg_quality=90,
                num_workers=args.workers,
                progress=False,
            )
            print(f"wrote {split}.beton: {s.images} images, {s.bytes:,} bytes, {s.seconds:.1f} s")
        common = {"batch_size": args.batch_size, "num_workers": args.workers, "resolution": res}
        ctx = LoaderContext(seed=0)
        ffcv = build_loaders(
            {
                "name": "beton",
                "train_path": os.path.join(tmp, "train.beton"),
                "val_path": os.path.join(tmp, "val.beton"),
                **common,
            },
            ctx,
        ).train
        tv = build_loaders({"name": "imagefolder", "root": tmp, **common}, ctx).train
        plain = PlainLoader(os.path.join(tmp, "train"), res, args.batch_size, args.workers)
        jit_s, _ = time_pass(ffcv, 0)
        print(f"FFCV first pass (numba JIT included): {jit_s:.2f} s")
        rates = {}
        for name, loader in (("ffcv", ffcv), ("torchvision", plain), ("imagefolder", tv)):
            secs, imgs = zip(*[time_pass(loader, k) for k in range(1, 1 + args.passes)])
            rates[name] = sum(imgs) / sum(secs)
            print(
                f"{name:12s} {rates[name]:10,.0f} img/s  ({args.passes} passes of {imgs[0]} "
                f"images, {min(secs):.3f}-{max(secs):.3f} s per pass)"
            )
        print(
            f"ratio ffcv/torchvision: {rates['ffcv'] / rates['torchvision']:.1f}x; "
            f"ffcv/imagefolder (our seeded fallback): {rates['ffcv'] / rates['imagefolder']:.1f}x "
            f"(res {res}, batch {args.batch_size}, {args.workers} workers, {os.cpu_count()} CPUs)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
