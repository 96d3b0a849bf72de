"""CIFAR-10/100 as users download it, read without running anything the files say.

Accepted (``find_cifar``), for CIFAR-10 and likewise for CIFAR-100:

- the archive ``cifar-10-python.tar.gz`` (``cifar-100-python.tar.gz``), read in place: members are
  read from the tar stream, nothing is extracted to disk;
- its extracted folder ``cifar-10-batches-py/`` (data_batch_1..5 and test_batch; CIFAR-100's
  ``cifar-100-python/``: train and test, labels under ``fine_labels``);
- a folder that holds either of those (``/datasets``, say).

The batches are Python pickles. They are loaded by ``SafeUnpickler``, which builds only the
containers a CIFAR batch is made of (dicts, lists, bytes, ints) and numpy arrays (the globals a
pickled ndarray names, and ``_codecs.encode``, through which Python 3 pickles bytes under
protocol 2); any other global (a class, ``os.system``) is refused and the file named. Each batch
must then be a dict with ``data`` (N x 3072 uint8, three 32x32 planes) and its labels (N ints in
range): a truncated archive, a missing batch, a wrong shape or a foreign pickle is a DataError
that names the file and what is wrong with it.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from typing import IO

import numpy as np

from . import DataError

# What each variant holds: its folder and archive names, the batch files per split, the label key.
LAYOUT = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "labels": "labels",
        "classes": 10,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "labels": "fine_labels",
        "classes": 100,
    },
}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
MAX_MEMBER_BYTES = 1 << 30  # CIFAR-100's train pickle is 155 MB; anything far larger is not CIFAR

# The globals a pickled numpy array (and Python 3's protocol-2 bytes) name; nothing else loads.
_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of `_ALLOWED` (numpy's under numpy 1 or 2)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refuses global {module}.{name} (a CIFAR batch holds only arrays)")
        if module == "_codecs":
            import _codecs  # only for a batch pickled by Python 3 (its bytes)

            return _codecs.encode
        if module == "numpy":
            return getattr(np, name)
        return getattr(_multiarray(), name)


def _multiarray():
    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def safe_unpickle(f: IO[bytes], name: str) -> object:
    try:
        return SafeUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - truncated, garbled or foreign: all mean "not a CIFAR batch"
        raise DataError(f"{name}: not a readable CIFAR batch ({type(exc).__name__}: {exc})") from None


@dataclass
class CifarArrays:
    """A CIFAR variant's two splits: images (N, 3, 32, 32) uint8 and labels (N,) int64."""

    variant: str
    source: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(LAYOUT[self.variant]["classes"])


def _key(d: dict, key: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(key)


def parse_batch(obj: object, name: str, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """A batch's images (N, 3, 32, 32) uint8 and labels, checked, or a DataError naming `name`."""
    label_key = str(LAYOUT[variant]["labels"])
    if not isinstance(obj, dict):
        raise DataError(f"{name}: not a CIFAR batch (a pickled {type(obj).__name__}, not a dict)")
    try:
        data, labels = _key(obj, "data"), _key(obj, label_key)
    except KeyError as exc:
        raise DataError(f"{name}: not a CIFAR batch (no {exc.args[0]!r} key)") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{name}: 'data' is a {what}, expected N x 3072 uint8 (three 32x32 planes)")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{name}: {label_key!r} is not a list of integers") from None
    if y.ndim != 1 or len(y) != len(data):
        raise DataError(f"{name}: {len(data)} images but {label_key!r} has shape {y.shape}")
    classes = int(LAYOUT[variant]["classes"])
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise DataError(f"{name}: labels outside 0..{classes - 1} (min {int(y.min())}, max {int(y.max())})")
    return data.reshape(-1, 3, 32, 32), y


def _variant_of(names: set[str]) -> str | None:
    for variant, lay in LAYOUT.items():
        if set(lay["train"]) & names or (variant == "cifar10" and "batches.meta" in names):
            return variant
    return None


def _assemble(variant: str, source: str, read) -> CifarArrays:
    """`read(member)` -> the parsed batch, per file of the layout."""
    lay = LAYOUT[variant]
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    for split in ("train", "test"):
        for member in lay[split]:
            parts[split].append(read(member))
    cat = {s: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v])) for s, v in parts.items()}
    return CifarArrays(variant, source, *cat["train"], *cat["test"])


