"""The same path through the real dev Slurm cluster: sbatch job arrays via submitit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import sqlalchemy as sa

from tests.sweeputil import (
    BRANCH,
    TRUNK,
    epochs_trained,
    run_progress,
    same_levels,
    slow_spec,
    status_json,
    tiny_spec,
    tp,
    wait_for,
    write_spec,
)


def test_slurm_launch_runs_as_array_jobs(tmp_path, slurm_cluster):
    spec = tiny_spec(
        "slurm_e2e", executor__procs_per_node=2, executor__cpus_per_task=1, executor__array_parallelism=2
    )
    # imp and imp_lrr share level 0: one job trains it, and their two jobs wait for it through a
    # Slurm dependency (one array); snip shares nothing and runs beside level 0 (same array).
    spec["grid"] = {"method": ["imp", "imp_lrr", "snip"], "sparsity": [0.5], "seed": [0]}
    path = write_spec(tmp_path, spec)
    proc = tp("launch", str(path), "--executor", "slurm", cwd=tmp_path, check=True)
    assert "submitted 4 jobs" in proc.stdout, proc.stdout
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'tp-results.db'}")
    with eng.connect() as c:
        jobs = c.execute(sa.text("select job_id, sched_id, depends_on from jobs")).all()
    eng.dispose()
    first = [j for j in jobs if j.depends_on == "[]"]
    waiting = [j for j in jobs if j.depends_on != "[]"]
    assert len(first) == 2 and len(waiting) == 2
    arrays = {j.sched_id.split("_")[0] for j in first}, {j.sched_id.split("_")[0] for j in waiting}
    assert len(arrays[0]) == 1 and len(arrays[1]) == 1 and arrays[0] != arrays[1]  # two arrays
    level0 = next(j for j in first if j.job_id in waiting[0].depends_on)
    scripts = list((tmp_path / "tp-runs" / "_jobs" / "slurm_e2e").glob(f"{next(iter(arrays[1]))}/*submission.sh"))
    assert scripts and f"#SBATCH --dependency=afterok:{level0.sched_id}" in scripts[0].read_text()
    seen = subprocess.run(
        ["squeue", "-h", "-r", "-j", ",".join(arrays[0] | arrays[1]), "-o", "%i"], capture_output=True, text=True
    ).stdout.split()
    done_already = status_json("slurm_e2e", tmp_path)["counts"].get("COMPLETED", 0)
    assert seen or done_already == 3, "jobs must be visible in squeue while they run"
    wait_for(
        lambda: status_json("slurm_e2e", tmp_path)["counts"] == {"COMPLETED": 3},
        300,
        "every Slurm run to complete",
        poll=2,
    )
    # A second launch submits nothing and says so.
    again = tp("launch", str(path), "--executor", "slurm", cwd=tmp_path, check=True)
    assert "nothing to submit" in again.stdout
    logs = list((tmp_path / "tp-runs" / "_jobs" / "slurm_e2e").glob("*/*.out"))
    assert logs and any("trainer.job" in p.read_text() for p in logs)
    assert epochs_trained(tmp_path, "slurm_e2e") == 4  # four levels, one epoch each, each once


_STOP_SIGNALS = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGUSR2 - 1))


def _frozen_trainer(tmp_path) -> list[int]:
    """SIGSTOP every process of the trainer on this test's job file (torchrun and its ranks)."""
    out = subprocess.run(["pgrep", "-f", f"trainer.job {tmp_path}"], capture_output=True, text=True).stdout
    pids = [int(x) for x in out.split()]
    assert pids, "no trainer process to freeze"
    for pid in pids:
        _signal(pid, signal.SIGSTOP)
    return pids


