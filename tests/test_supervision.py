"""The supervisor without Slurm: its policy (pure), cluster profiles (no cluster needed), and the
attacks it must survive, on the local executor: two supervisors at once, a supervisor SIGKILLed
mid-action, a sweep cancelled while supervised, a malformed clusters.yaml."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from orchestrator.control.policy import History, decide
from orchestrator.plan.spec import ExecutorSpec, RetrySpec, SpecError, parse_spec
from tests.inprocess import status_json
from tests.sweeputil import REPO, slow_spec, tiny_spec, tp, wait_for, write_spec

# ---- the policy -----------------------------------------------------------------------------------
EX = ExecutorSpec(mem_gb=4)


def _decide(failure: str, retries: int = 0, sbatch=None, history=None, **policy):
    return decide(
        failure,
        retries=retries,
        level="abc",
        node="n1",
        message="boom",
        sbatch=sbatch,
        policy=RetrySpec(**policy),
        executor=EX,
        history=history or History(),
    )


def test_policy_by_failure_class():
    d = _decide("ERROR")
    assert d.verdict == "final" and "not retried" in d.reason and "boom" in d.reason
    d = _decide("PREEMPTED", retries=99)  # preemption is not a failure: no budget, no backoff
    assert d.verdict == "retry" and d.delay_s == 0 and not d.counts
    d = _decide("TIMEOUT", retries=2, backoff_s=10)
    assert d.verdict == "retry" and d.delay_s == 40 and "retry 3 of 5" in d.reason
    assert _decide("TIMEOUT", timeout=False).verdict == "final"
    assert _decide("LOST", retries=10, backoff_s=10, backoff_max_s=60, max_per_job=20).delay_s == 60  # capped
    # OUT_OF_MEMORY: once, with more memory, capped; a second OOM is final.
    d = _decide("OUT_OF_MEMORY", oom_mem_factor=1.5)
    assert d.verdict == "retry" and d.sbatch == {"mem_gb": 6.0} and "resubmitted with 6 GB" in d.reason
    assert _decide("OUT_OF_MEMORY", oom_max_mem_gb=5).sbatch == {"mem_gb": 5.0}
    again = _decide("OUT_OF_MEMORY", sbatch={"mem_gb": 6.0})
    assert again.verdict == "final" and "out of memory again with 6 GB" in again.reason
    # Budgets and the same failure on the same level.
    assert "max_per_job" in _decide("LOST", retries=5).reason
    assert "max_per_sweep" in _decide("LOST", history=History(sweep_retries=3), max_per_sweep=3).reason
    assert "same_error_limit" in _decide("LOST", history=History(same_failures=2)).reason


def test_time_outs_that_advance_are_not_the_same_failure_again():
    """A level longer than a slice times out again and again: only slices that saved no more
    steps than the slice before count toward same_error_limit (unknown progress counts: it
    cannot show it moved); a stuck level stops and says so, and a time-out never counts against
    the node."""
    from orchestrator.control.supervisor import stalled_slices

    assert stalled_slices([], 100) == 0  # the first time-out
    assert stalled_slices([100, 250, 400], 610) == 0  # advancing, slice after slice
    assert stalled_slices([100, 250], 250) == 1
    assert stalled_slices([100, 250, 250], 250) == 2
    assert stalled_slices([250, 250, 100], 300) == 0  # it moved again
    assert stalled_slices([None], None) == 1 and stalled_slices([], None) == 0
    d = _decide("TIMEOUT", retries=9, max_per_job=30, history=History(same_failures=0))
    assert d.verdict == "retry" and "exclud" not in d.reason
    stuck = _decide("TIMEOUT", retries=4, history=History(same_failures=2, stalled_at=250))
    assert stuck.verdict == "final" and "without progress (stuck at step 250)" in stuck.reason, stuck.reason
    assert "max_per_job" in _decide("TIMEOUT", retries=5, history=History(same_failures=0)).reason


def test_policy_excludes_failing_nodes_but_never_all():
    h = History(node_failures={"n1": 2, "n2": 1}, partition_nodes=["n1", "n2", "n3"])
    d = _decide("NODE_FAIL", history=h)
    assert d.sbatch == {"exclude": "n1"} and "excluding n1" in d.reason
    d = _decide("LOST", history=h, exclude_after=1)
    assert d.sbatch == {"exclude": "n1,n2"}
    h.node_failures["n3"] = 5
    d = _decide("BOOT_FAIL", history=h, exclude_after=1)
    assert d.sbatch is None and "none is excluded" in d.reason
    assert _decide("CANCELLED", history=History(node_failures={"n1": 9})).sbatch == {"exclude": "n1"}
    # Any resubmission avoids a bad node; only node failures count against one (the supervisor).
    assert _decide("TIMEOUT", history=History(node_failures={"n1": 9})).sbatch == {"exclude": "n1"}
    assert _decide("OUT_OF_MEMORY", history=History(node_failures={"n1": 9})).sbatch == {
        "mem_gb": 8.0,
        "exclude": "n1",
    }


def test_supervisor_block_is_checked():
    spec = tiny_spec("s")
    spec["supervisor"] = {"poll_s": 10, "lease_s": 20}
    with pytest.raises(SpecError, match="lease_s 20 must be at least 3 x poll_s"):
        parse_spec(spec)
    spec["supervisor"] = {"extra": {"bad key": 1}}
    with pytest.raises(SpecError, match="not an sbatch option name"):
        parse_spec(spec)
    spec.pop("supervisor")
    spec["retry"] = {"oom_mem_factor": 1}
    with pytest.raises(SpecError, match="retry.oom_mem_factor"):
        parse_spec(spec)


# ---- cluster profiles -------------------------------------------------------------------------------
def test_a_profile_plans_the_same_runs_as_the_spec_written_out(tmp_path, monkeypatch):
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.jobs import group_jobs

    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(
        yaml.safe_dump(
            {
                "big": {
                    "kind": "slurm",
                    "partition": "gpu",
                    "account": "lab",
                    "qos": "normal",
                    "constraint": "a100",
                    "gres": "gpu:4",
                    "timeout_min": 1440,
                    "signal_delay_s": 300,
                    "gpus_per_node": 4,
                    "extra": {"comment": "tp", "mail-type": "FAIL"},
                }
            }
        )
    )
    monkeypatch.setenv("TP_CLUSTERS", str(clusters))
    base = tiny_spec("prof")
    with_profile = {**base, "executor": {"profile": "big", "timeout_min": 60, "extra": {"comment": "mine"}}}
    written = {
        **base,
        "executor": {
            "kind": "slurm",
            "partition": "gpu",
            "account": "lab",
            "qos": "normal",
            "constraint": "a100",
            "gres": "gpu:4",
            "timeout_min": 60,
            "signal_delay_s": 300,
            "gpus_per_node": 4,
            "extra": {"comment": "mine", "mail-type": "FAIL"},
        },
    }
    a, b = parse_spec(with_profile), parse_spec(written)
    assert a.executor.resolved() == b.executor.resolved()  # its own keys win, extra key by key
    assert a.executor.sbatch_options() == {
        "account": "lab",
        "qos": "normal",
        "constraint": "a100",
        "gres": "gpu:4",
        "comment": "mine",
        "mail-type": "FAIL",
    }
    pa, pb, pc = plan_sweep(a), plan_sweep(b), plan_sweep(parse_spec(base))  # pc: the local executor
    assert [r.run_id for r in pa.runs] == [r.run_id for r in pb.runs] == [r.run_id for r in pc.runs]
    assert list(pa.levels) == list(pb.levels) == list(pc.levels)
    jobs = lambda p: [j.job_id for j in group_jobs(list(p.levels.values()), {}, p.snapshots)]
    assert jobs(pa) == jobs(pb) == jobs(pc)


@pytest.mark.parametrize(
    "text, msg",
    [
        ("big: [1, 2\n", "not valid YAML"),
        ("- a\n- b\n", "must map profile names"),
        ("big: {partitoin: gpu}\n", "big.partitoin: unknown key"),
        ("big: {timeout_min: soon}\n", "big.timeout_min: 'soon' is not an integer"),
        ("other: {partition: gpu}\n", "no profile 'big'"),
    ],
)
def test_a_bad_clusters_file_is_exit_2_and_nothing_is_recorded(tmp_path, text, msg):
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(text)
    spec = tiny_spec("badprof")
    spec["executor"] = {"profile": "big"}
    proc = tp("launch", str(write_spec(tmp_path, spec)), cwd=tmp_path, env={"TP_CLUSTERS": str(clusters)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert msg in " ".join(proc.stderr.split()) and str(clusters) in proc.stderr.replace("\n", "")
    assert not (tmp_path / "tp-results.db").exists() and not (tmp_path / "tp-runs").exists()
    check = tp("cluster", "check", "big", cwd=tmp_path, env={"TP_CLUSTERS": str(clusters)})
    assert check.returncode == 2 and msg in " ".join(check.stderr.split())


@pytest.mark.slow  # trains: make check leaves it to the suite
def test_the_stored_spec_has_the_profile_written_out(tmp_path):
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"here": {"kind": "local", "mem_gb": 1, "array_parallelism": 2}}))
    spec = tiny_spec("stored")
    spec["grid"] = {"method": ["dense"], "seed": [0]}
    spec["executor"] = {"profile": "here", "timeout_min": 10}
    path = write_spec(tmp_path, spec)
    tp("launch", str(path), cwd=tmp_path, env={"TP_CLUSTERS": str(clusters)}, check=True)
    clusters.unlink()  # gone: the sweep is read back without it
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'tp-results.db'}")
    with eng.connect() as c:
        stored = c.execute(sa.text("select spec from sweeps where name = 'stored'")).scalar()
    eng.dispose()
    executor = yaml.safe_load(stored)["executor"]
    assert "profile" not in executor and executor["mem_gb"] == 1 and executor["timeout_min"] == 10
    assert tp("resume", "stored", cwd=tmp_path, env={"TP_CLUSTERS": str(clusters)}).returncode == 0


# ---- attacks on the local executor -----------------------------------------------------------------
def _supervise(tmp: Path, sweep: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.tp_sweep", "supervise", sweep, *extra],
        cwd=tmp,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _sql(tmp: Path, sql: str, **params):
    eng = sa.create_engine(f"sqlite:///{tmp / 'tp-results.db'}")
    try:
        with eng.begin() as c:
            return (
                c.execute(sa.text(sql), params).all()
                if sql.lstrip().lower().startswith("select")
                else c.execute(sa.text(sql), params)
            )
    finally:
        eng.dispose()


def _record(tmp: Path, spec: dict) -> None:
    """Record a sweep and its jobs, submitting nothing (what launch does before it submits)."""
    code = (
        "import sys, yaml; from db.store import Store; from orchestrator.control.controller import prepare; "
        "from orchestrator.plan.grid import plan_sweep; from orchestrator.plan.spec import load_spec; "
        "s = load_spec(sys.argv[1]); p = plan_sweep(s); "
        "prepare(Store('sqlite:///tp-results.db'), p, yaml.safe_load(open(sys.argv[1])))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(write_spec(tmp, spec))],
        cwd=tmp,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.slow  # trains: make check leaves it to the suite
def test_two_supervisors_at_once_and_a_killed_one_taken_over(tmp_path):
    """Two `launch --supervise` at once: one supervises, the other says who does and leaves.
    Then a supervisor SIGKILLed while it works: the next one takes its stale lease over and
    finishes; and one killed exactly mid-action (a job claimed, never submitted): its replacement
    puts the claimed job back and runs it."""
    spec = tiny_spec("two")
    spec["grid"] = {"method": ["dense"], "seed": [0]}
    spec["supervisor"] = {"poll_s": 0.5, "lease_s": 3}
    path = write_spec(tmp_path, spec)
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    both = [
        subprocess.Popen(
            [sys.executable, "-m", "cli.tp_sweep", "launch", str(path), "--supervise"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], outs
    assert sum("already supervised by local" in o for o in outs) == 1, outs
    assert sum("finished: all 1 levels" in o for o in outs) == 1, outs
    assert len({r[0] for r in _sql(tmp_path, "select actor from actions where action = 'start'")}) == 1

    # A supervisor SIGKILLed while it works: the next one takes the sweep over once its lease is stale.
    spec = tiny_spec("killed")
    spec["grid"] = {"method": ["dense"], "seed": [5]}
    spec["supervisor"] = {"poll_s": 0.5, "lease_s": 3}
    _record(tmp_path, spec)
    victim = _supervise(tmp_path, "killed")
    started = "select count(*) from actions where sweep = 'killed' and action = 'start'"
    wait_for(lambda: _sql(tmp_path, started)[0][0], 60, "the first supervisor to start")
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    time.sleep(3.5)  # its lease goes stale (a supervisor started before would find it held, and leave)
    late = _supervise(tmp_path, "killed")
    out = late.communicate(timeout=300)[0]
    assert late.returncode == 0 and "took over from local" in out and "finished: all 1 levels" in out, out
    assert status_json("killed", tmp_path)["counts"] == {"COMPLETED": 1}

    # Exactly mid-action: a job claimed for submission by a supervisor that died before sbatch
    # answered. Its replacement puts the job back (the claim is older than the lease) and runs it.
    spec = tiny_spec("claimed")
    spec["grid"] = {"method": ["dense"], "seed": [7]}
    spec["supervisor"] = {"poll_s": 0.5, "lease_s": 3}
    _record(tmp_path, spec)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    _sql(
        tmp_path,
        'insert into supervisors (sweep, owner, host, pid, "where", sched_id, lease_s, heartbeat_at, '
        "started_at, stopped, submit, updated_at) values ('claimed', 'dead', 'elsewhere', 999999, "
        "'local', NULL, 3, :old, :old, NULL, NULL, :old)",
        old=now - dt.timedelta(seconds=30),
    )
    _sql(
        tmp_path,
        "update jobs set state = 'PENDING', sched_id = NULL, message = 'submitting', updated_at = :old "
        "where sweep = 'claimed'",
        old=now - dt.timedelta(seconds=30),
    )
    proc = _supervise(tmp_path, "claimed")
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0 and "took over from local on elsewhere" in out, out
    assert "finished: all 1 levels" in out, out
    events = [
        r[0]
        for r in _sql(
            tmp_path, "select e.message from events e join jobs j on j.job_id = e.job_id where j.sweep = 'claimed'"
        )
    ]
    assert "submission never completed" in events, events


@pytest.mark.slow  # trains: make check leaves it to the suite
def test_a_sweep_cancelled_while_supervised(tmp_path):
    """tp-sweep cancel beside a supervisor: nothing is resubmitted, and the supervisor stops
    saying why (exit 1)."""
    spec = slow_spec("cancelled", procs=1)
    spec["supervisor"] = {"poll_s": 0.5, "lease_s": 3}
    _record(tmp_path, spec)
    sup = _supervise(tmp_path, "cancelled")
    wait_for(
        lambda: _sql(tmp_path, "select count(*) from jobs where state = 'RUNNING'")[0][0],
        120,
        "its job to run",
        poll=0.2,
    )
    assert "cancelled 1 jobs" in tp("cancel", "cancelled", cwd=tmp_path, check=True).stdout
    out = sup.communicate(timeout=120)[0]
    assert sup.returncode == 1, out
    assert "nothing more can be done" in out and "1 jobs cancelled (tp-sweep cancel)" in out, out
    assert not _sql(tmp_path, "select * from actions where action in ('retry', 'resubmit')")
    st = status_json("cancelled", tmp_path)
    assert st["counts"] == {"CANCELLED": 1} and st["supervisor"]["stopped"].startswith("nothing more")


def test_a_store_outage_does_not_stop_the_supervisor(tmp_path, monkeypatch):
    """The store going away for a pass or two (PostgreSQL restarting) is waited out, not fatal."""
    from db import supervision
    from db.store import Store
    from orchestrator.control.controller import prepare
    from orchestrator.control.supervisor import Supervisor
    from orchestrator.plan.grid import plan_sweep

    spec = tiny_spec("outage")
    spec["grid"] = {"method": ["dense"], "seed": [0]}
    store = Store(f"sqlite:///{tmp_path / 'tp-results.db'}")
    spec["output_dir"] = str(tmp_path / "tp-runs")
    plan = plan_sweep(parse_spec(spec))
    prepare(store, plan, spec)
    store.import_results({lid: {"epochs": 1, "seconds": 0.1} for lid in plan.levels})  # trained elsewhere
    real, calls = supervision.renew, []

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) <= 2:
            raise sa.exc.OperationalError("renew", {}, Exception("server closed the connection"))
        return real(*a, **kw)

    monkeypatch.setattr(supervision, "renew", flaky)
    said: list[str] = []
    outcome = Supervisor(store, "outage", poll_s=0.05, lease_s=5, out=said.append).run()
    assert outcome.finished, outcome
    text = "\n".join(said)
    assert "store unreachable (server closed the connection)" in text and "store answers again" in text
    assert len(calls) == 3
    store.close()


def test_a_refused_submission_is_tried_again_not_given_up(tmp_path, monkeypatch):
    """sbatch failing (the controller restarting, unreachable) leaves the job PLANNED for the
    next pass: the supervisor says so and goes on, where it used to stop with "nothing more can
    be done" because nothing was active."""
    from db.store import Store
    from orchestrator.control.controller import prepare
    from orchestrator.control.supervisor import Supervisor
    from orchestrator.plan.grid import plan_sweep

    spec = tiny_spec("refused", executor__kind="slurm")
    spec["grid"] = {"method": ["dense"], "seed": [0]}
    spec["output_dir"] = str(tmp_path / "tp-runs")
    store = Store(f"sqlite:///{tmp_path / 'tp-results.db'}")
    prepare(store, plan_sweep(parse_spec(spec)), spec)
    from orchestrator.control import supervisor
    from orchestrator.control.submit import SubmitError

    def refused(*a, **kw):  # what submit_jobs raises when sbatch fails (test_e2e_slurm has the real one)
        raise SubmitError("sbatch: error: Batch job submission failed: Unable to contact slurm controller")

    monkeypatch.setattr(supervisor, "submit_jobs", refused)
    said: list[str] = []
    sup = Supervisor(store, "refused", poll_s=0.05, lease_s=5, out=said.append)
    monkeypatch.setattr(sup, "limits", lambda: None)
    assert sup.step() is None, said  # not an Outcome: the next pass tries again
    assert [line for line in said if "submit_failed" in line], said
    assert {j.state for j in store.jobs_of_levels(sup.level_ids).values()} == {"PLANNED"}
    store.close()