def _read_folder(folder: str, variant: str) -> CifarArrays:
    def read(member: str):
        path = os.path.join(folder, member)
        if not os.path.isfile(path):
            holds = ", ".join(_files(variant))
            raise DataError(f"{path}: missing CIFAR batch file ({folder} should hold {holds})")
        if os.path.getsize(path) > MAX_MEMBER_BYTES:
            raise DataError(f"{path}: {os.path.getsize(path)} bytes, too large for a CIFAR batch")
        with open(path, "rb") as f:
            return parse_batch(safe_unpickle(f, path), path, variant)

    return _assemble(variant, folder, read)


def _files(variant: str) -> list[str]:
    return [*LAYOUT[variant]["train"], *LAYOUT[variant]["test"]]


def _read_archive(path: str, variant: str | None) -> CifarArrays:
    """Every batch of the archive, read from the tar stream in one pass (a .tar.gz cannot seek
    cheaply); the batches may sit in any folder of it (cifar-10-batches-py/ in the real one)."""
    found: dict[str, bytes] = {}
    wanted = {f for v in LAYOUT for f in _files(v)} | {"batches.meta", "meta"}
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                base = m.name.rsplit("/", 1)[-1]
                if base not in wanted or not m.isfile():
                    continue
                if m.size > MAX_MEMBER_BYTES:
                    raise DataError(f"{path}: member {m.name} is {m.size} bytes, too large for a CIFAR batch")
                f = tf.extractfile(m)
                if f is None:
                    continue
                found[base] = f.read()
                if len(found[base]) != m.size:
                    raise DataError(f"{path}: truncated archive (member {m.name} is cut short)")
    except DataError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CIFAR archive ({type(exc).__name__}: {exc})") from None
    got = _variant_of(set(found))
    if got is None:
        raise DataError(f"{path}: holds no CIFAR-10 or CIFAR-100 batches (data_batch_1..5, or train and test)")
    variant = variant or got
    if got != variant:
        raise DataError(f"{path}: a {_pretty(got)} archive, but the data set is {_pretty(variant)}")

    def read(member: str):
        if member not in found:
            raise DataError(f"{path}:{member}: missing CIFAR batch file (a truncated or incomplete archive?)")
        name = f"{path}:{member}"
        return parse_batch(safe_unpickle(io.BytesIO(found.pop(member)), name), name, variant)

    return _assemble(variant, path, read)


def _pretty(variant: str) -> str:
    return {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[variant]


def find_cifar(path: str, variant: str | None = None) -> tuple[str, str, str]:
    """(kind, path, variant) for what `path` names: kind "archive" or "folder"; DataError if
    it is neither a CIFAR archive, a batches folder, nor a folder that holds one."""
    if os.path.isfile(path):
        if not path.endswith(ARCHIVE_SUFFIXES):
            raise DataError(f"{path}: not a CIFAR archive (expected {' or '.join(ARCHIVE_SUFFIXES)})")
        return "archive", path, variant or ""
    if not os.path.isdir(path):
        raise DataError(f"{path}: no such file or folder (a CIFAR archive or its extracted folder)")
    names = set(os.listdir(path))
    got = _variant_of(names)
    if got is not None:
        if variant and got != variant:
            raise DataError(f"{path}: a {_pretty(got)} folder, but the data set is {_pretty(variant)}")
        return "folder", path, got
    for v in [variant] if variant else list(LAYOUT):
        lay = LAYOUT[v]
        if lay["folder"] in names:
            return find_cifar(os.path.join(path, str(lay["folder"])), v)
        if lay["archive"] in names:
            return "archive", os.path.join(path, str(lay["archive"])), v
    want = [LAYOUT[v]["archive"] for v in ([variant] if variant else LAYOUT)]
    raise DataError(f"{path}: no CIFAR batches here (expected {' or '.join(map(str, want))} or its folder)")


def read_cifar(path: str, variant: str | None = None) -> CifarArrays:
    """Both splits of the CIFAR archive or folder at `path`, checked (see the module docstring)."""
    kind, where, found = find_cifar(path, variant)
    if kind == "archive":
        return _read_archive(where, found or variant)
    return _read_folder(where, found)
