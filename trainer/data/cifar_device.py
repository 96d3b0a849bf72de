"""cifar10/cifar100 with ``data.loader: device``: the whole data set resident on the training
device, augmented there per batch (airbench-style). On a GPU, no loader process, no decoding, no
host-to-device copy per batch; on the CPU the same code runs on CPU tensors (the tests).

Data: ``data.root``, the CIFAR archive as downloaded (``cifar-10-python.tar.gz``), its extracted
folder or a folder holding either (trainer/data/cifar_files.py reads them, safely); without
``root``, the ``train_path``/``val_path`` betons, decoded once through FFCV's own reader (in
order, no augmentation) into the same arrays. Both splits are kept as uint8 NHWC on ctx.device:
60,000 x 3 KB, 184 MB.

Train pass ``key``: everything random is drawn at once for the whole pass, on the CPU from a
``torch.Generator`` seeded by (ctx.seed, key) alone, then moved to the device: the order (a
permutation of the N examples) and, per position in that order, a horizontal flip (p = 1/2) and
a translation (dx, dy in [0, 2 * PAD]: reflect-pad by PAD = 4, crop 32 x 32 at (dx, dy)). Global
batch i is positions [i*B, (i+1)*B) and rank r takes its contiguous chunk of them, so W ranks see
exactly the batch one process sees, decisions included; a resumed pass (same key) sees the same
batches as an uninterrupted one; the batches are the same on a GPU and on the CPU. The last
partial global batch is dropped, as in the in-memory sets.

A batch is one gather on the uint8 images (flip and reflect-padded crop are index arithmetic:
the padded image is never built), then float and normalisation with ``mean``/``std`` (0..255
scale, CIFAR's by default): x float32 NCHW with channels_last strides (FFCV's layout), y int64.
Test: fixed order, normalised only, rank r takes examples r::W.

This is another computation than the FFCV loader (another order, another augmentation: FFCV's
cifar recipe translates by 2 with mean fill), so a level trained with it has its own id; see
docs/data.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from . import DataError, LoaderContext, Loaders, per_rank_batch
from .beton_file import check_beton
from .cifar_files import read_cifar
from .device_synthetic import DeviceTestLoader, draw_seed
from .normalisation import CIFAR_MEAN, CIFAR_STD, Normalise

PAD = 4  # translation: reflect-pad by 4, random 32 x 32 crop (open_lth's and airbench's kind)
SIZE = 32
_STREAM = 0xC1FA  # keeps this loader's draws apart from any other (seed, key) stream


def epoch_draws(n: int, seed: int, key: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pass `key`'s order and per-position decisions (perm, flip, dx, dy), CPU tensors: a pure
    function of (n, seed, key)."""
    g = torch.Generator().manual_seed(draw_seed(_STREAM, seed, key))
    perm = torch.randperm(n, generator=g)
    flip = torch.randint(0, 2, (n,), generator=g, dtype=torch.int64).bool()
    shift = torch.randint(0, 2 * PAD + 1, (2, n), generator=g, dtype=torch.int64)
    return perm, flip, shift[0], shift[1]


def _reflect(c: torch.Tensor) -> torch.Tensor:
    """Index into the image of a coordinate of its reflect-padded version (no edge repeat)."""
    c = c.abs()
    return torch.where(c > SIZE - 1, 2 * (SIZE - 1) - c, c)