def _signalled(pid: int) -> bool:
    """The interrupt reached this frozen process: SIGTERM or SIGUSR2 is pending on it, or someone
    else resumed it (slurmstepd sends SIGCONT before SIGTERM), or it is gone."""
    try:
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        return True
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
    return bool(pending & _STOP_SIGNALS) or not fields["State"].strip().startswith("T")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _requeue_then_complete(tmp_path, reference, interrupt, where: tuple[int, int]) -> dict:
    ref, ids = reference
    path = write_spec(tmp_path, slow_spec("resume"))
    tp("launch", str(path), "--executor", "slurm", cwd=tmp_path, check=True)
    job_id = status_json("resume", tmp_path)["runs"][0]["job_id"]
    wait_for(lambda: run_progress(tmp_path) >= where, 300, f"level {where[0]} under way under Slurm", poll=0.05)
    # Freeze the trainer (torchrun and its ranks) so the level cannot finish before the signal
    # lands, whatever the load; let it go once the signal is pending on one of its processes.
    pids = _frozen_trainer(tmp_path)
    interrupt(job_id)
    wait_for(lambda: any(_signalled(pid) for pid in pids), 120, "the signal to reach the trainer", poll=0.1)
    for pid in pids:
        _signal(pid, signal.SIGCONT)
    run = wait_for(
        lambda: (lambda r: r if r["state"] in ("COMPLETED", "FAILED", "LOST") else None)(
            status_json("resume", tmp_path)["runs"][0]
        ),
        400,
        "the requeued job to finish",
        poll=2,
    )
    assert run["state"] == "COMPLETED", run
    assert run["attempts"] == 2 and run["job_id"] == job_id  # the same array task, run again
    detail = json.loads(tp("status", run["run_id"], "--format", "json", cwd=tmp_path).stdout)
    assert "PREEMPTED" in [e["to"] for e in detail["events"]]
    assert same_levels(tmp_path / "tp-runs", ref, ids)
    return detail


def test_scontrol_requeue_resumes_from_checkpoint(tmp_path, slurm_cluster, reference):
    """Preemption with requeue: Slurm sends SIGTERM; the trainer saves; the job comes back."""
    detail = _requeue_then_complete(
        tmp_path,
        reference,
        lambda job: subprocess.run(["scontrol", "requeue", job], check=True),
        where=(BRANCH, 1),
    )
    stopped = [e for e in detail["events"] if e["to"] == "PREEMPTED"]
    assert "branch 2" in stopped[0]["message"]  # it was the branch level that was interrupted


def test_usr2_checkpoints_and_requeues_through_submitit(tmp_path, slurm_cluster, reference):
    """The timeout/preemption warning (--signal=USR2@delay): submitit's checkpoint() asks the
    trainer ranks to save, then requeues the job itself."""
    detail = _requeue_then_complete(
        tmp_path,
        reference,
        lambda job: subprocess.run(["scancel", "--signal=USR2", job], check=True),
        where=(TRUNK, 1),
    )
    stopped = [e for e in detail["events"] if e["to"] == "PREEMPTED"]
    assert "SIGUSR2" in stopped[0]["message"]


def test_cancel_stops_the_jobs_and_records_it(tmp_path, slurm_cluster):
    path = write_spec(tmp_path, slow_spec("cancel_me"))
    tp("launch", str(path), "--executor", "slurm", cwd=tmp_path, check=True)
    job_id = status_json("cancel_me", tmp_path)["runs"][0]["job_id"]
    proc = tp("cancel", "cancel_me", cwd=tmp_path, check=True)
    assert "cancelled 1 jobs" in proc.stdout
    wait_for(
        lambda: (
            not subprocess.run(
                ["squeue", "-h", "-r", "-j", job_id.split("_")[0], "-o", "%i"], capture_output=True, text=True
            ).stdout.strip()
        ),
        60,
        "the job to leave the queue",
        poll=1,
    )
    run = status_json("cancel_me", tmp_path)["runs"][0]
    assert run["state"] == "CANCELLED", run
    # A relaunch leaves a cancelled run alone; resume --include-failed brings it back.
    assert "nothing to submit" in tp("launch", str(path), "--executor", "slurm", cwd=tmp_path).stdout


