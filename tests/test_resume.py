"""Preempted, killed and corrupted runs: resume from the last checkpoint, same result as uninterrupted.

The reference run and the interrupted run live in separate folders and stores; the same spec gives
them the same run id, so their final weights can be compared bit for bit.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


from tests.sweeputil import LAST_LEVEL, REPO, TP, final_weights, run_progress, same_weights, \
    slow_spec, status_json, tp, wait_for, write_spec

def _signal_trainer(run_dir: Path, sig: int) -> None:
    subprocess.run(["pkill", f"-{sig}", "-f", f"trainer.job {run_dir}"], check=False)


def _launch_in_background(tmp: Path, spec: dict) -> subprocess.Popen:
    path = write_spec(tmp, spec)
    return subprocess.Popen([*TP, "launch", str(path)], cwd=tmp, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)})


def test_preempted_run_resumes_to_the_same_weights(tmp_path, reference):
    ref_dir, run_id = reference
    launcher = _launch_in_background(tmp_path, slow_spec("resume"))
    # Stop it in the middle of level 1, after at least one epoch of that level.
    wait_for(lambda: run_progress(tmp_path) >= (1, 1), 240, "level 1 to start")
    run_dir = tmp_path / "tp-runs" / run_id
    _signal_trainer(run_dir, signal.SIGTERM)  # what Slurm sends on requeue or preemption
    out, _ = launcher.communicate(timeout=120)
    st = status_json("resume", tmp_path)["runs"][0]
    assert st["state"] == "PREEMPTED", out
    assert "checkpoint saved" in (st["message"] or "")
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / f"level_{LAST_LEVEL}").exists()

    proc = tp("resume", "resume", cwd=tmp_path, check=True)
    assert "resubmitted 1 runs" in proc.stdout
    st = status_json("resume", tmp_path)["runs"][0]
    assert st["state"] == "COMPLETED" and st["attempts"] == 2
    for level in range(LAST_LEVEL + 1):
        assert same_weights(final_weights(run_dir, level), final_weights(ref_dir, level)), level


def test_killed_run_is_lost_then_resumed(tmp_path, reference):
    ref_dir, run_id = reference
    launcher = _launch_in_background(tmp_path, slow_spec("resume"))
    wait_for(lambda: run_progress(tmp_path) >= (0, 2), 240, "level 0 to be under way")
    run_dir = tmp_path / "tp-runs" / run_id
    launcher.send_signal(signal.SIGKILL)  # the controller dies too: nobody records anything
    _signal_trainer(run_dir, signal.SIGKILL)
    launcher.wait(timeout=30)
    wait_for(lambda: subprocess.run(["pgrep", "-f", f"trainer.job {run_dir}"],
                                    capture_output=True).returncode != 0, 30, "trainer to die")
    assert status_json("resume", tmp_path)["runs"][0]["state"] == "RUNNING"
    # The job's wrapper process notices its trainer died and exits a moment later; from then on
    # the scheduler (here: the process table) no longer knows the job, and status says LOST.
    proc = wait_for(lambda: (lambda p: p if '"state": "LOST"' in p.stdout else None)(
        tp("status", "resume", "--format", "json", cwd=tmp_path, env={"TP_LOST_AFTER_S": "0"})),
        60, "status to report the run LOST", poll=1)
    assert proc.returncode == 1  # a LOST run is a failed check
    tp("resume", "resume", cwd=tmp_path, check=True)
    st = status_json("resume", tmp_path)["runs"][0]
    assert st["state"] == "COMPLETED"
    assert same_weights(final_weights(run_dir, LAST_LEVEL), final_weights(ref_dir, LAST_LEVEL))


def test_corrupt_checkpoint_fails_with_a_clear_message(tmp_path, reference):
    _, run_id = reference
    launcher = _launch_in_background(tmp_path, slow_spec("resume"))
    wait_for(lambda: run_progress(tmp_path) >= (0, 1), 240, "the first epoch")
    run_dir = tmp_path / "tp-runs" / run_id
    _signal_trainer(run_dir, signal.SIGTERM)
    launcher.communicate(timeout=120)
    assert status_json("resume", tmp_path)["runs"][0]["state"] == "PREEMPTED"
    ckpt = run_dir / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])  # a truncated file
    tp("resume", "resume", cwd=tmp_path)
    st = status_json("resume", tmp_path)["runs"][0]
    assert st["state"] == "FAILED"
    assert "checkpoint.pt is corrupt" in st["message"] and str(run_dir) in st["message"]
    assert ckpt.exists()  # nothing is deleted behind the user's back
