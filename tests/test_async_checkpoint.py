"""Epoch checkpoints written in the background: the state is copied to host memory, written by a
thread while the next epoch trains, waited for by a stop, the level's end and the next checkpoint;
a background error is raised, and a job killed mid-write resumes from the last complete file with
the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from trainer import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
STEPS = 7  # per epoch: 448 digits / 64

# A child process: one dense digits level, 4 epochs. With SLOW_AT set, the checkpoint of that step
# is written whole to its temporary file, then the writer announces it and sleeps before the rename.
CHILD = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, os.environ["REPO"])
import torch
from core.atomic import write_atomic, write_json_atomic
from core.config import resolve
from core.layout import LevelDir
from core.levels import plan_levels
from trainer import checkpoint as ckpt
from trainer.distributed import DistInfo, StopFlag
from trainer.level_trainer import LevelTrainer, NullRecorder

torch.set_num_threads(1)
root = Path(sys.argv[1])
slow_at = int(os.environ.get("SLOW_AT", "-1"))
real = ckpt.save_atomic


def save(obj, path):
    if Path(path).name == "checkpoint.pt" and obj["step"] == slow_at:
        def write(f):
            torch.save(obj, f)
            f.flush()
            (root / "writing").write_text(str(obj["step"]))
            time.sleep(120)
        write_atomic(path, write, sync_dir=True)
    else:
        real(obj, path)


ckpt.save_atomic = save
over = {"model.hidden": [16], "data.batch_size": 64, "data.subset": 448, "schedule.epochs": 4}
cfg = resolve("digits_mlp", over)
level = plan_levels("dense", cfg, [0.0]).levels[0]
write_json_atomic(LevelDir(root / level.level_id).description, level.description())
info = DistInfo(0, 1, 0, torch.device("cpu"))
LevelTrainer(level.train, root, info, NullRecorder(), StopFlag(info)).run_level(level)
print("DONE", level.level_id, flush=True)
"""


def _child(tmp: Path, root: Path, slow_at: int | None = None) -> subprocess.Popen:
    script = tmp / "child.py"
    script.write_text(CHILD)
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "REPO": str(REPO), "PYTHONPATH": str(REPO)}
    if slow_at is not None:
        env["SLOW_AT"] = str(slow_at)
    return subprocess.Popen(
        [sys.executable, str(script), str(root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


@pytest.mark.slow
def test_killed_mid_write_resumes_from_the_last_complete_checkpoint(tmp_path):
    ref = tmp_path / "ref"
    out = _finish(_child(tmp_path, ref))
    level_id = out.split("DONE ")[1].split()[0]
    # The checkpoint at the end of epoch 1 (step 14) hangs before its rename; epoch 2 trains on.
    run = tmp_path / "run"
    proc = _child(tmp_path, run, slow_at=2 * STEPS)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any("epoch 2]" in line for line in lines):  # the next epoch ended during the write
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.05)
    assert (run / "writing").read_text() == str(2 * STEPS)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    level = run / level_id
    state = ckpt.load_checkpoint(level / "checkpoint.pt")
    assert state["step"] == STEPS and len(state["history"]) == 1  # epoch 0's: the last complete one
    assert any(p.name.startswith(".checkpoint.pt.") for p in level.iterdir())  # the write that never landed
    assert not (level / "final.pt").exists()
    _finish(_child(tmp_path, run))  # resume, at full speed
    a = ckpt.load_weights(ref / level_id / "final.pt")["model"]
    b = ckpt.load_weights(level / "final.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (level / "checkpoint.pt").exists()


def test_host_copy_is_independent_of_the_originals():
    w = torch.ones(3)
    state = {"model": {"w": w}, "history": [{"epoch": 0}], "opt": {"state": {0: {"m": w * 2}}, "groups": [(1, 2)]}}
    copy = ckpt.host_copy(state)
    w.add_(1)
    state["history"].append({"epoch": 1})
    assert torch.equal(copy["model"]["w"], torch.ones(3)) and copy["history"] == [{"epoch": 0}]
    assert copy["opt"]["groups"] == [(1, 2)] and torch.equal(copy["opt"]["state"][0]["m"], torch.full((3,), 2.0))


def test_background_writer_waits_and_raises_its_error_once():
    writer = ckpt.BackgroundWriter()
    done: list[int] = []
    gate = threading.Event()
    writer.submit(lambda: (gate.wait(5), done.append(1)))
    assert writer.busy and not done
    gate.set()
    writer.submit(lambda: done.append(2))  # waits for the first
    writer.wait()
    assert done == [1, 2] and not writer.busy

    def fail() -> None:
        raise OSError(28, "No space left on device", "checkpoint.pt")

    writer.submit(fail)
    with pytest.raises(OSError, match="No space left"):
        writer.submit(lambda: done.append(3))  # the next submit's wait raises it; nothing more is written
    assert done == [1, 2]
    writer.wait()  # raised once: never again


def test_a_failed_background_write_fails_the_level(tmp_path, monkeypatch):
    from core.atomic import write_json_atomic
    from core.config import resolve
    from core.layout import LevelDir
    from core.levels import plan_levels
    from trainer.distributed import DistInfo
    from trainer.level_trainer import LevelTrainer, NullRecorder, _StopAt

    real = ckpt.save_atomic

    def save(obj, path):
        if Path(path).name == "checkpoint.pt" and obj["step"] == STEPS:
            raise OSError(28, "No space left on device", str(path))
        real(obj, path)

    monkeypatch.setattr(ckpt, "save_atomic", save)
    over = {"model.hidden": [8], "data.batch_size": 64, "data.subset": 448, "schedule.epochs": 2}
    cfg = resolve("digits_mlp", over)
    level = plan_levels("dense", cfg, [0.0]).levels[0]
    write_json_atomic(LevelDir(tmp_path / level.level_id).description, level.description())
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    with pytest.raises(OSError, match="No space left"):
        LevelTrainer(level.train, tmp_path, info, NullRecorder(), _StopAt(10**9)).run_level(level)
    d = tmp_path / level.level_id
    assert not (d / "final.pt").exists() and ckpt.load_checkpoint(d / "checkpoint.pt")["step"] == 0