def test_dev_cluster_options_render_and_are_checked(tmp_path):
    """cluster.up's extra slurm.conf lines, partitions and QOS limits (slurm/dev/_config.py)."""
    from slurm.dev import _config

    opts = _config._options(
        {"MaxArraySize": 8, "PreemptType": "preempt/partition_prio"},
        {"low": {"PriorityTier": 1, "PreemptMode": "REQUEUE"}, "high": {"PriorityTier": 10}},
        {"q5": {"MaxSubmitJobsPerUser": 5}},
        accounting=True,
    )
    cfg = _config._make_settings(str(tmp_path), 2, True, 4, 4000, 16000, "tpx", "n", False, opts)
    lines = _config._render(cfg).splitlines()
    assert "MaxArraySize=8" in lines and "PreemptType=preempt/partition_prio" in lines
    assert "AccountingStorageEnforce=associations,limits,qos" in lines  # QOS limits are enforced
    parts = [ln for ln in lines if ln.startswith("PartitionName=")]
    assert parts[0].startswith("PartitionName=debug Nodes=n1,n2 Default=YES")
    assert (
        "PartitionName=low Nodes=n1,n2 MaxTime=INFINITE State=UP OverSubscribe=NO PriorityTier=1 "
        "PreemptMode=REQUEUE" in parts
    )
    with pytest.raises(_config.BadRequest, match="need accounting"):
        _config._options(None, None, {"q5": {"MaxSubmitJobsPerUser": 5}}, accounting=False)
    with pytest.raises(_config.BadRequest, match="is not a slurm.conf setting"):
        _config._options({"MaxArraySize": "8\nSlurmUser=nobody"}, None, None, accounting=False)
    with pytest.raises(_config.BadRequest, match="not a partition name"):
        _config._options(None, {"a b": {}}, None, accounting=False)
    plain = _config._render(_config._make_settings(str(tmp_path), 1, False, 2, 2000, 16000, "t", "n", False))
    assert "AccountingStorageEnforce" not in plain and "MaxArraySize" not in plain


