"""The same path through the real dev Slurm cluster: sbatch job arrays via submitit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import sqlalchemy as sa

from tests.inprocess import level_ids, status_json
from tests.sweeputil import (
    BRANCH,
    REPO,
    TP,
    TRUNK,
    epochs_trained,
    first_run_ended,
    launch_on_one_cpu,
    run_progress,
    same_levels,
    slow_spec,
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


def interrupt_held(tmp_path, interrupt) -> None:
    """Freeze the trainers under `tmp_path` (torchrun and its ranks), call `interrupt()`, and let
    them go once its signal is pending on one of them: the level cannot finish before the signal
    lands, whatever the load."""
    pids = _frozen_trainer(tmp_path)
    interrupt()
    wait_for(lambda: any(_signalled(pid) for pid in pids), 120, "the signal to reach the trainer", poll=0.1)
    for pid in pids:
        _signal(pid, signal.SIGCONT)


def _requeue_then_complete(tmp_path, reference, interrupt, where: tuple[int, int]) -> dict:
    ref, ids = reference
    path = write_spec(tmp_path, slow_spec("resume"))
    tp("launch", str(path), "--executor", "slurm", cwd=tmp_path, check=True)
    job_id = status_json("resume", tmp_path)["runs"][0]["job_id"]
    wait_for(lambda: run_progress(tmp_path) >= where, 300, f"level {where[0]} under way under Slurm", poll=0.05)
    interrupt_held(tmp_path, lambda: interrupt(job_id))
    run = first_run_ended("resume", tmp_path, 400, "the requeued job to finish")
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
    run = first_run_ended("resume", tmp_path, 300, "the resumed job to finish")
    assert run["state"] == "COMPLETED", run
    assert level0.stat().st_mtime_ns == before  # finished levels are not trained again
    assert same_levels(tmp_path / "tp-runs", ref, ids)


def _time_limited(tmp_path, name: str, requeues: int, epochs: int, same_error_limit: int) -> subprocess.Popen:
    """A supervised sweep (its supervisor in the foreground of `launch`) of one dense level that
    outlasts several 1-minute slices: each step sleeps TP_STEP_SLEEP_S, so the level takes
    minutes of wall time and seconds of CPU."""
    d = tmp_path / name
    d.mkdir()
    spec = tiny_spec(name, executor__kind="slurm")
    spec["grid"] = {"method": ["dense"], "sparsity": [0.5], "seed": [0]}
    spec["trainer"]["overrides"]["schedule.epochs"] = epochs
    spec["executor"].update({"timeout_min": 1, "signal_delay_s": 20, "max_requeues": requeues})
    spec["retry"] = {"backoff_s": 0.5, "max_per_job": 30, "same_error_limit": same_error_limit}
    spec["supervisor"] = {"where": "local", "poll_s": 2, "lease_s": 10}
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO), "TP_STEP_SLEEP_S": "0.1"}
    return subprocess.Popen(
        [*TP, "launch", str(write_spec(d, spec))],
        cwd=d,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_levels_longer_than_the_time_limit_complete_without_a_person(tmp_path, slurm_cluster):
    """Slurm's own 1-minute limit, warning 20 s before it, on two supervised sweeps at once:
    - `tl0`, max_requeues 0: every slice ends in submitit's "timed-out too many times" (Slurm
      records FAILED); each is a TIMEOUT, resubmitted from its checkpoint, never held against the
      node, and not a repeated failure while the level advances (same_error_limit is 2, and the
      level needs more slices than that);
    - `tl1`, max_requeues 1: requeued by submitit first, then resubmitted by the supervisor.
    Both end COMPLETED, their epochs each trained once, bit-identical to an uninterrupted run."""
    # slurmctld looks at time limits on a 30 s tick and sends the warning a tick early: at the
    # first tick at least 10 s into a slice (60 s less 20 less 30), so before 40 s. A slice thus
    # trains at most 38 s (the trainer starts in 2 s at the least), and a level whose steps sleep
    # 82 s (75 epochs of 11 steps of 0.1 s) needs 3 slices or more, whatever the tick's phase:
    # two time-outs for tl0, a requeue and a time-out for tl1.
    sweeps = {"tl0": (0, 75, 2), "tl1": (1, 75, 3)}
    procs = {name: _time_limited(tmp_path, name, *args) for name, args in sweeps.items()}
    ref = tmp_path / "ref"
    ref.mkdir()
    for name, (_, epochs, _) in sweeps.items():  # the same levels, uninterrupted, at full speed
        spec = tiny_spec(name)
        spec["grid"] = {"method": ["dense"], "sparsity": [0.5], "seed": [0]}
        spec["trainer"]["overrides"]["schedule.epochs"] = epochs
        # On one CPU, as each Slurm job has: the thread count changes float summation order.
        launch_on_one_cpu(ref, spec)
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise AssertionError(f"{name}: the supervisor did not finish in 10 minutes:\n{out}") from None
        d = tmp_path / name
        assert proc.returncode == 0, out
        assert "finished: all 1 levels of the sweep are done" in out, out
        run = status_json(name, d)["runs"][0]
        assert run["state"] == "COMPLETED", run
        assert same_levels(d / "tp-runs", ref / "tp-runs", level_ids(name, d))
        assert epochs_trained(d, name) == sweeps[name][1]
        eng = sa.create_engine(f"sqlite:///{d / 'tp-results.db'}")
        with eng.connect() as c:
            acts = [r._mapping for r in c.execute(sa.text("select * from actions order by id"))]
            events = [r._mapping for r in c.execute(sa.text("select * from events order by id"))]
        eng.dispose()
        failures = [a for a in acts if a["action"] == "failure"]
        assert failures and all(a["failure"] == "TIMEOUT" for a in failures), acts
        assert all("time limit: slice" in a["reason"] for a in failures), failures
        steps = [a["progress"] for a in failures]
        assert all(s is not None for s in steps) and steps == sorted(set(steps)), steps  # each slice advanced
        assert not [a for a in acts if a["action"] == "give_up"], acts
        assert "excluding" not in out and "node failures" not in out, out
        resubmits = [a for a in acts if a["action"] == "resubmit"]
        assert len(resubmits) == len(failures), acts
        requeued = [e for e in events if e["state_to"] == "PENDING" and "requeued" in (e["message"] or "")]
        if name == "tl1":  # submitit requeued it once before each supervisor resubmission
            assert requeued and requeued[0]["id"] < min(a["id"] for a in events if a["state_to"] == "TIMEOUT")
        else:
            assert len(failures) >= 2 and not requeued, (failures, events)
