"""Atomic checkpoints: write to a temporary file in the same folder, fsync, then rename.

A job killed mid-write leaves the previous checkpoint intact; a file that fails to load anyway
(disk damage, a copy gone wrong) raises CheckpointError naming the file, never a silent restart.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    pass


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises several types for truncated/corrupt pickles and zips
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: "
                              f"{exc}); move it aside to restart that level from its start") from None