def test_a_stopped_job_the_scheduler_will_not_requeue_gets_its_class(tmp_path):
    """A job whose trainer saved on a signal (PREEMPTED) waits for Slurm's requeue, unless Slurm
    ended it for good: its time limit after the requeues (TIMEOUT), PreemptMode=CANCEL
    (PREEMPTED, marked), an admin's scancel (CANCELLED), or gone (LOST, once the heartbeat is
    old). A job the trainer never reported on takes its class from what the wrapper saw: one
    that submitit ended at its time-limit warning (Slurm: FAILED) is a TIMEOUT, with its
    progress. Still RUNNING in Slurm, a stopped job is the stopped attempt on its way out or the
    requeued one starting: nothing is concluded until its trainer or Slurm says more."""
    from core.atomic import write_json_atomic
    from core.layout import status_path
    from db.store import Store
    from orchestrator.control.controller import prepare
    from orchestrator.control.reconcile import _preempted, wrapper_report
    from orchestrator.plan.grid import plan_sweep
    from slurm.job import killed_status, timed_out_status

    spec = tiny_spec("classes", output_dir=str(tmp_path / "tp-runs"))
    spec["grid"] = {"method": ["snip"], "sparsity": [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97], "seed": [0]}
    store = Store(f"sqlite:///{tmp_path / 'tp-results.db'}")
    _, jobs, _ = prepare(store, plan_sweep(parse_spec(spec)), spec)
    ids = sorted(jobs)
    for jid in ids:
        store.set_job_state(jid, "PREEMPTED", sched_id=f"1_{jid[:2]}", message="stopped by SIGTERM")
    now = time.time()
    timed_out = store.jobs([ids[6]])[ids[6]]
    progress = {"level_id": timed_out.levels[0], "epoch": 7, "epochs": 40, "step": 77}
    write_json_atomic(status_path(timed_out.job_file), {"state": "PREEMPTED", "progress": progress})
    timed_out_status(timed_out.job_file, "Job not requeued because: timed-out too many times")
    got = {}
    for jid, sched in zip(ids, ["TIMEOUT", "PREEMPTED", "CANCELLED", "GONE", "RUNNING", "PENDING", "FAILED"]):
        _preempted(store, store.jobs([jid])[jid], sched, now)
        j = store.jobs([jid])[jid]
        got[sched] = (j.state, j.failure)
    assert got == {
        "TIMEOUT": ("TIMEOUT", "TIMEOUT"),
        "PREEMPTED": ("PREEMPTED", "PREEMPTED"),
        "CANCELLED": ("PREEMPTED", "CANCELLED"),
        "GONE": ("PREEMPTED", None),  # heartbeat fresh
        "RUNNING": ("PREEMPTED", None),  # nothing to conclude yet
        "PENDING": ("PENDING", None),  # requeued
        "FAILED": ("TIMEOUT", "TIMEOUT"),  # submitit's "timed-out too many times"
    }
    said = store.jobs([ids[6]])[ids[6]].message
    assert said.startswith("time limit: slice 1, epoch 7 of 40 of level"), said
    gone = store.jobs([ids[3]])[ids[3]]
    _preempted(store, gone, "GONE", now + 3600)
    assert store.jobs([ids[3]])[ids[3]].failure == "LOST"
    job = store.jobs([ids[0]])[ids[0]]
    assert wrapper_report(job) == {}
    killed_status(job.job_file, "/logs/1_0_log.err")
    said = wrapper_report(job)
    assert (
        said["failure"] == "OUT_OF_MEMORY"
        and "OOM killer" in said["message"]
        and "/logs/1_0_log.err" in said["message"]
    )
    store.close()


