"""Replacing a file atomically, the project's one way: write a temporary file in the same folder,
fsync it, rename it over the target. A reader (or a job restarted after SIGKILL) sees the old file
or the new one, never half of either. Files are created owner-only (mkstemp's 0600), which the
store-URL file relies on. A full disk (or quota) is an OSError that says so and names the file,
whatever the writer raised (torch's is `RuntimeError: ... unexpected pos`)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
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
    except BaseException as exc:
        full = _disk_full(exc, path.parent)  # before the temporary file is gone and frees its space
        if os.path.exists(tmp):
            os.unlink(tmp)
        if full:
            raise OSError(full, os.strerror(full), str(path)) from exc
        raise


_FULL = (errno.ENOSPC, errno.EDQUOT)
_NEARLY_FULL_BYTES = 1 << 20  # less than this free after a failed write: the disk filled


def _disk_full(exc: BaseException, folder: Path) -> int | None:
    """ENOSPC or EDQUOT when `exc` comes from a full disk or quota, else None. Torch's zip writer
    turns the OSError into `RuntimeError: [enforce fail at inline_container.cc] unexpected pos`,
    keeping it as the context (or, writing by path, losing it: then the free space tells)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and cause.errno in _FULL:
            return cause.errno
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, (OSError, RuntimeError)):
        try:
            if shutil.disk_usage(folder).free < _NEARLY_FULL_BYTES:
                return errno.ENOSPC
        except OSError:
            pass
    return None


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
