"""Optuna searches through `tp-sweep launch`: trials as runs on the real executors, studies in the
store's database, interrupted trials resumed, failed ones retried, the best per cell."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import sqlalchemy as sa

from tests.inprocess import status_json
from tests.sweeputil import REPO, TP, pg_schema, tiny_spec, tp, wait_for, write_spec


def _spec(name: str, n_trials: int = 8, **search) -> dict:
    spec = tiny_spec(name)
    # Slow enough (a few seconds per trial) that a signal lands mid-level.
    spec["trainer"]["overrides"].update({"model.hidden": [128, 128], "data.batch_size": 16, "schedule.epochs": 3})
    spec["grid"] = {"method": ["dense"], "seed": [0]}
    spec["executor"]["array_parallelism"] = 2
    spec["search"] = {
        "params": {
            "optimizer.lr": {"type": "log_float", "low": 0.01, "high": 0.3},
            "optimizer.weight_decay": {"type": "float", "low": 0.0, "high": 0.001},
        },
        "n_trials": n_trials,
        "sampler": {"name": "tpe", "seed": 1},
        **search,
    }
    return spec


def _launch(tmp, spec, *args, env=None) -> subprocess.Popen:
    path = write_spec(tmp, spec)
    return subprocess.Popen(
        [*TP, "launch", str(path), *args],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO), **(env or {})},
    )


def _studies(url: str) -> list[tuple[str, int]]:
    eng = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with eng.connect() as c:
        rows = c.execute(
            sa.text(
                "select s.study_name, count(t.trial_id) from studies s "
                "join trials t on t.study_id = s.study_id "
                "where t.state = 'COMPLETE' group by s.study_name"
            )
        ).all()
    eng.dispose()
    return [tuple(r) for r in rows]


def _check_done(tmp, sweep: str, url: str, db_args: list[str]) -> dict:
    assert _studies(url) == [(f"{sweep}|dense|0|0|{{}}", 8)]  # the study is in the store's database
    best = json.loads(tp("query", sweep, "--best", "--format", "json", *db_args, cwd=tmp, check=True).stdout)
    assert len(best) == 1 and best[0]["complete"] == 8 and 0.5 < best[0]["best_value"] <= 1.0
    assert set(best[0]["best_params"]) == {"optimizer.lr", "optimizer.weight_decay"}
    st = status_json(sweep, tmp, db=url if db_args else None)
    runs = {r["run_id"]: r for r in st["runs"]}
    assert best[0]["best_run_id"] in runs and all(r["state"] == "COMPLETED" for r in runs.values())
    assert st["search"][0]["complete"] == 8
    table = tp("status", sweep, *db_args, cwd=tmp, check=True).stdout
    assert "search, trials per cell" in table
    return st


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))


def _mid_level(url: str, last_epoch: int = 2) -> tuple[str, str] | None:
    """(job file, scheduler id) of a trial whose level has finished an epoch (and at most
    `last_epoch`) of its 3, so that a signal lands mid-level (and never on a trial still starting)."""
    if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///") :]):
        return None
    eng = _engine(url)
    try:
        with eng.connect() as c:
            row = c.execute(
                sa.text(
                    "select j.job_file, j.sched_id from jobs j join levels l on l.level_id = j.level_id "
                    "where j.state = 'RUNNING' and l.epoch between 1 and :last"
                ),
                {"last": last_epoch},
            ).first()
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # no store (SQLite) or tables (PG) yet
        return None
    finally:
        eng.dispose()
    return tuple(row) if row else None


def _was_stopped_and_resumed(url: str) -> None:
    eng = _engine(url)
    with eng.connect() as c:
        states = [r[0] for r in c.execute(sa.text("select state_to from events")).all()]
        resumed = c.execute(sa.text("select count(*) from attempts where resumed_from is not null")).scalar()
    eng.dispose()
    assert "PREEMPTED" in states and resumed >= 1  # stopped mid-level, resumed from its checkpoint


@pytest.mark.slow
def test_local_search_with_an_interrupted_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'tp-results.db'}"
    launcher = _launch(tmp_path, _spec("search_local"))
    job_file, _ = wait_for(lambda: _mid_level(url), 240, "a trial in mid-level", poll=0.1)
    ranks = subprocess.run(
        ["pgrep", "-f", "--", f"-u -m trainer.job {job_file}"], capture_output=True, text=True
    ).stdout.split()
    assert ranks, "the trial's trainer ranks"
    for pid in ranks:
        os.kill(int(pid), signal.SIGUSR2)  # the timeout warning: save, stop, be resumed
    out, _ = launcher.communicate(timeout=900)
    assert launcher.returncode == 0, out
    _check_done(tmp_path, "search_local", url, [])
    _was_stopped_and_resumed(url)


@pytest.mark.slow
def test_failed_trials_are_retried_then_given_up(tmp_path):
    spec = _spec("search_fail", n_trials=2, sampler={"name": "grid", "seed": 0}, max_retries=1)
    # A batch bigger than the training set: valid config, fails in the job, every time.
    spec["search"]["params"] = {"data.batch_size": {"type": "categorical", "choices": [64, 4096]}}
    spec["trainer"]["overrides"]["schedule.epochs"] = 1
    launcher = _launch(tmp_path, spec)
    out, _ = launcher.communicate(timeout=900)
    assert launcher.returncode in (0, 1) and "Traceback" not in out, out  # FAILED runs: status exits 1
    best = json.loads(tp("query", "search_fail", "--best", "--format", "json", cwd=tmp_path, check=True).stdout)
    assert best[0]["complete"] == 1 and best[0]["fail"] == 2  # tried, retried once, given up
    assert best[0]["best_params"] == {"data.batch_size": 64}
    _check_report(tmp_path, "search_fail", best[0])


def _check_report(tmp, sweep: str, best: dict) -> None:
    """The HTML report of a search: the best trial per cell, each parameter against the metric
    (drawn in a real browser), and the failed trials' jobs with their messages."""
    from tests.browserutil import browser_problem, chromium, console_errors, open_report
    from tests.conftest import require_service

    tp("report", sweep, "--out", str(tmp / "search.html"), cwd=tmp, check=True)
    page = (tmp / "search.html").read_text()
    start = page.index("id=tp-data>") + len("id=tp-data>")
    data = json.loads(page[start : page.index("</script>", start)])
    (cell,) = data["search"]["cells"]
    assert cell["best_params"] == best["best_params"] and cell["fail"] == best["fail"]
    assert {t["state"] for t in data["search"]["trials"]} == {"COMPLETE", "FAIL"}
    failed = [j for j in data["trouble"]["jobs"] if j["state"] == "FAILED"]
    assert failed and all(j["message"] for j in failed)
    assert "Search: the best trial per cell" in page
    require_service("headless chromium", browser_problem())
    with chromium() as driver:
        assert open_report(driver, tmp / "search.html") == {"ready": True, "error": None}
        assert console_errors(driver) == []
        names = driver.execute_script(
            "return [...document.querySelectorAll('#search-plots .plot')].map(d => d.layout.title.text)"
        )
        assert names == ["data.batch_size against test_acc"]


