"""executor.pack: several chains (jobs of the plan) in one scheduler job, one trainer each.

Two chains of two levels (imp at 0.5, seeds 0 and 1: no level shared, so both are ready at once),
three epochs a level, each step slowed by TP_STEP_SLEEP_S so a signal lands mid-level without
costing CPU. Every run is pinned to one CPU (taskset; under Slurm, cpus_per_task 1 per chain),
so the packed levels must be bit-identical to the same chains run alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.inprocess import level_ids, status_json
from tests.sweeputil import REPO, TP, same_levels, tiny_spec, tp, wait_for, write_spec
from tests.test_e2e_slurm import _signalled

SLOW = {"TP_STEP_SLEEP_S": "0.02", "TP_PACK_LOOK_S": "1"}
EPOCHS = 3


def pack_spec(name: str, pack: int, **over) -> dict:
    spec = tiny_spec(name, executor__pack=pack, **over)
    spec["trainer"]["overrides"].update({"schedule.epochs": EPOCHS, "data.batch_size": 32})
    spec["grid"] = {"method": ["imp"], "sparsity": [0.5], "seed": [0, 1]}
    return spec


def _env(**more: str) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO), **SLOW, **more}


def one_cpu_launch(folder: Path, spec: dict, *args: str, wait: bool = True):
    """`tp-sweep launch` on CPU 0 alone: one torch thread per trainer, as under Slurm."""
    cmd = ["taskset", "-c", "0", *TP, "launch", str(write_spec(folder, spec)), *args]
    if wait:
        return subprocess.run(cmd, cwd=folder, env=_env(), capture_output=True, text=True, timeout=600)
    return subprocess.Popen(
        cmd, cwd=folder, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def rows(folder: Path, sql: str) -> list:
    eng = sa.create_engine(f"sqlite:///{folder / 'tp-results.db'}")
    try:
        with eng.connect() as c:
            return list(c.execute(sa.text(sql)))
    except sa.exc.OperationalError:
        return []
    finally:
        eng.dispose()


def epochs_in_logs(folder: Path, sweep: str) -> int:
    """Epochs trained, from every job log (one line an epoch): an epoch trained twice counts twice."""
    logs = (folder / "tp-runs" / "_jobs" / sweep).glob("*/*_log.out")
    return sum(p.read_text(errors="replace").count("] train_loss ") for p in logs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Both chains with pack 1, on one CPU: their level ids and output folder."""
    tmp = tmp_path_factory.mktemp("pack_ref")
    proc = one_cpu_launch(tmp, pack_spec("pk", 1))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sched = rows(tmp, "select distinct sched_id from jobs")
    assert len(sched) == 2, sched  # two scheduler jobs: nothing packed
    return tmp / "tp-runs", level_ids("pk", tmp)


# ---- the spec and the planner's arithmetic --------------------------------------------------
def test_pack_is_refused_for_ddp_jobs():
    from orchestrator.plan.spec import SpecError, parse_spec

    assert parse_spec(tiny_spec("p")).executor.pack == 1
    assert parse_spec(tiny_spec("p", executor__pack=4)).executor.pack == 4
    for over in ({"executor__procs_per_node": 2}, {"executor__nodes": 2}):
        with pytest.raises(SpecError, match="is never packed"):
            parse_spec(tiny_spec("p", executor__pack=2, **over))
    with pytest.raises(SpecError, match="pack"):
        parse_spec(tiny_spec("p", executor__pack=49))


def test_launch_of_a_packed_ddp_spec_exits_2(tmp_path):
    from core.errors import UserError
    from orchestrator.operations.launch import LaunchRequest, launch

    path = write_spec(tmp_path, tiny_spec("p", executor__pack=2, executor__nodes=2))
    with pytest.raises(UserError, match="never packed") as exc:
        launch(LaunchRequest(str(path), db=f"sqlite:///{tmp_path / 'tp-results.db'}"))
    assert exc.value.exit_code == 2 and not (tmp_path / "tp-results.db").exists()


