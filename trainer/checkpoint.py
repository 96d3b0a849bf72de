"""Atomic checkpoints, loaded without running any code.

Saving: write to a temporary file in the same folder, fsync, then rename, so a job killed mid-write
leaves the previous file intact. Epoch checkpoints are written by a BackgroundWriter from a host
copy of the state, while the next epoch trains.

Loading: `torch.load(weights_only=True)`, whose unpickler builds only tensors and plain containers
and refuses every other global, so a crafted file in a level folder cannot run anything. On top,
each kind of file must have exactly the structure the project writes (`_SHAPES`); anything else,
or a file that does not load (truncated, damaged, foreign), raises CheckpointError naming the file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from core.atomic import write_atomic
from core.errors import CheckFailed
from core.layout import BadFile, open_regular


class CheckpointError(CheckFailed, RuntimeError):
    """A checkpoint that cannot be read or does not fit the level: it is not used."""


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    write_atomic(path, lambda f: torch.save(obj, f), sync_dir=True)


def host_copy(obj: Any) -> Any:
    """`obj` with every tensor copied to host memory (a clone on the CPU; from a GPU, into pinned
    memory, asynchronously, then one synchronisation): dicts, lists and tuples rebuilt, other
    values shared (numbers, strings: immutable). What a background write saves while training
    goes on changing the originals."""
    from_gpu: list[bool] = []
    out = _host_copy(obj, from_gpu)
    if from_gpu:
        torch.cuda.synchronize()
    return out


def _host_copy(obj: Any, from_gpu: list[bool]) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device.type != "cuda":
            return t.clone()
        host = torch.empty_like(t, device="cpu", pin_memory=True)
        host.copy_(t, non_blocking=True)
        from_gpu.append(True)
        return host
    if isinstance(obj, dict):
        return {k: _host_copy(v, from_gpu) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_host_copy(v, from_gpu) for v in obj)
    return obj


class BackgroundWriter:
    """Writes one file at a time on a thread of its own, off the training loop's critical path.

    `submit` first waits for the write in flight; `wait` joins it and re-raises its error (an
    error is raised once, at the first wait after it happened: never lost). The write itself is
    the atomic one (temporary file, fsync, rename), so a process killed mid-write leaves the
    previous file whole."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[[], None]) -> None:
        self.wait()

        def run() -> None:
            try:
                write()
            except BaseException as exc:  # noqa: BLE001 - kept for wait(), which raises it
                self._error = exc

        self._thread = threading.Thread(target=run, name="checkpoint-writer", daemon=False)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error


# What each file holds: required top-level keys -> the type of their value ("tensors": a dict of
# name -> tensor). Optional keys may be None.
_TENSORS = "tensors"
_SHAPES: dict[str, dict[str, Any]] = {
    "weights": {"model": _TENSORS},  # init.pt
    "mask": {"mask": _TENSORS},  # mask.pt
    "final": {"model": _TENSORS, "mask": _TENSORS},  # final.pt
    "snapshot": {"model": _TENSORS, "optimizer": dict, "step": int},  # rewind_step<k>.pt
    "checkpoint": {
        "step": int,
        "model": _TENSORS,
        "optimizer": dict,
        "mask": _TENSORS,
        "best": float,
        "carry": (torch.Tensor, type(None)),
        "history": list,
        "rng": (torch.Tensor, type(None)),
    },
}


def _check(obj: Any, kind: str, path: Path) -> dict[str, Any]:
    shape = _SHAPES[kind]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a turboprune {kind} file (holds {type(obj).__name__})")
    missing = [k for k in shape if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is not a turboprune {kind} file (missing {', '.join(missing)})")
    for key, want in shape.items():
        value = obj[key]
        if want == _TENSORS:
            ok = isinstance(value, dict) and all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
            )
        elif want is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if not ok:
            raise CheckpointError(
                f"{path} is not a turboprune {kind} file ({key!r} holds an unexpected {type(value).__name__})"
            )
    return obj


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu", kind: str | None = None) -> Any:
    """Load a file the project wrote; with `kind`, also check its structure."""
    path = Path(path)
    try:
        fd = open_regular(path, str(path))  # never a symlink, never a FIFO that would block
    except BadFile as exc:
        raise CheckpointError(f"checkpoint {exc}; move it aside to restart that level from its start") from None
    try:
        with os.fdopen(fd, "rb") as f:
            obj = torch.load(f, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zips, bad pickles, and globals the safe unpickler refuses
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: "
            f"{first[:300]}); move it aside to restart that level from its start"
        ) from None
    return _check(obj, kind, path) if kind else obj


def load_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """init.pt, mask.pt, final.pt or a rewind snapshot, told apart by their keys."""
    obj = load(path, map_location)
    if isinstance(obj, dict):
        keys = set(obj)
        for kind in ("snapshot", "final", "weights", "mask"):
            if set(_SHAPES[kind]) == keys:
                return _check(obj, kind, Path(path))
    raise CheckpointError(f"{path} is not a turboprune weights, mask or snapshot file")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return load(path, map_location, kind="checkpoint")
