"""Preempted, killed and corrupted jobs: resume from the last checkpoint, same result as uninterrupted.

The reference run and the interrupted run live in separate folders and stores; the same spec gives
them the same level ids, so their trained weights can be compared bit for bit, level by level.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.inprocess import resume_here, status_here, status_json
from tests.sweeputil import (
    BRANCH,
    REPO,
    TP,
    TRUNK,
    run_progress,
    same_levels,
    slow_spec,
    wait_for,
    write_spec,
)


def _signal_trainer(tmp: Path, sig: int) -> None:
    subprocess.run(["pkill", f"-{sig}", "-f", f"trainer.job {tmp}"], check=False)


def _launch_in_background(tmp: Path, spec: dict) -> subprocess.Popen:
    path = write_spec(tmp, spec)
    return subprocess.Popen(
        [*TP, "launch", str(path)],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)},
    )


def _spec(tmp: Path) -> dict:
    """slow_spec("resume") with its output folder named in full: the resume runs in this process,
    whose cwd is not `tmp`. The same level ids as the reference's."""
    return {**slow_spec("resume"), "output_dir": str(tmp / "tp-runs")}


def _stop_at(tmp: Path, where: tuple[int, int], sig: int = signal.SIGTERM) -> str:
    launcher = _launch_in_background(tmp, _spec(tmp))
    wait_for(lambda: run_progress(tmp) >= where, 240, f"level {where[0]} epoch {where[1]}")
    _signal_trainer(tmp, sig)  # SIGTERM: what Slurm sends on requeue or preemption
    out, _ = launcher.communicate(timeout=120)
    return out


@pytest.mark.slow
def test_preempted_branch_resumes_to_the_same_weights(tmp_path, reference):
    ref, ids = reference
    out = _stop_at(tmp_path, (BRANCH, 1))  # in the middle of the branch level
    st = status_json("resume", tmp_path)["runs"][0]
    assert st["state"] == "PREEMPTED", out
    assert "checkpoint saved" in (st["message"] or "") and "branch 2" in st["message"]
    levels = tmp_path / "tp-runs" / "levels"
    assert (levels / ids[BRANCH] / "checkpoint.pt").exists()
    assert not (levels / ids[BRANCH] / "final.pt").exists() and (levels / ids[TRUNK] / "final.pt").exists()

    res = resume_here("resume", tmp_path).result
    assert res is not None and len(res.submitted) == 1  # "resubmitted 1 jobs"
    st = status_json("resume", tmp_path)["runs"][0]
    assert st["state"] == "COMPLETED" and st["attempts"] == 2
    assert same_levels(tmp_path / "tp-runs", ref, ids)


@pytest.mark.slow
def test_killed_job_is_lost_then_resumed(tmp_path, reference):
    ref, ids = reference
    launcher = _launch_in_background(tmp_path, _spec(tmp_path))
    wait_for(lambda: run_progress(tmp_path) >= (0, 2), 240, "level 0 to be under way")
    launcher.send_signal(signal.SIGKILL)  # the controller dies too: nobody records anything
    _signal_trainer(tmp_path, signal.SIGKILL)
    launcher.wait(timeout=30)
    wait_for(
        lambda: subprocess.run(["pgrep", "-f", f"trainer.job {tmp_path}"], capture_output=True).returncode != 0,
        30,
        "trainer to die",
    )
    assert status_json("resume", tmp_path)["runs"][0]["state"] == "RUNNING"
    # The job's wrapper process notices its trainer died and exits a moment later; from then on
    # the scheduler (here: the process table) no longer knows the job, and status says LOST.
    st = wait_for(
        lambda: (lambda s: s if s.as_json()["runs"][0]["state"] == "LOST" else None)(
            status_here("resume", tmp_path, env={"TP_LOST_AFTER_S": "0"})
        ),
        60,
        "status to report the run LOST",
        poll=1,
    )
    assert st.exit_code == 1  # a LOST run is a failed check
    resume_here("resume", tmp_path)
    assert status_json("resume", tmp_path)["runs"][0]["state"] == "COMPLETED"
    assert same_levels(tmp_path / "tp-runs", ref, ids)


@pytest.mark.slow
def test_corrupt_checkpoint_costs_only_its_own_level(tmp_path, reference):
    ref, ids = reference
    _stop_at(tmp_path, (TRUNK, 1))
    assert status_json("resume", tmp_path)["runs"][0]["state"] == "PREEMPTED"
    level = tmp_path / "tp-runs" / "levels" / ids[TRUNK]
    ckpt = level / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])  # a truncated file
    resume_here("resume", tmp_path, check=False)
    st = status_json("resume", tmp_path)["runs"][0]
    assert st["state"] == "FAILED"
    assert "checkpoint.pt is corrupt" in st["message"] and str(level) in st["message"]
    assert ckpt.exists()  # nothing is deleted behind the user's back
    # The user moves it aside: only that level starts over; level 0 is not trained again.
    ckpt.rename(level / "checkpoint.pt.bad")
    level0 = tmp_path / "tp-runs" / "levels" / ids[0] / "final.pt"
    before = level0.stat().st_mtime_ns
    resume_here("resume", tmp_path, include_failed=True)
    st = status_json("resume", tmp_path)["runs"][0]
    assert st["state"] == "COMPLETED" and st["attempts"] == 3
    assert level0.stat().st_mtime_ns == before
    assert same_levels(tmp_path / "tp-runs", ref, ids)
