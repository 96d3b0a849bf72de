"""What a level's numbers depend on besides its config and this project's code: the libraries its
model and data come from, and its data files. Recorded in each level's provenance
(trainer/provenance.py); `launch` compares what its reused levels recorded with what it would use
now, and says so in one line (other versions, other data) without refusing anything.

Versions are read from the installed distributions' metadata (importlib.metadata), never by
importing the libraries (torch alone costs seconds). A data file's fingerprint is its size and
the SHA-256 of its bytes when it is at most FULL_HASH_BYTES, else of its first and last MiB (a
.beton's header, field descriptions and metadata come first, its allocation table last: a beton
written from other data differs there); its mtime is recorded, never compared (a copy to another
cluster keeps the data and loses the time). A data folder's (imagefolder) is the names and mtimes
of the folder, its subfolders and theirs (train/, val/, each class folder): an image added or
removed changes its class folder's mtime; an image rewritten in place does not. Torch-free.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "torchvision", "timm", "scikit-learn", "ffcv", "numpy")
# The libraries a level's model or data set comes from, beyond torch and numpy (every level's).
MODEL_LIBRARIES = {
    "resnet18": ("torchvision",),
    "resnet50": ("torchvision",),
    "deit_tiny": ("timm",),
    "deit_small": ("timm",),
}
DATA_LIBRARIES = {
    "digits": ("scikit-learn",),
    "cifar10": ("ffcv",),
    "cifar100": ("ffcv",),
    "imagenet": ("ffcv",),
    "beton": ("ffcv",),
    "imagefolder": ("torchvision",),
}
DATA_PATH_KEYS = ("train_path", "val_path", "root")  # the data section's keys that name files
FULL_HASH_BYTES = 8 << 20
_EDGE = 1 << 20


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str | None]:
    """Each library's installed version (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = dist_version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def libraries_of(train: dict[str, Any]) -> tuple[str, ...]:
    """The libraries a training config's model and data come from."""
    model = (train.get("model") or {}).get("name")
    data = (train.get("data") or {}).get("name")
    return ("torch", "numpy", *MODEL_LIBRARIES.get(str(model), ()), *DATA_LIBRARIES.get(str(data), ()))


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any] | None:
    """{size, mtime, sha256, sampled} of a file or (kind folder) a folder; None when missing."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
        if p.is_dir():
            h = hashlib.sha256()
            entries = [p, *sorted(q for q in p.iterdir() if q.is_dir())]
            entries += sorted(r for q in entries[1:] for r in q.iterdir() if r.is_dir())
            for q in entries:
                h.update(f"{q.relative_to(p).as_posix()} {q.stat().st_mtime_ns}\n".encode())
            return {"kind": "folder", "folders": len(entries), "sha256": h.hexdigest()[:32], "mtime": st.st_mtime}
        with open(p, "rb") as f:
            if st.st_size <= FULL_HASH_BYTES:
                digest, sampled = hashlib.sha256(f.read()).hexdigest(), False
            else:
                h = hashlib.sha256(f.read(_EDGE))
                f.seek(st.st_size - _EDGE)
                h.update(f.read(_EDGE))
                digest, sampled = h.hexdigest(), True
    except OSError:
        return None
    return {"size": st.st_size, "sha256": digest[:32], "sampled": sampled, "mtime": st.st_mtime}


def data_fingerprint(data: dict[str, Any]) -> dict[str, Any]:
    """The data section's files, each with its fingerprint (None: missing); {} for data made in
    memory (synthetic) or shipped with a library (digits: scikit-learn's version says it)."""
    return {
        key: {"path": str(data[key]), "fingerprint": file_fingerprint(data[key])}
        for key in DATA_PATH_KEYS
        if data.get(key)
    }


def _same(recorded: dict[str, Any] | None, now: dict[str, Any] | None) -> bool:
    keys = ("kind", "size", "sha256")  # never the mtime
    return recorded is not None and now is not None and all(recorded.get(k) == now.get(k) for k in keys)


def input_changes(provenance: dict[str, Any], train: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """What differs between the inputs a level recorded and `now` ({"libraries", "data"}, what a
    launch would use): {"libraries": {name: recorded version}, "data": [keys]}; {"unrecorded":
    True} for a level trained before inputs were recorded."""
    if "libraries" not in provenance:
        return {"unrecorded": True}
    libs = provenance.get("libraries") or {}
    out: dict[str, Any] = {}
    other = {n: libs.get(n) for n in libraries_of(train) if libs.get(n) != now["libraries"].get(n)}
    if other:
        out["libraries"] = other
    recorded = provenance.get("data") or {}
    keys = sorted(set(recorded) | set(now["data"]))
    data = [
        k
        for k in keys
        if not _same((recorded.get(k) or {}).get("fingerprint"), (now["data"].get(k) or {}).get("fingerprint"))
    ]
    if data:
        out["data"] = data
    return out