@pytest.mark.slurm
def test_slurm_search_on_postgres(tmp_path, slurm_cluster, postgres_url):
    with pg_schema(postgres_url, "tp_search_test") as url:
        spec = _spec("search_slurm")
        spec["executor"].update({"kind": "slurm", "procs_per_node": 1, "cpus_per_task": 1})
        launcher = _launch(tmp_path, spec, "--db", url)
        # One epoch done, two to go: time for the signal to travel through slurmctld and slurmd.
        _, sched_id = wait_for(
            lambda: _mid_level(url, last_epoch=1), 300, "a trial in mid-level under Slurm", poll=0.1
        )
        # What Slurm sends before a time limit: submitit saves the trial and requeues it. The
        # trainers are held (SIGSTOP) until the signal is pending, so that the level cannot
        # finish while the signal travels through slurmctld and slurmd on a busy machine.
        from tests.test_e2e_slurm import interrupt_held

        interrupt_held(tmp_path, lambda: subprocess.run(["scancel", "--signal=USR2", sched_id], check=True))
        out, _ = launcher.communicate(timeout=1200)
        assert launcher.returncode == 0, out
        _check_done(tmp_path, "search_slurm", url, ["--db", url])
        _was_stopped_and_resumed(url)


@pytest.mark.parametrize(
    "search, message",
    [
        ({"params": {}, "n_trials": 2}, "search space is empty"),
        ({"params": {"optimizer.lr": {"type": "log_float", "low": 0, "high": 1}}, "n_trials": 2}, "needs low > 0"),
        (
            {"params": {"optimizer.lr": {"type": "float", "low": 1, "high": 0.1}}, "n_trials": 2},
            "must be below high",
        ),
        ({"params": {"optimizer.lr": {"type": "normal", "low": 0.1, "high": 1}}, "n_trials": 2}, "type"),
        ({"params": {"optimizer.lr": {"type": "categorical", "choices": []}}, "n_trials": 2}, "non-empty list"),
        (
            {"params": {"optimizer.lrr": {"type": "float", "low": 0.1, "high": 1}}, "n_trials": 2},
            "unknown trainer key",
        ),
        (
            {
                "params": {"optimizer.lr": {"type": "float", "low": 0.1, "high": 1}},
                "n_trials": 2,
                "sampler": {"name": "grid"},
            },
            "is continuous",
        ),
        ({"params": {"optimizer.lr": {"type": "float", "low": 0.1, "high": 1}}, "n_trials": 0}, "n_trials"),
    ],
)
def test_bad_searches_exit_2_before_anything_runs(tmp_path, search, message):
    """The launch operation in-process: bad input (exit 2), before the store is even made."""
    from core.errors import UserError
    from orchestrator.operations.launch import LaunchRequest, launch

    spec = _spec("bad_search")
    spec["search"] = search
    with pytest.raises(UserError) as exc:
        launch(LaunchRequest(str(write_spec(tmp_path, spec)), db=f"sqlite:///{tmp_path / 'tp-results.db'}"))
    assert exc.value.exit_code == 2 and message in str(exc.value), exc.value
    assert not (tmp_path / "tp-results.db").exists()


