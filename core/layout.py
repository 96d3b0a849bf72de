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
import os
import time
from pathlib import Path
from typing import Any, Callable

from core.atomic import write_json_atomic

RESULT_FILE = "metrics.json"


def job_description(job_id: str, levels_dir: str, levels: list[str],
                    snapshots: dict[str, list[dict[str, Any]]], runs: dict[str, Any]) -> dict[str, Any]:
    """JOB_FILE, what `python -m trainer.job JOB_FILE` trains: its levels (in order, under
    levels_dir), the imp_wr rewind points its root levels write, and the runs its levels serve
    (for recorders that report per run, such as W&B)."""
    return {"job_id": job_id, "levels_dir": levels_dir, "levels": levels, "snapshots": snapshots,
            "runs": runs}


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
        A metrics.json without final.pt, or one that does not parse, does not count."""
        if not self.final.exists():
            return None
        try:
            data = json.loads(self.metrics.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("level_id") != self.path.name:
            return None
        return data

    def write_result(self, result: dict[str, Any]) -> None:
        write_json_atomic(self.metrics, result)


class LevelLock:
    """One trainer per level at a time, across jobs, sweeps and stores that share the folder.

    Rank 0 holds an exclusive flock on LEVEL_DIR/.lock; `agree` makes every rank follow rank 0's
    answer (under DDP all ranks must decide alike). While another process holds it we wait,
    calling `on_wait` now and then (a heartbeat), and the caller re-checks whether the level got
    finished meanwhile. The lock goes with the process, so a killed trainer never leaves it held.
    """

    def __init__(self, d: LevelDir, is_main: bool, agree: Callable[[bool], bool],
                 on_wait: Callable[[], None] | None = None, poll_s: float = 2.0) -> None:
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

    def __enter__(self) -> "LevelLock":
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
