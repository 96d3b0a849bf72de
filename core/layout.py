"""A level's folder on disk, the record of what it computed. Torch-free: the store imports results
from here (`tp-sweep db import`, launch, status) without loading any weights.

    LEVELS/<level id>/
        level.json           what the level computes (written at plan time; its hash is the id)
        init.pt              root levels: the seed's initial weights
        rewind_step<k>.pt    level 0: weights and optimizer at step k (imp_wr rewinds here)
        mask.pt              the mask this level trains under (pruning levels)
        checkpoint.pt        while training: the last epoch end or stop point
        final.pt             trained weights and mask
        metrics.json         written last: the level is finished when it exists
        .lock                held by the one process training the level
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.atomic import write_json_atomic
from core.levels import LevelSpec, LineageError

RESULT_FILE = "metrics.json"
LEVEL_ID = re.compile(r"[0-9a-f]{16}")  # content_hash's 16 hex digits: never a path
KINDS = ("dense", "oneshot", "trunk", "branch", "control")
# metrics.json: fractions that must lie in [0, 1] when present (None: not measured)
_FRACTIONS = ("achieved_sparsity", "network_sparsity", "test_acc", "test_top5", "best_test_acc", "train_acc")
_NUMBERS = ("test_loss", "train_loss", "seconds", "params", "nonzero_params", "flops_dense", "flops")


def is_level_id(value: Any) -> bool:
    return isinstance(value, str) and LEVEL_ID.fullmatch(value) is not None


class BadLevel(ValueError):
    """A level folder that must not be used: renamed, edited, truncated. The message says why."""


def check_description(data: Any, folder_name: str) -> LevelSpec:
    """LEVEL_DIR/level.json as a LevelSpec, or BadLevel: the folder is named after the id it
    holds, that id is the hash of the content, and every id in it is an id (never a path)."""
    if not isinstance(data, dict):
        raise BadLevel("level.json is not a JSON object")
    lid = data.get("level_id")
    if lid != folder_name:
        raise BadLevel(
            f"folder name {folder_name!r} differs from the level_id {lid!r} in level.json "
            "(renamed or copied folder)"
        )
    if not is_level_id(lid):
        raise BadLevel(f"level_id {lid!r} is not a level id")
    parent, root = data.get("parent"), data.get("root")
    if parent is not None and not is_level_id(parent):
        raise BadLevel(f"parent {parent!r} is not a level id")
    if not is_level_id(root):
        raise BadLevel(f"root {root!r} is not a level id")
    if data.get("kind") not in KINDS:
        raise BadLevel(f"kind {data.get('kind')!r} is not one of {', '.join(KINDS)}")
    depth = data.get("depth")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        raise BadLevel(f"depth {depth!r} is not a level depth")
    if parent is None and (root != lid or depth != 0):
        raise BadLevel("a level without a parent is its own root at depth 0")
    if parent is not None and depth == 0:
        raise BadLevel("a level with a parent has depth 1 or more")
    if not isinstance(data.get("train"), dict) or not isinstance(data.get("step"), (dict, type(None))):
        raise BadLevel("level.json lacks its train or step section")
    try:
        return LevelSpec.from_dict(data)
    except (LineageError, KeyError, TypeError, ValueError) as exc:
        raise BadLevel(str(exc).replace(f"level {lid}: ", "")) from None


def check_result(data: Any, folder_name: str) -> dict[str, Any]:
    """metrics.json, well-formed: an object naming its level, fractions in [0, 1], counts that are
    counts, and a history of epochs. Returns it; BadLevel says what is wrong."""
    if not isinstance(data, dict):
        raise BadLevel("metrics.json is not a JSON object")
    if data.get("level_id") != folder_name:
        raise BadLevel(f"metrics.json names level {data.get('level_id')!r}, not {folder_name!r}")
    for key in (*_FRACTIONS, *_NUMBERS):
        v = data.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise BadLevel(f"metrics.json: {key} {v!r} is not a number >= 0")
        if key in _FRACTIONS and v > 1:
            raise BadLevel(f"metrics.json: {key} {v!r} is not a fraction")
    epochs = data.get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise BadLevel(f"metrics.json: epochs {epochs!r} is not a count")
    history = data.get("history")
    if (
        not isinstance(history, list)
        or len(history) != epochs
        or not all(isinstance(h, dict) and isinstance(h.get("epoch"), int) for h in history)
    ):
        raise BadLevel("metrics.json: history is not a list of its epochs")
    prov = data.get("provenance")
    if prov is not None and not isinstance(prov, dict):
        raise BadLevel("metrics.json: provenance is not an object")
    return data


@dataclass(frozen=True)
class LevelCheck:
    """What a level folder holds: its description, its result (None: not finished), or why it
    must not be used (`problem`; then neither is given)."""

    spec: LevelSpec | None = None
    result: dict[str, Any] | None = None
    problem: str | None = None


def job_description(
    job_id: str,
    levels_dir: str,
    levels: list[str],
    snapshots: dict[str, list[dict[str, Any]]],
    runs: dict[str, Any],
    reuse: str = "any",
    code_dir: str | None = None,
) -> dict[str, Any]:
    """JOB_FILE, what `python -m trainer.job JOB_FILE` trains: its levels (in order, under
    levels_dir), the imp_wr rewind points its root levels write, the runs its levels serve
    (for recorders that report per run, such as W&B), the reuse policy it was planned under
    (same-code: a checkpoint started by other code is not continued), and the code snapshot
    its scheduler jobs import (core/code.py; None: the environment's)."""
    return {
        "job_id": job_id,
        "levels_dir": levels_dir,
        "levels": levels,
        "snapshots": snapshots,
        "runs": runs,
        "reuse": reuse,
        "code_dir": code_dir,
    }


def status_path(job_file: str | Path) -> Path:
    """Where a job's rank 0 leaves its outcome for the scheduler-side wrapper (slurm/job.py)."""
    p = Path(job_file)
    return p.with_name(p.stem + ".status.json")


class LevelDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def description(self) -> Path:
        return self.path / "level.json"

    @property
    def init(self) -> Path:
        return self.path / "init.pt"

    @property
    def mask(self) -> Path:
        return self.path / "mask.pt"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def final(self) -> Path:
        return self.path / "final.pt"

    @property
    def metrics(self) -> Path:
        return self.path / RESULT_FILE

    def snapshot(self, step: int) -> Path:
        return self.path / f"rewind_step{int(step)}.pt"

    def result(self) -> dict[str, Any] | None:
        """The finished level's metrics (with its per-epoch history), or None if not finished.
        A metrics.json without final.pt, or one that is not well-formed (check_result), does not
        count; `inspect` says why."""
        if not self.final.exists():
            return None
        try:
            return check_result(json.loads(self.metrics.read_text()), self.path.name)
        except (OSError, ValueError):  # BadLevel is a ValueError
            return None

    def write_result(self, result: dict[str, Any]) -> None:
        write_json_atomic(self.metrics, result)

    def read_spec(self) -> LevelSpec:
        """level.json, checked (check_description); BadLevel when it must not be used."""
        try:
            data = json.loads(self.description.read_text())
        except FileNotFoundError:
            raise BadLevel("no level.json") from None
        except (OSError, ValueError) as exc:
            raise BadLevel(f"level.json cannot be read ({type(exc).__name__})") from None
        return check_description(data, self.path.name)

    def inspect(self) -> LevelCheck:
        """Everything a reuse needs checked before it trusts the folder: level.json (name, hash,
        ids), and once finished, metrics.json well-formed beside final.pt. Reads no weights."""
        try:
            spec = self.read_spec()
            if not self.metrics.exists():  # written last: not finished (or finishing right now)
                return LevelCheck(spec)
            if not self.final.exists():
                raise BadLevel("metrics.json without final.pt (the trained weights are gone)")
            try:
                data = json.loads(self.metrics.read_text())
            except (OSError, ValueError) as exc:
                raise BadLevel(
                    f"metrics.json cannot be read ({type(exc).__name__}: truncated or edited)"
                ) from None
            result = check_result(data, self.path.name)
            code = (result.get("provenance") or {}).get("code")
            named = getattr(spec, "code", None)
            if named is not None and code != named:
                raise BadLevel(f"trained by code {code}, but its id names code {named}")
            return LevelCheck(spec, result)
        except BadLevel as exc:
            return LevelCheck(problem=str(exc))


class LevelLock:
    """One trainer per level at a time, across jobs, sweeps and stores that share the folder.

    Rank 0 holds an exclusive flock on LEVEL_DIR/.lock; `agree` makes every rank follow rank 0's
    answer (under DDP all ranks must decide alike). While another process holds it we wait,
    calling `on_wait` now and then (a heartbeat), and the caller re-checks whether the level got
    finished meanwhile. The lock goes with the process, so a killed trainer never leaves it held.
    """

    def __init__(
        self,
        d: LevelDir,
        is_main: bool,
        agree: Callable[[bool], bool],
        on_wait: Callable[[], None] | None = None,
        poll_s: float = 2.0,
    ) -> None:
        self.d, self.is_main, self.agree, self.on_wait, self.poll_s = d, is_main, agree, on_wait, poll_s
        self._fd: int | None = None

    def _try(self) -> bool:
        if not self.is_main:
            return True
        self.d.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.d.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def __enter__(self) -> LevelLock:
        last_beat = time.monotonic()
        while not self.agree(self._try()):
            if self._fd is not None:  # rank 0 got it but the ranks disagreed: cannot happen, but be tidy
                self._release()
            if self.on_wait and time.monotonic() - last_beat > 60:
                self.on_wait()
                last_beat = time.monotonic()
            time.sleep(self.poll_s)
        return self

    def _release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __exit__(self, *exc: object) -> None:
        self._release()