@pytest.mark.slow
def test_pruned_trials_are_pruned_with_their_epoch_and_value_and_no_traceback(tmp_path):
    """Pruned trials printed submitit's KeyboardInterrupt tracebacks on the terminal and showed
    as CANCELLED, "stopped after cancel (PREEMPTED: stopped by SIGTERM ...)": a pruned trial's
    run is PRUNED in status (with the epochs it trained and its value), in query and in the
    report's data, and nothing of its stop reaches the terminal."""
    spec = _spec("search_pruned", n_trials=4, sampler={"name": "tpe", "seed": 0})
    spec["search"]["params"] = {"optimizer.lr": {"type": "log_float", "low": 1e-5, "high": 0.5}}
    spec["search"]["pruner"] = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
    spec["trainer"]["overrides"]["schedule.epochs"] = 4
    spec["executor"]["array_parallelism"] = 1  # one after the other: the pruner has a finished trial
    launcher = _launch(tmp_path, spec)
    out, _ = launcher.communicate(timeout=900)
    assert launcher.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    st = status_json("search_pruned", tmp_path)
    pruned = [r for r in st["runs"] if r["state"] == "PRUNED"]
    assert pruned and st["counts"]["PRUNED"] == len(pruned) and "CANCELLED" not in st["counts"], st["counts"]
    for r in pruned:
        assert 1 <= r["epoch"] < 4 and r["message"].startswith("pruned by the search after "), r
        assert "stopped after cancel" not in r["message"] and "%" in r["message"], r
    rows = json.loads(tp("query", "search_pruned", "--format", "json", cwd=tmp_path, check=True).stdout)
    gone = [r for r in rows if r["state"] == "PRUNED"]
    assert len(gone) == len(pruned) and all(1 <= r["epochs"] < 4 and r["test_acc"] is not None for r in gone)
    (cell,) = json.loads(
        tp(
            "query",
            "search_pruned",
            "--group-by",
            "method",
            "--where",
            "seed == 0",
            "--format",
            "json",
            cwd=tmp_path,
        ).stdout
    )
    assert cell["n"] == len(rows) - len(gone)  # a pruned value is never in a mean
    best = json.loads(tp("query", "search_pruned", "--best", "--format", "json", cwd=tmp_path, check=True).stdout)
    assert best[0]["pruned"] == len(pruned)
    tp("report", "search_pruned", "--out", str(tmp_path / "r.html"), cwd=tmp_path, check=True)
    page = (tmp_path / "r.html").read_text()
    start = page.index("id=tp-data>") + len("id=tp-data>")
    data = json.loads(page[start : page.index("</script>", start)])
    trials = [t for t in data["search"]["trials"] if t["state"] == "PRUNED"]
    assert len(trials) == len(pruned) and all(t["pruned_epochs"] and t["pruned_value"] for t in trials)
