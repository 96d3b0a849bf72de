"""Reuse and code: a level's code is part of what it computes. Under reuse same-code (the
default) a relaunch after a trainer change retrains exactly the levels whose code changed; under
reuse any it reuses them and says from which code. Run from a copy of the package, edited."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.sweeputil import REPO, tiny_spec, tp, write_spec

PACKAGES = ("core", "trainer", "slurm", "db", "orchestrator", "cli")


def copy_package(dst: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.mark.slow  # trains through real processes
def test_a_trainer_change_retrains_exactly_its_levels_or_is_reported(tmp_path):
    src = copy_package(tmp_path / "src")
    env = {"PYTHONPATH": str(src)}
    spec = tiny_spec("code")
    spec["grid"] = {"method": ["dense", "synflow"], "sparsity": [0.5], "seed": [0]}
    spec["executor"]["kind"] = "debug"  # jobs in the launching process: no start-up per job
    path = write_spec(tmp_path, spec)

    def run(*args: str, check: bool = True):
        return tp(*args, cwd=tmp_path, env=env, check=check)

    def levels(sweep: str) -> dict[str, dict]:
        rows = json.loads(run("query", sweep, "--levels", "--format", "json").stdout)
        return {r["method"]: r for r in rows}

    trained = run("launch", str(path)).stdout.count("] train_loss ")  # one line per epoch trained
    before = levels("code")
    assert trained == 2  # level 0 and SynFlow's level
    assert before["dense"]["code"] and before["synflow"]["provenance"]["code"] == before["synflow"]["code"]
    synflow = src / "trainer" / "pruning" / "synflow.py"
    synflow.write_text(synflow.read_text() + "\nEDITED = True  # a change SynFlow's levels run\n")

    # same-code: only SynFlow's level is planned again; level 0 is reused
    out = run("launch", str(path)).stdout
    assert out.count("] train_loss ") == 1 and "1 levels already trained by this code" in " ".join(out.split())
    after = levels("code")
    assert after["dense"]["level_id"] == before["dense"]["level_id"]
    assert after["synflow"]["level_id"] != before["synflow"]["level_id"]
    assert after["synflow"]["code"] != before["synflow"]["code"]
    # two code trees in one sweep, each named: level 0 by the first, SynFlow's level by the second
    assert after["dense"]["sources"] == before["synflow"]["sources"] != after["synflow"]["sources"]
    assert len({r["run_id"] for r in after.values()}) == 2  # the superseded SynFlow run left the sweep

    # any: levels keep code-free ids; after the next change they are reused, and launch says so
    spec_any = {**spec, "name": "anycode", "reuse": "any"}
    run("launch", str(write_spec(tmp_path, spec_any)))
    synflow.write_text(synflow.read_text() + "\nEDITED_AGAIN = True\n")
    dry = json.loads(run("launch", str(tmp_path / "anycode.yaml"), "--dry-run", "--format", "json").stdout)
    assert (dry["reuse"], dry["levels_done"], dry["levels_to_train"]) == ("any", 2, 0)
    assert list(dry["other_code"].values()) == [1]  # SynFlow's level, trained by the code before
    assert dry["other_inputs"] == {}  # the same libraries; digits has no data files
    out = run("launch", str(tmp_path / "anycode.yaml")).stdout
    assert "1 were trained by other code" in " ".join(out.split()) and "nothing to submit" in out


def test_slurm_jobs_run_their_launch_s_code_snapshot_whatever_the_checkout_becomes(tmp_path, slurm_cluster):
    """A sweep launched from a checkout (a copy, the jobs' working directory too), which is then
    edited so that its trainer raises on import: the queued jobs and a requeued one still train
    and complete, importing the launch's snapshot. (The job wrapper, slurm/job.py, runs from the
    checkout that submitted it: it checks the snapshot with code the snapshot does not hold.)"""
    import subprocess

    from tests.inprocess import query_rows, status_json
    from tests.sweeputil import wait_for

    src = copy_package(tmp_path / "src")
    spec = tiny_spec("frozen", executor__kind="slurm", executor__array_parallelism=2)
    spec["trainer"]["overrides"].update(
        {"model.hidden": [256, 256], "data.batch_size": 16, "schedule.epochs": 5}
    )  # seconds a level: time to requeue
    spec["grid"] = {"method": ["imp", "imp_lrr"], "sparsity": [0.5], "seed": [0]}
    spec["output_dir"] = str(tmp_path / "out")
    path = write_spec(tmp_path, spec)
    db = f"sqlite:///{tmp_path / 'tp-results.db'}"
    env = {"PYTHONPATH": str(src)}

    out = tp("launch", str(path), "--db", db, cwd=src, env=env, check=True).stdout
    assert "submitted 3 jobs" in out, out  # level 0, then imp's and imp_lrr's waiting for it
    for f in ("trainer/level_trainer.py", "trainer/job.py"):
        p = src / f
        p.write_text('raise RuntimeError("edited checkout")\n' + p.read_text())
    (snap,) = (p for p in (tmp_path / "out" / "_code").iterdir() if not p.name.startswith("."))  # not its lock
    assert all(
        json.loads(p.read_text())["code_dir"] == str(snap)
        for p in (tmp_path / "out" / "jobs").glob("*[0-9a-f].json")
    )
    # requeue level 0's job mid-level (an epoch done): the batch script runs again, from the snapshot
    import sqlite3

    def level0_running():
        try:
            with sqlite3.connect(tmp_path / "tp-results.db", timeout=5) as c:
                row = c.execute(
                    "select j.sched_id from jobs j join levels l on l.job_id = j.job_id where "
                    "l.depth = 0 and l.epoch >= 1 and l.finished_at is null and "
                    "j.state = 'RUNNING'"
                ).fetchone()
            return row[0] if row else None
        except sqlite3.Error:
            return None

    try:
        sched = wait_for(level0_running, 300, "level 0 under way", poll=0.3)
        subprocess.run(["scontrol", "requeue", sched], check=True, capture_output=True)
        st = wait_for(
            lambda: (lambda s: s if set(s["counts"]) <= {"COMPLETED", "FAILED", "LOST", "CANCELLED"} else None)(
                status_json("frozen", tmp_path, db=db)  # in this process: the status is not the point
            ),
            600,
            "the sweep to finish",
            poll=3,
        )
    finally:  # nothing left in the queue, whatever happened
        tp("cancel", "frozen", "--db", db, cwd=tmp_path, env=env)
    assert st["counts"] == {"COMPLETED": 2}, st
    events = status_json(st["runs"][0]["run_id"], tmp_path, db=db)["events"]
    assert any(e["to"] == "PREEMPTED" for e in events), events  # level 0's job was requeued
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "out" / "_jobs").rglob("*.out"))
    assert "edited checkout" not in logs
    prov = query_rows("frozen", tmp_path, db=db, levels=True)
    assert {r["provenance"]["snapshot"] for r in prov} == {str(snap)}
    assert not list(snap.rglob("__pycache__"))  # no job wrote bytecode into it
