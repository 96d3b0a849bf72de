"""The same path through the real dev Slurm cluster: sbatch job arrays via submitit."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.sweeputil import LAST_LEVEL, final_weights, run_progress, same_weights, slow_spec, \
    status_json, tiny_spec, tp, wait_for, write_spec


def test_slurm_launch_runs_as_array_jobs(tmp_path, slurm_cluster):
    spec = tiny_spec("slurm_e2e", executor__procs_per_node=2, executor__cpus_per_task=1,
                     executor__array_parallelism=2)
    path = write_spec(tmp_path, spec)
    proc = tp("launch", str(path), "--executor", "slurm", cwd=tmp_path, check=True)
    assert "submitted 2 runs" in proc.stdout
    st = status_json("slurm_e2e", tmp_path)
    job_ids = [r["job_id"] for r in st["runs"]]
    master = job_ids[0].split("_")[0]
    assert all(j.startswith(master + "_") for j in job_ids), job_ids  # one array
    seen = subprocess.run(["squeue", "-h", "-r", "-j", master, "-o", "%i"], capture_output=True,
                          text=True).stdout.split()
    done_already = status_json("slurm_e2e", tmp_path)["counts"].get("COMPLETED", 0)
    assert seen or done_already == 2, "jobs must be visible in squeue while they run"
    wait_for(lambda: status_json("slurm_e2e", tmp_path)["counts"] == {"COMPLETED": 2}, 300,
             "both Slurm runs to complete", poll=2)
    # A second launch submits nothing and says so.
    again = tp("launch", str(path), "--executor", "slurm", cwd=tmp_path, check=True)
    assert "nothing to submit" in again.stdout
    logs = list((tmp_path / "tp-runs" / "_jobs" / "slurm_e2e").glob("*/*.out"))
    assert logs and any("trainer.job" in p.read_text() for p in logs)


def _requeue_then_complete(tmp_path, reference, interrupt) -> dict:
    ref_dir, run_id = reference
    path = write_spec(tmp_path, slow_spec("resume"))
    tp("launch", str(path), "--executor", "slurm", cwd=tmp_path, check=True)
    wait_for(lambda: run_progress(tmp_path) >= (1, 1), 300, "level 1 to start under Slurm")
    job_id = status_json("resume", tmp_path)["runs"][0]["job_id"]
    interrupt(job_id)
    run = wait_for(lambda: (lambda r: r if r["state"] in ("COMPLETED", "FAILED", "LOST") else None)(
        status_json("resume", tmp_path)["runs"][0]), 400, "the requeued job to finish", poll=2)
    assert run["state"] == "COMPLETED", run
    assert run["attempts"] == 2 and run["job_id"] == job_id  # the same array task, run again
    detail = json.loads(tp("status", run_id, "--format", "json", cwd=tmp_path).stdout)
    assert "PREEMPTED" in [e["to"] for e in detail["events"]]
    run_dir = tmp_path / "tp-runs" / run_id
    assert same_weights(final_weights(run_dir, LAST_LEVEL), final_weights(ref_dir, LAST_LEVEL))
    return detail


def test_scontrol_requeue_resumes_from_checkpoint(tmp_path, slurm_cluster, reference):
    """Preemption with requeue: Slurm sends SIGTERM; the trainer saves; the job comes back."""
    _requeue_then_complete(tmp_path, reference, lambda job: subprocess.run(
        ["scontrol", "requeue", job], check=True))


def test_usr2_checkpoints_and_requeues_through_submitit(tmp_path, slurm_cluster, reference):
    """The timeout/preemption warning (--signal=USR2@delay): submitit's checkpoint() asks the
    trainer ranks to save, then requeues the job itself."""
    detail = _requeue_then_complete(tmp_path, reference, lambda job: subprocess.run(
        ["scancel", "--signal=USR2", job], check=True))
    stopped = [e for e in detail["events"] if e["to"] == "PREEMPTED"]
    assert "SIGUSR2" in stopped[0]["message"]


def test_cancel_stops_the_jobs_and_records_it(tmp_path, slurm_cluster):
    path = write_spec(tmp_path, slow_spec("cancel_me"))
    tp("launch", str(path), "--executor", "slurm", cwd=tmp_path, check=True)
    job_id = status_json("cancel_me", tmp_path)["runs"][0]["job_id"]
    proc = tp("cancel", "cancel_me", cwd=tmp_path, check=True)
    assert "cancelled 1 runs" in proc.stdout
    wait_for(lambda: not subprocess.run(["squeue", "-h", "-r", "-j", job_id.split("_")[0], "-o", "%i"],
                                        capture_output=True, text=True).stdout.strip(), 60,
             "the job to leave the queue", poll=1)
    run = status_json("cancel_me", tmp_path)["runs"][0]
    assert run["state"] == "CANCELLED", run
    # A relaunch leaves a cancelled run alone; resume --include-failed brings it back.
    assert "nothing to submit" in tp("launch", str(path), "--executor", "slurm", cwd=tmp_path).stdout


def test_no_scheduler_means_nothing_submitted(tmp_path):
    """On a machine without Slurm's commands, launch says so and the runs stay PLANNED."""
    path = write_spec(tmp_path, tiny_spec("no_slurm"))
    venv_bin = os.path.dirname(sys.executable)
    proc = tp("launch", str(path), "--executor", "slurm", cwd=tmp_path,
              env={"PATH": f"{venv_bin}:/nonexistent"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "submission to slurm failed, nothing was submitted" in proc.stderr.replace("\n", " ")
    assert status_json("no_slurm", tmp_path)["counts"] == {"PLANNED": 2}