class DeviceCifarTrain:
    def __init__(self, x: torch.Tensor, y: torch.Tensor, global_batch: int, ctx: LoaderContext, norm: Normalise):
        self.x, self.y, self.ctx, self.norm = x, y, ctx, norm
        self.global_batch = global_batch
        self.local_batch = per_rank_batch(global_batch, ctx.world_size)
        if len(x) < global_batch:
            raise DataError(f"train set has {len(x)} examples, fewer than batch_size={global_batch}")
        self.key = 0
        self._ar = torch.arange(SIZE, device=x.device)

    def set_epoch(self, key: int) -> None:
        self.key = int(key)

    def __len__(self) -> int:
        return len(self.x) // self.global_batch

    def augment(self, idx: torch.Tensor, flip: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        """Images `idx`, flipped where `flip`, translated by (dx, dy) - PAD with reflection:
        one gather of (B, 32, 32, 3) uint8, then normalised."""
        rows = _reflect(dy[:, None] - PAD + self._ar)  # (B, 32)
        cols = _reflect(dx[:, None] - PAD + self._ar)
        cols = torch.where(flip[:, None], SIZE - 1 - cols, cols)
        return self.norm(self.x[idx[:, None, None], rows[:, :, None], cols[:, None, :]])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        dev = self.x.device
        perm, flip, dx, dy = (t.to(dev) for t in epoch_draws(len(self.x), self.ctx.seed, self.key))
        self.key += 1  # without a set_epoch call the next pass still gets a fresh order
        lo = self.ctx.rank * self.local_batch
        for i in range(len(self)):
            s = slice(i * self.global_batch + lo, i * self.global_batch + lo + self.local_batch)
            yield self.augment(perm[s], flip[s], dx[s], dy[s]), self.y[perm[s]]


def beton_arrays(path: str, num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-shaped beton's images (N, 32, 32, 3) uint8 and labels, decoded once in order by
    FFCV's own reader (betons have no other reader; FFCV is imported here only)."""
    import os  # with FFCV's imports below, only for betons

    from ffcv.fields.basics import IntDecoder  # FFCV (about 7 s)
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder  # FFCV (about 7 s)
    from ffcv.loader import Loader, OrderOption  # FFCV (about 7 s)
    from ffcv.transforms import Squeeze, ToTensor  # FFCV (about 7 s)

    n = check_beton(path)
    if n < 1:
        raise DataError(f"{path}: an empty .beton")
    try:
        loader = Loader(
            path,
            batch_size=min(n, 1000),
            num_workers=num_workers or max(1, min(8, os.cpu_count() or 1)),
            order=OrderOption.SEQUENTIAL,
            drop_last=False,
            pipelines={
                "image": [SimpleRGBImageDecoder(), ToTensor()],
                "label": [IntDecoder(), ToTensor(), Squeeze(1)],
            },
        )
        xs, ys = [], []
        for x, y in loader:
            xs.append(x.clone().numpy())  # FFCV reuses its buffers
            ys.append(y.clone().long().numpy())
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a beton of other fields or sizes fails inside FFCV
        raise DataError(f"{path}: not a CIFAR-shaped .beton ({type(exc).__name__}: {exc})") from None
    x, y = np.concatenate(xs), np.concatenate(ys)
    if x.shape[1:] != (SIZE, SIZE, 3):
        raise DataError(f"{path}: images of shape {x.shape[1:]}, expected 32 x 32 x 3")
    return x, y


def load_arrays(cfg: dict, variant: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train x NHWC uint8, train y, test x, test y) from data.root or the betons."""
    if cfg.get("root"):
        a = read_cifar(str(cfg["root"]), variant)
        nhwc = lambda x: np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # noqa: E731
        return nhwc(a.train_x), a.train_y, nhwc(a.test_x), a.test_y
    for key in ("train_path", "val_path"):
        if not cfg.get(key):
            raise DataError(f"data.loader device needs data.root (a CIFAR archive or folder) or data.{key}")
    workers = int(cfg.get("num_workers") or 0)
    return (*beton_arrays(cfg["train_path"], workers), *beton_arrays(cfg["val_path"], workers))


def build_device_cifar(cfg: dict, ctx: LoaderContext, variant: str, num_classes: int) -> Loaders:

    xtr, ytr, xte, yte = load_arrays(cfg, variant)
    for name, y in (("train", ytr), ("test", yte)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise DataError(f"{variant} {name} labels outside 0..{num_classes - 1}")
    if cfg.get("subset"):
        xtr, ytr = xtr[: int(cfg["subset"])], ytr[: int(cfg["subset"])]
    mean, std = cfg.get("mean") or CIFAR_MEAN, cfg.get("std") or CIFAR_STD
    norm = Normalise(mean, std, ctx.device)
    bs = int(cfg["batch_size"])
    tbs = int(cfg.get("test_batch_size") or bs)

    def dev(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(ctx.device)

    return Loaders(
        train=DeviceCifarTrain(dev(xtr), dev(ytr).long(), bs, ctx, norm),
        test=DeviceTestLoader(dev(xte), dev(yte).long(), tbs, ctx, norm),
        num_classes=num_classes,
        input_shape=(3, SIZE, SIZE),
        train_size=len(xtr),
    )