def test_no_scheduler_means_nothing_submitted(tmp_path):
    """On a machine without Slurm's commands, launch says so and the runs stay PLANNED."""
    path = write_spec(tmp_path, tiny_spec("no_slurm"))
    venv_bin = os.path.dirname(sys.executable)
    proc = tp("launch", str(path), "--executor", "slurm", cwd=tmp_path, env={"PATH": f"{venv_bin}:/nonexistent"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "submission to slurm failed, nothing was submitted" in proc.stderr.replace("\n", " ")
    assert status_json("no_slurm", tmp_path)["counts"] == {"PLANNED": 2}


def test_sigkill_of_the_whole_job_is_resumed_from_its_checkpoint(tmp_path, slurm_cluster, reference):
    """A node that dies takes every process of the job with it, SIGKILL, no chance to save: the
    branch resumes from its last epoch checkpoint and ends bit-identical to the reference."""
    ref, ids = reference
    path = write_spec(tmp_path, slow_spec("resume"))
    tp("launch", str(path), "--executor", "slurm", cwd=tmp_path, check=True)
    job_id = status_json("resume", tmp_path)["runs"][0]["job_id"]
    wait_for(
        lambda: run_progress(tmp_path) >= (BRANCH, 1), 300, "the branch level under way under Slurm", poll=0.05
    )
    # Freeze the ranks at once (the branch has ~2 s left on an idle machine), then kill the lot.
    subprocess.run(["pkill", "-STOP", "-f", f"trainer.job {tmp_path}"], check=False)
    pids = subprocess.run(
        ["scontrol", "listpids", job_id], capture_output=True, text=True, check=True
    ).stdout.split("\n")[1:]
    pids = [int(line.split()[0]) for line in pids if line.strip()]
    assert pids, "scontrol listpids found no process of the running job"
    for pid in pids:  # the batch script, srun, submitit and the trainer ranks, all at once
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    run = wait_for(
        lambda: (lambda r: r if r["state"] not in ("RUNNING", "PENDING", "PLANNED") else None)(
            status_json("resume", tmp_path, env={"TP_LOST_AFTER_S": "0"})["runs"][0]
        ),
        120,
        "status to see the killed job",
        poll=2,
    )
    assert run["state"] in ("FAILED", "LOST"), run
    level = tmp_path / "tp-runs" / "levels" / ids[BRANCH]
    assert (level / "checkpoint.pt").exists() and not (level / "final.pt").exists()
    level0 = tmp_path / "tp-runs" / "levels" / ids[0] / "final.pt"
    before = level0.stat().st_mtime_ns
    tp("resume", "resume", "--include-failed", "--executor", "slurm", cwd=tmp_path, check=True)
    run = wait_for(
        lambda: (lambda r: r if r["state"] in ("COMPLETED", "FAILED", "LOST") else None)(
            status_json("resume", tmp_path)["runs"][0]
        ),
        300,
        "the resumed job to finish",
        poll=2,
    )
    assert run["state"] == "COMPLETED", run
    assert level0.stat().st_mtime_ns == before  # finished levels are not trained again
    assert same_levels(tmp_path / "tp-runs", ref, ids)


def test_real_time_limit_checkpoints_and_requeues(tmp_path, slurm_cluster):
    """Slurm's own time limit, not a hand-sent signal: a 1-minute limit with the warning 1 s
    before it. slurmctld checks limits on a 30 s tick and sends the warning up to 30 s early, so
    it comes 29 to 59 s into each attempt. The run needs more than one attempt; each saves where
    it stopped and the next one continues."""
    spec = slow_spec("time_limit")
    spec["trainer"]["overrides"]["schedule.epochs"] = 64  # 3 x 64 epochs, 70 s or more: past one attempt
    spec["executor"].update({"timeout_min": 1, "signal_delay_s": 1, "max_requeues": 20})
    path = write_spec(tmp_path, spec)
    tp("launch", str(path), "--executor", "slurm", cwd=tmp_path, check=True)
    job_id = status_json("time_limit", tmp_path)["runs"][0]["job_id"]
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "TimeLimit=00:01:00" in shown, shown
    run = wait_for(
        lambda: (lambda r: r if r["state"] in ("COMPLETED", "FAILED", "LOST", "TIMEOUT") else None)(
            status_json("time_limit", tmp_path)["runs"][0]
        ),
        540,
        "the time-limited run to finish",
        poll=3,
    )
    assert run["state"] == "COMPLETED", run
    assert run["attempts"] >= 2 and run["job_id"] == job_id
    detail = json.loads(tp("status", run["run_id"], "--format", "json", cwd=tmp_path).stdout)
    stops = [e for e in detail["events"] if e["to"] == "PREEMPTED"]
    assert stops and all("SIGUSR2" in e["message"] for e in stops), detail["events"]
    # Each stop saved mid-epoch and the next attempt went on from there: every epoch is logged
    # once (the one a stop cut short, by the attempt that finished it).
    assert epochs_trained(tmp_path, "time_limit") == 3 * 64