@pytest.mark.postgres
def test_the_lease_on_postgresql(postgres_url):
    """Taking the lease is a compare-and-set under PostgreSQL's advisory lock: of many takers at
    once one wins; a stale lease is taken over; actions and the summary read back."""
    from concurrent.futures import ThreadPoolExecutor

    from db import supervision
    from db.store import Store
    from tests.sweeputil import pg_schema

    with pg_schema(postgres_url, "tp_lease_test") as url:
        stores = [Store(url) for _ in range(6)]
        try:
            take = lambda i: supervision.acquire(
                stores[i], "s", f"owner{i}", host="h", pid=i, where="local", sched_id=None, lease_s=60
            )[0]
            with ThreadPoolExecutor(6) as pool:
                won = list(pool.map(take, range(6)))
            assert sum(won) == 1, won
            winner = won.index(True)
            assert supervision.renew(stores[0], "s", f"owner{winner}")
            assert not supervision.renew(stores[0], "s", "owner-nobody")
            with stores[0].session() as s:  # its heartbeat goes stale
                s.execute(sa.text("update supervisors set heartbeat_at = heartbeat_at - interval '2 minutes'"))
            taken, before = supervision.acquire(
                stores[1], "s", "late", host="h", pid=9, where="local", sched_id=None, lease_s=60
            )
            assert (
                taken
                and before.owner == f"owner{winner}"
                and not supervision.renew(stores[0], "s", f"owner{winner}")
            )
            supervision.record(stores[1], "s", "late", "start", "took over")
            info = supervision.summary(stores[2], "s")
            assert info["held"] and info["pid"] == 9 and info["actions"][-1]["reason"] == "took over"
            supervision.release(stores[1], "s", "late", "finished: all done")
            assert supervision.lease(stores[3], "s").stopped == "finished: all done"
        finally:
            for st in stores:
                st.close()