def test_requests_are_packed_per_snapshot_and_room_counts_scheduler_jobs():
    from orchestrator.control.submit import Room
    from orchestrator.plan.spec import ExecutorSpec
    from slurm.executors import DebugExecutor, JobRequest, LocalExecutor

    reqs = [JobRequest(f"j{i}", f"j{i}.json", "db", "A" if i < 5 else "B") for i in range(7)]
    ex = LocalExecutor(ExecutorSpec(pack=2), Path("."))
    assert [[r.job_id for r in p] for p in ex.packs(reqs)] == [["j0", "j1"], ["j2", "j3"], ["j4"], ["j5", "j6"]]
    assert DebugExecutor(ExecutorSpec(pack=2), Path(".")).pack == 1  # jobs run inside the launch
    room = Room(left=3, why="QOS", array_max=2)
    assert [len(c) for c in room.chunks(list(range(9)), pack=2)] == [4, 2]  # 3 jobs of 2 chains
    assert [len(c) for c in Room(array_max=2).chunks(list(range(9)), pack=2)] == [4, 4, 1]


# ---- on the local executor --------------------------------------------------------------------
@pytest.mark.slow
def test_packed_chains_are_bit_identical_to_alone(tmp_path, reference):
    ref, ids = reference
    proc = one_cpu_launch(tmp_path, pack_spec("pk", 2))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = rows(tmp_path, "select job_id, sched_id, attempts, state from jobs")
    assert len(jobs) == 2 and len({j.sched_id for j in jobs}) == 1, jobs  # one process, two chains
    assert all(j.state == "COMPLETED" and j.attempts == 1 for j in jobs), jobs
    assert same_levels(tmp_path / "tp-runs", ref, ids)
    assert epochs_in_logs(tmp_path, "pk") == len(ids) * EPOCHS
    for j in jobs:  # each chain its own status file and events, as alone
        said = json.loads((tmp_path / "tp-runs" / "jobs" / f"{j.job_id}.status.json").read_text())
        assert said["state"] == "COMPLETED"
        events = rows(tmp_path, f"select state_to from events where job_id = '{j.job_id}' order by id")
        assert [e[0] for e in events] == ["PLANNED", "PENDING", "RUNNING", "COMPLETED"]


def _trainer_of(job_file: Path) -> int:
    out = subprocess.run(["pgrep", "-f", f"trainer.job {job_file}"], capture_output=True, text=True).stdout.split()
    assert len(out) == 1, out
    return int(out[0])


def _state(folder: Path, job_id: str) -> str | None:
    got = rows(folder, f"select state from jobs where job_id = '{job_id}'")
    return got[0].state if got else None


def _progress(folder: Path, job_id: str) -> tuple[int, int]:
    """(depth, epochs done) of the level chain `job_id` trains now; (-1, -1) before that."""
    got = rows(
        folder,
        "select l.depth, l.epoch from jobs j join levels l on l.level_id = j.level_id "
        f"where j.job_id = '{job_id}' and j.state = 'RUNNING'",
    )
    return tuple(got[0]) if got else (-1, -1)


