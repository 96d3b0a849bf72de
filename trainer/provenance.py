"""Who computed a level: the code (core/code.py), the libraries and the machines. Written into the
level's metrics.json ("provenance") when it finishes, and from there into the store.

    code         the level's code identity (training code, and its criterion's pruning code)
    sources      the identity of the whole tree it came from; version (core.version())
    git          {commit, diff}: the checkout's commit and a hash of its uncommitted changes, or
                 the launch's when the job ran from a snapshot; null elsewhere (an installed
                 package: `sources` identifies it)
    snapshot     the snapshot folder the job imported from (null when run from a checkout)
    torch, ffcv, cuda, cudnn, python, device, world_size, hosts
    libraries    the installed versions of torch, torchvision, timm, scikit-learn, ffcv and numpy
                 (core/inputs.py: read from their metadata, none imported for it)
    data         the data section's files (train_path, val_path, root), each with its path and
                 fingerprint (size and a hash of its bytes, or of its first and last MiB)
    attempts     one entry per attempt that trained part of the level (a preempted level resumed
                 elsewhere has several); `codes` lists the distinct codes among them, so a level
                 trained by two code versions says so
"""

from __future__ import annotations

import json
import platform
import socket
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import torch

from core import version
from core.code import MANIFEST, ROOT, CodeIdentity, code_identity, git_info
from core.inputs import data_fingerprint, library_versions
from trainer.distributed import DistInfo


def _ffcv() -> str | None:
    try:  # the distribution's metadata: importing ffcv itself costs seconds
        return dist_version("ffcv")
    except PackageNotFoundError:
        return None


def _device(info: DistInfo) -> str:
    if info.device.type == "cuda":
        return torch.cuda.get_device_name(info.device)
    return f"cpu ({platform.processor() or platform.machine()})"


def hosts(info: DistInfo) -> list[str]:
    """Every rank's host (a collective: every rank calls it)."""
    me = socket.gethostname()
    if not info.distributed:
        return [me]
    import torch.distributed as dist  # torch (seconds)

    got: list[Any] = [None] * info.world_size
    dist.all_gather_object(got, me)
    return sorted({str(h) for h in got})


class Provenance:
    """What a trainer process knows about itself, once (rank 0 writes it)."""

    def __init__(
        self, info: DistInfo, code: CodeIdentity | None = None, data: dict[str, Any] | None = None
    ) -> None:
        self.code = code or code_identity()
        # Plain JSON values only: checkpoints carry them, and load with weights_only (torch's
        # __version__ is a str subclass its safe unpickler refuses).
        env: dict[str, Any] = {
            "sources": self.code.sources,
            "version": version(),
            "git": git_info(),
            "snapshot": str(ROOT) if (Path(ROOT) / MANIFEST).exists() else None,
            "torch": torch.__version__,
            "ffcv": _ffcv(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "python": sys.version.split()[0],
            "device": _device(info),
            "world_size": info.world_size,
            "hosts": hosts(info),
            "libraries": library_versions(),
            "data": data_fingerprint(data or {}) if info.is_main else {},  # rank 0 writes it
        }
        self.env = json.loads(json.dumps(env, default=str))

    def attempt(self, step: dict[str, Any] | None, model: str | None, data: str | None = None) -> dict[str, Any]:
        """This process's part in a level: recorded in its checkpoints, kept across attempts."""
        return {
            "code": self.code.for_step(step, model, data),
            "sources": self.env["sources"],
            "git": self.env["git"],
            "hosts": self.env["hosts"],
            "world_size": self.env["world_size"],
            "device": self.env["device"],
            "torch": self.env["torch"],
        }

    def of_level(
        self,
        step: dict[str, Any] | None,
        model: str | None,
        attempts: list[dict[str, Any]],
        data: str | None = None,
    ) -> dict[str, Any]:
        codes = list(dict.fromkeys(a.get("code") for a in attempts if a.get("code")))
        return {"code": self.code.for_step(step, model, data), **self.env, "attempts": attempts, "codes": codes}
