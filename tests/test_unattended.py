"""Unattended sweeps on a real Slurm cluster: the supervisor (`tp-sweep supervise`, `launch
--supervise`), its failure policy, cluster limits and preemption.

One private cluster serves the module (slurm/dev: own folder, ports, munged; /etc/slurm and the
main dev cluster untouched): two nodes of 4 CPUs, accounting with a QOS `q5` that allows 5
submitted jobs per user, MaxArraySize=8, and partition-priority preemption between `low`
(PreemptMode=REQUEUE), `cancel` (CANCEL) and `high`; `ctl` is never preempted. Each test runs
several scenarios at once (one sweep can carry several faults) to keep CI short; their wall times
are in BENCHMARKS.md ("The test suite").
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from slurm.dev import cluster
from tests.conftest import PRIVATE_CLUSTERS, require_service
from tests.inprocess import status_json
from tests.sweeputil import (
    REPO,
    TRUNK,
    free_port_block,
    kill_whole_job,
    same_levels,
    slow_spec,
    tiny_spec,
    tp,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.slurm
# Jobs whose results no test compares train on a small synthetic set: scikit-learn's import
# (1.3 s) was a third of what such a job costs, and these tests run dozens of them.
SYNTHETIC = {"data": "synthetic"}


@pytest.fixture(scope="module")
def pc():
    """The private cluster of this module (see the module's docstring)."""
    if os.geteuid() != 0 or shutil.which("slurmctld") is None:
        require_service("slurm daemons", "needs root and slurm-wlm")
    if not (shutil.which("slurmdbd") and shutil.which("mariadbd")):
        require_service("slurm accounting", "slurmdbd/mariadb-server not installed (scripts/bootstrap.sh)")
    top = tempfile.mkdtemp(prefix="tpun-", dir="/tmp")
    PRIVATE_CLUSTERS.append(top)
    os.chmod(top, 0o755)  # munged must reach the folder
    d = os.path.join(top, "c")
    st = None
    try:
        st = cluster.up(
            d,
            nodes=2,
            accounting=True,
            cpus_per_node=4,
            mem_mb=4000,
            port=free_port_block(81, start=31000),
            cluster_name="tpun",
            node_prefix="tpu",
            install_conf=False,
            extra_conf={"MaxArraySize": 8, "PreemptType": "preempt/partition_prio", "PreemptMode": "REQUEUE"},
            partitions={
                "debug": {"PriorityTier": 1, "PreemptMode": "OFF"},
                "low": {"PriorityTier": 1, "PreemptMode": "REQUEUE"},
                "cancel": {"PriorityTier": 1, "PreemptMode": "CANCEL"},
                "high": {"PriorityTier": 10, "PreemptMode": "OFF"},
                "ctl": {"PriorityTier": 1, "PreemptMode": "OFF"},
            },
            qos={"q5": {"MaxSubmitJobsPerUser": 5}},
        )
        yield st
    finally:
        if st is not None:  # empty the queue first: stopping the daemons would orphan job steps
            env = {**os.environ, **st.env}
            end = time.monotonic() + 60
            # Again and again: a supervisor job stopping on SIGTERM may submit what it was at.
            while (
                time.monotonic() < end
                and subprocess.run(
                    ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True
                ).stdout.strip()
            ):
                subprocess.run(
                    ["scancel", "--full", "--quiet", "--user", getpass.getuser()], env=env, capture_output=True
                )
                time.sleep(1)
        cluster.down(d)
        shutil.rmtree(top, ignore_errors=True)


# ---- helpers ------------------------------------------------------------------------------------
def _env(pc, **more: str) -> dict[str, str]:
    return {**pc.env, **more}


def _sq(pc, *args: str) -> str:
    return subprocess.run(
        ["squeue", "-h", *args], env={**os.environ, **pc.env}, capture_output=True, text=True
    ).stdout


def _store(tmp: Path):
    return sa.create_engine(f"sqlite:///{tmp / 'tp-results.db'}")


def _rows(tmp: Path, sql: str, **params) -> list:
    eng = _store(tmp)
    try:
        with eng.connect() as c:
            return c.execute(sa.text(sql), params).all()
    finally:
        eng.dispose()


def _progress(tmp: Path, job_id: str) -> tuple[int, int]:
    """(depth, epochs done) of the level the job trains now; (-1, -1) before its first epoch."""
    try:
        rows = _rows(
            tmp,
            "select l.depth, l.epoch from jobs j join levels l on l.level_id = j.level_id "
            "where j.job_id = :j and j.state = 'RUNNING'",
            j=job_id,
        )
    except sa.exc.OperationalError:
        return (-1, -1)
    return tuple(rows[0]) if rows else (-1, -1)


def _job_of(tmp: Path, level_id: str) -> str:
    return _rows(tmp, "select job_id from levels where level_id = :l", l=level_id)[0][0]


def _sched_of(tmp: Path, job_id: str) -> str:
    return _rows(tmp, "select sched_id from jobs where job_id = :j", j=job_id)[0][0]


def _actions(tmp: Path, sweep: str) -> list[dict]:
    import datetime as dt

    rows = [dict(r._mapping) for r in _rows(tmp, "select * from actions where sweep = :s order by id", s=sweep)]
    for r in rows:
        r["at"] = dt.datetime.fromisoformat(str(r["at"]))
    return rows


def _done(tmp: Path, sweep: str, env: dict, timeout: float, what: str) -> dict:
    """Wait until the sweep's supervisor stopped (finished or not); the last status."""

    def stopped():  # read from the store here: a `tp-sweep status` a poll costs a CPU-second
        try:
            return _rows(tmp, "select stopped from supervisors where sweep = :s", s=sweep)[0][0]
        except (sa.exc.OperationalError, IndexError):
            return None

    wait_for(stopped, timeout, what, poll=1)
    return status_json(sweep, tmp, env=env)


def _scripts(tmp: Path, sweep: str) -> dict[str, str]:
    """sbatch script per Slurm job id of the sweep's trainer jobs."""
    out = {}
    for p in (tmp / "tp-runs" / "_jobs" / sweep).glob("*/*_submission.sh"):
        out[p.parent.name] = p.read_text()
    return out


# ---- the scenarios ------------------------------------------------------------------------------
def test_no_person_and_failure_classes(tmp_path, pc, reference):
    """Two supervised sweeps at once, each supervisor a Slurm job (launch --supervise):
    - `nop`: every process of a running job is SIGKILLed, then the job resubmitted for it is
      scancel'ed; the sweep completes without anyone, bit-identical to an uninterrupted run, and
      status lists each action with its reason;
    - `faults`: a trainer exception (not retried, its message names it and the log), an OOM kill
      (resubmitted once with twice the memory) and a job lost twice (retried with backoff, the
      node it died on excluded)."""
    ref, ids = reference
    t0 = time.monotonic()
    a, b = tmp_path / "nop", tmp_path / "faults"
    a.mkdir(), b.mkdir()
    spec_a = slow_spec("nop")  # two ranks, as the reference
    spec_a["executor"].update(kind="slurm", partition="debug")
    spec_a["retry"] = {"backoff_s": 1}
    spec_a["supervisor"] = {"poll_s": 2, "lease_s": 10, "partition": "ctl"}
    tp("launch", str(write_spec(a, spec_a)), cwd=a, env=_env(pc), check=True)

    spec_b = tiny_spec("faults", executor__kind="slurm", executor__partition="debug", executor__mem_gb=1)
    spec_b["trainer"]["overrides"].update(SYNTHETIC)
    spec_b["grid"] = {"method": ["snip", "er_erk", "synflow"], "sparsity": [0.5], "seed": [0]}
    spec_b["retry"] = {"backoff_s": 1, "exclude_after": 1}
    spec_b["supervisor"] = {"poll_s": 2, "lease_s": 10, "partition": "ctl"}
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.spec import parse_spec

    runs = {r.method: r.run_id for r in plan_sweep(parse_spec(spec_b)).runs}
    faults = f"error:{runs['snip']},oom:{runs['er_erk']}:1,lost:{runs['synflow']}:2"
    launched = tp("launch", str(write_spec(b, spec_b)), cwd=b, env=_env(pc, TP_FAULT=faults), check=True)
    assert "supervisor: Slurm job" in launched.stdout, launched.stdout

    # nop: kill the chain mid-level, whole; then cancel the job that replaces it.
    chain = _job_of(a, ids[0])
    wait_for(lambda: _progress(a, chain) >= (TRUNK, 1), 300, "the chain under way", poll=0.2)
    first = _sched_of(a, chain)
    assert kill_whole_job(first, pc.env) >= 3
    wait_for(
        lambda: (lambda s: s if s and s != first else None)(_sched_of(a, chain)),
        120,
        "the supervisor to resubmit the killed job",
        poll=1,
    )
    second = _sched_of(a, chain)
    wait_for(
        lambda: (
            _progress(a, chain) >= (TRUNK, 0)
            and _sched_of(a, chain) == second
            and "R" in _sq(pc, "-j", second.split("_")[0], "-o", "%t")
        ),
        300,
        "the resubmitted job to train",
        poll=0.2,
    )
    subprocess.run(["scancel", second], env={**os.environ, **pc.env}, check=True)

    st_a = _done(a, "nop", _env(pc), 400, "the nop sweep's supervisor to finish")
    assert st_a["counts"] == {"COMPLETED": 1}, st_a
    assert st_a["supervisor"]["stopped"].startswith("finished"), st_a["supervisor"]
    assert same_levels(a / "tp-runs", ref, ids)
    acts = _actions(a, "nop")
    said = [(x["action"], x["failure"]) for x in acts if x["job_id"] == chain]
    assert ("retry", "LOST") in said and ("resubmit", "LOST") in said, acts
    assert ("retry", "CANCELLED") in said or ("retry", "PREEMPTED") in said, acts
    text = tp("status", "nop", cwd=a, env=_env(pc)).stdout
    assert "supervisor: Slurm job" in text and "resubmit" in text and "vanished without a word" in text

    # faults
    st_b = _done(b, "faults", _env(pc), 300, "the faults sweep's supervisor to stop")
    jobs = {r["method"]: r for r in st_b["runs"]}
    assert jobs["snip"]["state"] == "FAILED" and jobs["er_erk"]["state"] == "COMPLETED"
    assert jobs["synflow"]["state"] == "COMPLETED", st_b
    bug = jobs["snip"]["message"]
    assert "RuntimeError: injected fault" in bug and "log: " in bug and "_log.err" in bug, bug
    assert st_b["supervisor"]["stopped"].startswith("nothing more can be done"), st_b["supervisor"]
    acts = _actions(b, "faults")
    by = lambda run, action: [
        x
        for x in acts
        if x["action"] == action
        and x["job_id"]
        == _job_of(b, _rows(b, "select level_id from run_levels where run_id = :r", r=runs[run])[0][0])
    ]
    assert by("snip", "give_up") and not by("snip", "resubmit")
    assert [x["failure"] for x in by("er_erk", "retry")] == ["OUT_OF_MEMORY"]
    retries = by("synflow", "retry")
    assert [x["failure"] for x in retries] == ["LOST", "LOST"]
    assert "in 1 s" in retries[0]["reason"] and "in 2 s" in retries[1]["reason"]  # backoff doubles
    resub = by("synflow", "resubmit")
    assert len(resub) == 2
    for r, s in zip(retries, resub):  # each waited its backoff
        assert (s["at"] - r["at"]).total_seconds() >= (1 if r is retries[0] else 2) - 0.5
    node = by("synflow", "failure")[0]["node"]
    scripts = _scripts(b, "faults")
    first_retry = resub[0]["reason"].split(" as ")[1].split()[0].split("_")[0]
    assert f"#SBATCH --exclude={node}" in scripts[first_retry], scripts[first_retry]
    oom = by("er_erk", "resubmit")[0]["reason"].split(" as ")[1].split()[0].split("_")[0]
    assert "#SBATCH --mem=2048M" in scripts[oom]
    print(f"\nno-person + failure classes: {time.monotonic() - t0:.0f} s")


def _supervise(pc, tmp: Path, sweep: str, *extra: str) -> subprocess.Popen:
    """`tp-sweep supervise SWEEP` in the background (this machine, like a login node)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli.tp_sweep", "supervise", sweep, *extra],
        cwd=tmp,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **pc.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"supervisor still running after {timeout:.0f} s:\n{out}") from None
    return out


def test_real_preemption_requeue_and_cancel(tmp_path, pc, reference):
    """A high-priority job preempts a sweep's job on a PreemptMode=REQUEUE partition and another
    sweep's on a CANCEL partition. Launch warns that neither gets a signal ahead (and, for CANCEL,
    that nothing resubmits without a supervisor); both complete under `tp-sweep supervise`,
    bit-identical to the uninterrupted reference: the requeued job by itself, the cancelled one
    resubmitted by its supervisor."""
    ref, ids = reference
    t0 = time.monotonic()
    sweeps = {"req": "low", "can": "cancel"}
    procs = {}
    for name, partition in sweeps.items():
        d = tmp_path / name
        d.mkdir()
        spec = slow_spec(name)
        spec["executor"].update(kind="slurm", partition=partition)
        launched = tp("launch", str(write_spec(d, spec)), cwd=d, env=_env(pc), check=True)
        assert f"warning: partition {partition} is preempted by jobs of partition high" in " ".join(
            launched.stderr.split()
        ), launched.stderr
        if partition == "cancel":
            assert "PreemptMode=CANCEL never requeues" in " ".join(launched.stderr.split())
        procs[name] = _supervise(pc, d, name, "--poll-s", "2")
    chains = {name: _job_of(tmp_path / name, ids[0]) for name in sweeps}
    for name in sweeps:  # each mid-level, then its node is taken by a job of partition high
        d = tmp_path / name
        wait_for(
            lambda d=d, name=name: _progress(d, chains[name]) >= (TRUNK, 1), 300, f"{name} under way", poll=0.2
        )
        sched = _sched_of(d, chains[name])
        node = _sq(pc, "-j", sched.split("_")[0], "-r", "-o", "%i %N").split()[-1]
        subprocess.run(
            ["sbatch", "-p", "high", "-w", node, "-c", "4", "--mem=200", "-o", "/dev/null", "--wrap", "sleep 2"],
            env={**os.environ, **pc.env},
            check=True,
            capture_output=True,
        )
        wait_for(
            lambda d=d, name=name: _rows(
                d, "select count(*) from events where job_id = :j and state_to = 'PREEMPTED'", j=chains[name]
            )[0][0],
            120,
            f"{name} to be preempted",
            poll=0.5,
        )
    for name, proc in procs.items():
        out = _finish(proc, 400)
        assert "finished: all 3 levels of the sweep are done" in out, out
        d = tmp_path / name
        assert same_levels(d / "tp-runs", ref, ids)
        acts = [(x["action"], x["failure"]) for x in _actions(d, name)]
        if name == "can":  # resubmitted by the supervisor: Slurm never requeues it
            assert ("retry", "PREEMPTED") in acts and ("resubmit", "PREEMPTED") in acts, acts
        else:  # requeued by Slurm, the same job again: nothing for the supervisor to do
            assert not [a for a in acts if a[0] in ("retry", "resubmit")], acts
            assert _rows(d, "select attempts from jobs where job_id = :j", j=chains[name])[0][0] >= 2
    print(f"\npreemption (REQUEUE and CANCEL): {time.monotonic() - t0:.0f} s")


def test_search_without_a_launcher(tmp_path, pc):
    """launch --supervise of a search spec returns at once; its supervisor (a Slurm job) asks and
    tells. Warned with USR2 (as before its time limit), it requeues itself and goes on. Then it is
    scancel'ed mid-search; the next trial job that ends submits a new supervisor, which adopts
    the trials in flight; every trial completes, none twice."""
    from orchestrator.plan.preflight import registries

    registries()  # the launch reads the trainer's names from this cache (as any launch after the first)
    t0 = time.monotonic()
    spec = tiny_spec("srch", executor__kind="slurm", executor__partition="debug", executor__array_parallelism=2)
    spec["trainer"]["overrides"].update({"model.hidden": [256, 256], "data.batch_size": 16, "schedule.epochs": 2})
    spec["grid"] = {"method": ["snip"], "sparsity": [0.5], "seed": [0]}
    spec["search"] = {
        "params": {"optimizer.lr": {"type": "log_float", "low": 0.01, "high": 0.5}},
        "n_trials": 4,
        "sampler": {"name": "random", "seed": 0},
    }
    spec["supervisor"] = {"poll_s": 2, "lease_s": 10, "partition": "ctl"}
    path = write_spec(tmp_path, spec)
    import resource

    cpu = lambda: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_CHILDREN))
    start, cpu0 = time.monotonic(), cpu()
    launched = tp("launch", str(path), "--supervise", cwd=tmp_path, env=_env(pc), check=True)
    took, used = time.monotonic() - start, cpu() - cpu0
    # Under 5 s (2-3 s idle). Two cores shared by a load of 10 stretch any process five-fold: then
    # the launch's own CPU time says whether it did more than record and submit.
    busy = os.getloadavg()[0] > 2 * (os.cpu_count() or 1)
    assert took < 5 or (busy and used < 5), f"launch --supervise took {took:.1f} s ({used:.1f} CPU-s)"
    first = launched.stdout.split("supervisor: Slurm job ")[1].split(";")[0]

    def trials(state: str | None = None) -> int:
        q = "select count(*) from trials" + (" where state = :s" if state else "")
        try:
            return _rows(tmp_path, q, s=state)[0][0]
        except sa.exc.OperationalError:
            return 0

    starts = lambda: [x for x in _actions(tmp_path, "srch") if x["action"] == "start"]
    wait_for(lambda: trials("COMPLETE") >= 1 and starts(), 300, "a trial done", poll=0.5)
    # USR2, as before its time limit: it gives its lease up, requeues itself and goes on.
    subprocess.run(["scancel", "--signal=USR2", first], env={**os.environ, **pc.env}, check=True)
    wait_for(lambda: len(starts()) >= 2, 120, "the supervisor job to requeue itself", poll=0.5)
    assert f"Slurm job {first}" in starts()[-1]["reason"], starts()
    wait_for(
        lambda: trials("COMPLETE") >= 2 and _sq(pc, "-t", "RUNNING", "-n", "tp", "-o", "%i"),
        300,
        "two trials done and another running",
        poll=0.5,
    )
    subprocess.run(["scancel", first], env={**os.environ, **pc.env}, check=True)
    st = _done(tmp_path, "srch", _env(pc), 400, "the search to finish")
    assert st["supervisor"]["stopped"].startswith("finished: the search ran all its trials"), st["supervisor"]
    acts = _actions(tmp_path, "srch")
    replaced = [x for x in acts if x["action"] == "supervisor_job" and x["job_id"]]
    assert replaced and "ended and submitted supervisor job" in replaced[0]["reason"], acts
    assert st["supervisor"]["sched_id"] != first
    assert any(x["action"] == "pause" for x in acts)  # the scancel'ed supervisor let go of its lease
    assert trials() == 4 and trials("COMPLETE") == 4
    runs = _rows(tmp_path, "select value_json from trial_user_attributes where key = 'run_id'")
    assert len({r[0] for r in runs}) == 4, runs  # four different points, each asked once
    print(f"\nsearch without a launcher: {time.monotonic() - t0:.0f} s (launch {took:.1f} s, {used:.1f} CPU-s)")


def test_limits_array_chunks_and_qos(tmp_path, pc):
    """MaxArraySize=8: a sweep of 20 jobs goes out as arrays of at most 8 and completes. QOS q5
    (5 submitted jobs per user): launch submits 5 and says why the rest waits; the supervisor
    submits them as room frees up, never more than 5 at once."""
    t0 = time.monotonic()
    arr, qos = tmp_path / "arr", tmp_path / "qos"
    arr.mkdir(), qos.mkdir()
    spec = tiny_spec(
        "arr",
        executor__kind="slurm",
        executor__partition="debug",
        executor__mem_gb=0.25,
        executor__array_parallelism=20,
    )
    spec["trainer"]["overrides"].update(SYNTHETIC)
    spec["grid"] = {"method": ["dense"], "seed": list(range(20))}
    out = tp("launch", str(write_spec(arr, spec)), cwd=arr, env=_env(pc), check=True)
    assert "submitted 20 jobs" in out.stdout, out.stdout
    spec = tiny_spec(
        "qos",
        executor__kind="slurm",
        executor__partition="debug",
        executor__mem_gb=0.25,
        executor__qos="q5",
        executor__array_parallelism=8,
    )
    spec["trainer"]["overrides"].update(SYNTHETIC)
    spec["grid"] = {"method": ["dense"], "seed": list(range(100, 107))}
    out = tp("launch", str(write_spec(qos, spec)), cwd=qos, env=_env(pc), check=True)
    text = " ".join(out.stdout.split())
    assert "submitted 5 jobs" in text and "2 jobs not submitted yet" in text, text
    assert "QOS q5 MaxSubmitJobsPerUser is 5" in text, text
    proc = _supervise(pc, qos, "qos", "--poll-s", "1")
    most = 0
    while proc.poll() is None:
        most = max(most, len(_sq(pc, "-r", "-q", "q5", "-o", "%i").split()))
        time.sleep(0.3)
    out = proc.stdout.read()
    assert "finished: all 7 levels" in out, out
    assert most <= 5, most
    finished = "select count(*) from levels where finished_at is not null"
    wait_for(lambda: _rows(arr, finished)[0][0] == 20, 400, "the 20-job sweep", poll=1)
    assert status_json("arr", arr, env=_env(pc))["counts"] == {"COMPLETED": 20}
    arrays = [s for s in _scripts(arr, "arr").values() if "#SBATCH --array=" in s]
    sizes = sorted(int(s.split("#SBATCH --array=0-")[1].split("%")[0]) + 1 for s in arrays)
    assert sizes == [4, 8, 8], sizes
    print(f"\nlimits (arrays of 8, QOS of 5): {time.monotonic() - t0:.0f} s")


def test_cluster_check_of_profiles(tmp_path, pc):
    """`tp-sweep cluster check`: a profile that fits says ok and what the cluster allows; a wrong
    partition and a wrong account are each exit 2, with what exists instead."""
    import yaml

    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(
        yaml.safe_dump(
            {
                "dev": {"kind": "slurm", "partition": "low", "account": "tp", "qos": "q5", "timeout_min": 30},
                "badpart": {"partition": "gpu", "account": "tp"},
                "badacct": {"partition": "debug", "account": "physics"},
            }
        )
    )
    env = _env(pc, TP_CLUSTERS=str(clusters))
    ok = tp("cluster", "check", "dev", cwd=tmp_path, env=env)
    text = " ".join(ok.stdout.split())
    assert ok.returncode == 0 and "profile dev: ok" in text, ok.stdout + ok.stderr
    assert "MaxArraySize 8" in text and "partition low:" in text and "QOS q5: MaxSubmitJobsPerUser 5" in text, text
    assert "warning: partition low is preempted by jobs of partition high" in text  # and what to do
    bad = tp("cluster", "check", "badpart", cwd=tmp_path, env=env)
    assert (
        bad.returncode == 2
        and "partition 'gpu' does not exist; partitions: cancel, ctl, debug, high, low"
        in " ".join(bad.stdout.split())
    ), bad.stdout
    bad = tp("cluster", "check", "badacct", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "account 'physics': you are not in it; your accounts: root, tp" in " ".join(
        bad.stdout.split()
    ), bad.stdout
    every = tp("cluster", "check", "--format", "json", cwd=tmp_path, env=env)
    assert every.returncode == 2
    assert {n: bool(v["problems"]) for n, v in json.loads(every.stdout)["profiles"].items()} == {
        "dev": False,
        "badpart": True,
        "badacct": True,
    }