@pytest.mark.slow
def test_sigkill_of_one_packed_trainer(tmp_path, reference):
    """One chain's trainer dies of SIGKILL mid-level (as the OOM killer does): that chain is FAILED
    (OUT_OF_MEMORY) at once, the other trains on and is not disturbed; resume --include-failed
    continues the killed one from its checkpoint. Every epoch is trained once, and both chains
    end bit-identical to alone."""
    ref, ids = reference
    launch = one_cpu_launch(tmp_path, pack_spec("pk", 2), wait=False)
    try:
        jobs = wait_for(lambda: rows(tmp_path, "select job_id, job_file from jobs order by job_id"), 60, "jobs")
        victim, other = jobs
        wait_for(lambda: _progress(tmp_path, victim.job_id) >= (1, 1), 300, "level 1 under way", poll=0.05)
        pid = _trainer_of(Path(victim.job_file))
        os.kill(pid, signal.SIGSTOP)  # frozen first: the level cannot finish before the kill
        assert _progress(tmp_path, victim.job_id)[0] == 1
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _state(tmp_path, victim.job_id) == "FAILED", 30, "the killed chain recorded at once")
        other_state = _state(tmp_path, other.job_id)
        out, _ = launch.communicate(timeout=300)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.communicate()
    assert other_state in ("RUNNING", "COMPLETED")
    states = {r.job_id: r for r in rows(tmp_path, "select job_id, state, failure, attempts from jobs")}
    assert states[victim.job_id].failure == "OUT_OF_MEMORY", (states, out)
    assert states[other.job_id].state == "COMPLETED" and states[other.job_id].attempts == 1, states
    level = tmp_path / "tp-runs" / "levels"
    finals = {lid: level / lid / "final.pt" for lid in ids}
    done = {lid: f.stat().st_mtime_ns for lid, f in finals.items() if f.exists()}
    proc = subprocess.run(
        ["taskset", "-c", "0", *TP, "resume", "pk", "--include-failed"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = status_json("pk", tmp_path)
    assert st["counts"] == {"COMPLETED": 2}, st
    attempts = dict(rows(tmp_path, "select job_id, attempts from jobs"))
    assert attempts == {victim.job_id: 2, other.job_id: 1}, attempts
    resumed = rows(
        tmp_path, f"select resumed_from from attempts where job_id = '{victim.job_id}' order by attempt"
    )
    assert resumed[-1][0] and resumed[-1][0].endswith("/checkpoint.pt"), resumed
    assert {lid: finals[lid].stat().st_mtime_ns for lid in done} == done  # not trained again
    assert epochs_in_logs(tmp_path, "pk") == len(ids) * EPOCHS  # every epoch once
    assert same_levels(tmp_path / "tp-runs", ref, ids)


@pytest.mark.slow
def test_cancel_of_one_packed_chain_leaves_the_other(tmp_path, reference):
    """`tp-sweep cancel RUN` of one chain stops that chain alone: the packed job trains on."""
    ref, ids = reference
    launch = one_cpu_launch(tmp_path, pack_spec("pk", 2), wait=False)
    try:
        jobs = wait_for(lambda: rows(tmp_path, "select job_id from jobs order by job_id"), 60, "jobs")
        victim = jobs[0].job_id
        wait_for(lambda: _progress(tmp_path, victim) >= (0, 1), 300, "the chain under way", poll=0.1)
        run = rows(
            tmp_path,
            f"select run_id from run_levels rl join levels l using (level_id) where l.job_id = '{victim}'",
        )
        proc = tp("cancel", run[0].run_id, cwd=tmp_path, check=True)
        assert "cancelled 1 jobs" in proc.stdout
        out, _ = launch.communicate(timeout=300)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.communicate()
    states = dict(rows(tmp_path, "select job_id, state from jobs"))
    assert states.pop(victim) == "CANCELLED", (states, out)
    assert list(states.values()) == ["COMPLETED"], (states, out)
    chain = {r.level_id: r.finished_at for r in rows(tmp_path, "select level_id, job_id, finished_at from levels")}
    mine = [r.level_id for r in rows(tmp_path, f"select level_id from levels where job_id = '{victim}'")]
    assert len(mine) == len(ids) // 2 and chain[mine[-1]] is None  # stopped before its last level
    other = [lid for lid in ids if lid not in mine]
    assert all(chain[lid] is not None for lid in other)
    assert same_levels(tmp_path / "tp-runs", ref, other)


# ---- on the dev Slurm cluster -------------------------------------------------------------------
def _packed_on_slurm(tmp_path) -> list:
    proc = tp(
        "launch", str(write_spec(tmp_path, pack_spec("pk", 2))), "--executor", "slurm", cwd=tmp_path, env=SLOW
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = rows(tmp_path, "select job_id, job_file, sched_id from jobs order by job_id")
    assert len(jobs) == 2 and len({j.sched_id for j in jobs}) == 1, jobs  # one array task
    master = jobs[0].sched_id.split("_")[0]
    script = next((tmp_path / "tp-runs" / "_jobs" / "pk").glob(f"{master}/*submission.sh")).read_text()
    assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH --mem=2048M" in script, script
    return jobs


def _finished(tmp_path) -> dict:
    return wait_for(
        lambda: (lambda s: s if not set(s["counts"]) & {"RUNNING", "PENDING", "PLANNED", "PREEMPTED"} else None)(
            status_json("pk", tmp_path)
        ),
        400,
        "the packed job to finish",
        poll=2,
    )


@pytest.mark.slurm
def test_packed_slurm_job_is_bit_identical_to_alone(tmp_path, slurm_cluster, reference):
    ref, ids = reference
    _packed_on_slurm(tmp_path)
    st = _finished(tmp_path)
    assert st["counts"] == {"COMPLETED": 2}, st
    assert same_levels(tmp_path / "tp-runs", ref, ids)
    assert epochs_in_logs(tmp_path, "pk") == len(ids) * EPOCHS


@pytest.mark.slurm
def test_scontrol_requeue_of_a_packed_job(tmp_path, slurm_cluster, reference):
    """A requeue stops both chains (SIGTERM: each saves); the job comes back and each continues
    from its own checkpoint: every epoch trained once, bit-identical to alone."""
    ref, ids = reference
    jobs = _packed_on_slurm(tmp_path)
    wait_for(lambda: _progress(tmp_path, jobs[0].job_id) >= (0, 1), 300, "level 0 under way", poll=0.1)
    subprocess.run(["scontrol", "requeue", jobs[0].sched_id], check=True)
    st = _finished(tmp_path)
    assert st["counts"] == {"COMPLETED": 2}, st
    attempts = rows(tmp_path, "select job_id, attempts from jobs")
    assert all(a == 2 for _, a in attempts), attempts  # both came back in the requeued job
    stopped = rows(tmp_path, "select job_id from events where state_to = 'PREEMPTED'")
    assert {r.job_id for r in stopped} == {j.job_id for j in jobs}, stopped
    assert same_levels(tmp_path / "tp-runs", ref, ids)
    assert epochs_in_logs(tmp_path, "pk") == len(ids) * EPOCHS


@pytest.mark.slurm
def test_usr2_requeues_only_the_chain_that_did_not_finish(tmp_path, slurm_cluster, reference):
    """The time-limit warning (USR2, submitit's checkpoint) after one chain has finished: the other
    saves, the job is requeued, and runs that chain alone; the finished one is not started again."""
    ref, ids = reference
    slow, done = _packed_on_slurm(tmp_path)
    wait_for(lambda: _progress(tmp_path, slow.job_id) >= (0, 1), 300, "level 0 under way", poll=0.1)
    pid = _trainer_of(Path(slow.job_file))
    os.kill(pid, signal.SIGSTOP)  # held back while the other chain finishes
    try:
        wait_for(lambda: _state(tmp_path, done.job_id) == "COMPLETED", 300, "the other chain to finish", poll=0.5)
        subprocess.run(["scancel", "--signal=USR2", slow.sched_id], check=True)
        wait_for(lambda: _signalled(pid), 60, "USR2 to reach the held trainer", poll=0.1)
    finally:
        os.kill(pid, signal.SIGCONT)
    st = _finished(tmp_path)
    assert st["counts"] == {"COMPLETED": 2}, st
    attempts = dict(rows(tmp_path, "select job_id, attempts from jobs"))
    assert attempts == {slow.job_id: 2, done.job_id: 1}, attempts
    sched = dict(rows(tmp_path, "select job_id, sched_id from jobs"))
    assert sched[slow.job_id] == sched[done.job_id]  # requeued in place, not resubmitted
    stopped = rows(tmp_path, "select job_id, message from events where state_to = 'PREEMPTED'")
    assert [r.job_id for r in stopped] == [slow.job_id] and "SIGUSR2" in stopped[0].message, stopped
    assert same_levels(tmp_path / "tp-runs", ref, ids)
    assert epochs_in_logs(tmp_path, "pk") == len(ids) * EPOCHS


def test_a_packed_jobs_node_failure_counts_once():
    """K chains of one scheduler job fail together on its node, each with the same reason: one
    node failure for retry.exclude_after, not K."""
    from orchestrator.control.supervisor import node_failures

    one_job = "LOST (NODE_FAIL) on node n1: scheduler reports job 7_0 NODE_FAIL"
    other_job = one_job.replace("7_0", "8_0")
    got = node_failures(
        [("NODE_FAIL", "n1", one_job), ("NODE_FAIL", "n1", one_job), ("NODE_FAIL", "n1", other_job)]
        + [("OUT_OF_MEMORY", "n2", "x"), ("NODE_FAIL", None, "y")]
    )
    assert got == {"n1": 2}
