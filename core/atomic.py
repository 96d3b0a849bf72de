"""Replacing a file atomically, the project's one way: write a temporary file in the same folder,
fsync it, rename it over the target. A reader (or a job restarted after SIGKILL) sees the old file
or the new one, never half of either. Files are created owner-only (mkstemp's 0600), which the
store-URL file relies on."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def write_atomic(
    path: str | os.PathLike, write: Callable[[IO[Any]], Any], *, binary: bool = True, sync_dir: bool = False
) -> None:
    """Replace `path` with what `write(file)` writes. `sync_dir` also makes the rename itself
    durable (checkpoints: a power cut must not bring back the previous epoch's file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if sync_dir:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, lambda f: f.write(text), binary=False)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_atomic(path, lambda f: json.dump(obj, f, indent=1, sort_keys=True, allow_nan=True), binary=False)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive flock on `path` (created readable by its owner only) for the block; released
    with the process, so a killed holder never leaves it taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
