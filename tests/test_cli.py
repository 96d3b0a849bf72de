"""The command line: every command answers (its --help without torch, FFCV or scikit-learn), `db
upgrade` migrates, and status and query stay whole at 80 columns, fast at scale, and say what
they know (elapsed time, ETA, device-hours). Stores are written directly (a real plan recorded
with Store.record_plan, levels finished with Store.import_results, jobs created as launch does):
no training, so each test takes seconds."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import sqlalchemy as sa

from cli.tp_sweep import build_parser
from tests.sweeputil import REPO, TP, roles_spec, tp

COMMANDS = [
    "launch",
    "supervise",
    "status",
    "resume",
    "cancel",
    "query",
    "plot",
    "report",
    "data",
    "db",
    "cluster",
]
HEAVY = ("torch", "ffcv", "sklearn")
METHODS = ["dense", "imp", "imp_lrr", "random_balanced", "er_balanced", "synflow"]


def test_every_design_command_is_there():
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    assert sorted(sub.choices) == sorted(COMMANDS)


def test_db_upgrade_creates_then_keeps_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    from db.migrate import head_revision
    from orchestrator.operations.store_admin import upgrade

    head = head_revision()
    first = upgrade(url)
    assert (first.before, first.after) == (None, head)
    again = upgrade(url)
    assert (again.before, again.after) == (head, head)
    said = tp("db", "upgrade", "--db", f"sqlite:///{tmp_path / 'cli.db'}", cwd=tmp_path, check=True)
    assert f"schema empty -> {head}" in said.stdout  # the command says what the operation did
    eng = sa.create_engine(url)
    assert {"sweeps", "runs", "levels", "epochs", "events", "attempts"} <= set(sa.inspect(eng).get_table_names())
    eng.dispose()


def test_what_a_store_and_a_multirun_leave_here_is_ignored_by_git(tmp_path):
    """A demo left tp-results.db.migrate-lock (SQLite's migration lock) and hydra's multirun/
    folder in `git status`: every file a new store leaves beside itself is ignored, and so is
    multirun/."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tp("db", "upgrade", "--db", f"sqlite:///{tmp_path / 'tp-results.db'}", cwd=tmp_path, check=True)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "tp-results.db.migrate-lock" in left, left
    for path in [
        *left,
        "multirun/2025-01-31_12-00-00/0/trainer.log",
        "multirun/2025-01-31_12-00-00/multirun.yaml",
    ]:
        check = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPO, capture_output=True)
        assert check.returncode == 0, f"{path} is not ignored by .gitignore"


# ---- help and version -----------------------------------------------------------------------
SUBCOMMANDS = {"data": ["write"], "db": ["upgrade", "import"], "cluster": ["up", "down", "status", "check"]}
HELPS = [[], *[[c] for c in COMMANDS], *[[c, s] for c, subs in SUBCOMMANDS.items() for s in subs]]
_PROBE = """import sys
from cli.tp_sweep import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules), "CODE=" + str(code))
"""


@pytest.mark.parametrize("args", HELPS, ids=lambda a: " ".join(a) or "tp-sweep")
def test_every_help_answers_without_heavy_imports(args, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args, "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80"},
    )
    last = proc.stdout.strip().splitlines()[-1]
    assert last == "HEAVY= CODE=0", proc.stdout + proc.stderr
    assert "usage: tp-sweep" in proc.stdout


def _help(capsys, monkeypatch, *args: str) -> str:
    from cli.tp_sweep import main

    monkeypatch.setenv("COLUMNS", "1000")  # a line per option: no wrapping to match across
    try:
        code = main([*args, "--help"])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr().out
    assert code == 0 and out.startswith(f"usage: tp-sweep {' '.join(args)}".rstrip()), out
    return out


def test_every_subcommand_has_help_of_its_own(capsys, monkeypatch):
    """`db import --help` and `db upgrade --help` printed `db`'s help, and `cluster --help`
    described only `check`: each subcommand says what it does, and its parent lists them all."""
    for cmd, subs in SUBCOMMANDS.items():
        parent = _help(capsys, monkeypatch, cmd)
        texts = {s: _help(capsys, monkeypatch, cmd, s) for s in subs}
        for s, text in texts.items():
            description = text.split("\n\n")[1]  # usage, then what the subcommand does
            assert not description.lstrip().startswith(("positional", "options")), (cmd, s, text)
            assert all(description not in other for o, other in texts.items() if o != s), (cmd, s)
            listed = re.search(rf"^\s+{s}\s+(\S.*)$", parent, re.M)  # its line in the parent's help
            assert listed, (cmd, s, parent)
    assert "OUTPUT_DIR" in _help(capsys, monkeypatch, "db", "import")
    assert "migrations" in _help(capsys, monkeypatch, "db", "upgrade")


def test_data_write_says_how_to_write_the_test_split(capsys, monkeypatch):
    """`data write --from digits` wrote only the train split, and neither its help nor the README
    said that --split test writes the other."""
    out = _help(capsys, monkeypatch, "data", "write")
    line = next(x for x in out.splitlines() if x.strip().startswith("--split"))
    assert "default train" in line and "--split test" in line, line
    readme = (REPO / "README.md").read_text()
    assert "`--split test`" in readme and "[--split train\\|test]" in readme


def test_only_launch_says_the_store_may_come_from_a_spec(capsys, monkeypatch):
    """status and query take no spec: their --db falls back to TP_DB_URL, then SQLite here."""
    for cmd in [*(c for c in COMMANDS if c not in ("data", "cluster", "db")), "db upgrade", "db import"]:
        text = _help(capsys, monkeypatch, *cmd.split())
        line = next(x for x in text.splitlines() if x.lstrip().startswith("--db"))
        assert "TP_DB_URL" in line and "sqlite:///tp-results.db in the working directory" in line, line
        assert ("spec's db:" in line) == (cmd == "launch"), (cmd, line)


@pytest.mark.parametrize(
    "args",
    [["status", "nosuch"], ["query", "nosuch"], ["resume", "nosuch"], ["cancel", "nosuch"], ["plot", "nosuch"]],
    ids=" ".join,
)
def test_an_unknown_sweep_is_an_error_before_sqlalchemy(args, tmp_path):
    """A typo answers at once (db/probe.py): no SQLAlchemy import, exit 2, and no store created
    where there was none; against an existing store, the same, naming the store."""
    heavy = (*HEAVY, "sqlalchemy")
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    env.pop("TP_DB_URL", None)
    run = lambda: subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=heavy), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    proc = run()
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY= CODE=2", proc.stdout + proc.stderr
    assert "nosuch" in proc.stderr and "has no store yet" in proc.stderr
    assert not (tmp_path / "tp-results.db").exists()
    from db.store import Store

    Store(f"sqlite:///{tmp_path / 'tp-results.db'}").close()  # an empty store, at head
    proc = run()
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY= CODE=2", proc.stdout + proc.stderr
    assert f"{args[1]!r} in sqlite:///{tmp_path / 'tp-results.db'}" in proc.stderr


def test_version():
    from core import version

    proc = tp("--version", cwd=REPO, check=True)
    assert re.fullmatch(r"tp-sweep \(turboprune\) \d+\.\d+\S*", proc.stdout.strip()), proc.stdout
    assert proc.stdout.split()[-1] == version()


# ---- a demo-sized sweep, written straight into a store ---------------------------------------
def _acc(level_id: str) -> float:
    """A made-up accuracy with two decimals in percent that differ from level to level."""
    return round(0.5 + (int(level_id[:6], 16) % 4900) / 10000, 4)


def make_sweep(tmp_path, name: str = "narrow", url: str | None = None, open_runs: dict[str, str] | None = None):
    """A real plan of METHODS x 4 sparsities x 2 seeds x 2 learning rates, recorded (in a SQLite
    store in tmp_path, or at `url`); every level finished with metrics and epochs but those
    after level 0 of two runs: an imp run RUNNING mid-level and an imp_lrr run FAILED (or, by
    method, the states in `open_runs`: {} finishes every level)."""
    from db.schema import Attempt, Job, Level
    from db.store import Store
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.jobs import group_jobs
    from orchestrator.plan.spec import parse_spec

    spec = {
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "trainer": {"config": "digits_mlp", "overrides": {"schedule.epochs": 3}},
        "grid": {
            "method": METHODS,
            "sparsity": [0.5, 0.8, 0.9, 0.95],
            "seed": [0, 1],
            "optimizer.lr": [0.1, 0.05],
        },
        "executor": {"kind": "local", "gpus_per_node": 0, "cpus_per_task": 2},
    }
    plan = plan_sweep(parse_spec(spec))
    url = url or f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    store.record_plan(plan, spec, plan.levels_dir)
    open_runs = {"imp": "RUNNING", "imp_lrr": "FAILED"} if open_runs is None else open_runs
    busy = {next(r for r in plan.runs if r.method == m).run_id: st for m, st in open_runs.items()}
    state_of = {lid: busy[r.run_id] for r in plan.runs if r.run_id in busy for lid in r.levels[1:]}
    open_levels = set(state_of)
    with store.serialized() as s:
        jobs = group_jobs(list(plan.trained.values()), {}, plan.snapshots)
        store.create_jobs(s, jobs, name, {j.job_id: f"{tmp_path}/{j.job_id}.json" for j in jobs})
    results = {}
    for lid, lv in plan.levels.items():
        if lid in open_levels:
            continue
        history = [
            {
                "epoch": e,
                "train_loss": 0.1,
                "train_acc": 0.9,
                "test_acc": _acc(lid),
                "lr": 0.1,
                "steps": 10,
                "seconds": 2.0,
                "images_per_s": 700.0,
            }
            for e in range(3)
        ]
        results[lid] = {
            "achieved_sparsity": round(1 - lv.density, 6),
            "test_acc": _acc(lid),
            "best_test_acc": _acc(lid),
            "test_loss": 0.3,
            "train_loss": 0.1,
            "train_acc": 0.9,
            "epochs": 3,
            "seconds": 6.0,
            "history": history,
        }
    store.import_results(results)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with store.session() as s:
        for j in jobs:
            state = next((state_of[lid] for lid in j.levels if lid in state_of), "COMPLETED")
            # debug jobs are never polled: the RUNNING one stays RUNNING while status reconciles
            s.execute(
                sa.update(Job)
                .where(Job.job_id == j.job_id)
                .values(
                    state=state,
                    executor="debug",
                    sched_id="1",
                    attempts=1,
                    heartbeat_at=now,
                    message="trainer exit 1" if state == "FAILED" else None,
                )
            )
            s.add(
                Attempt(
                    job_id=j.job_id,
                    attempt=1,
                    started_at=now - dt.timedelta(minutes=30),
                    ended_at=None if state == "RUNNING" else now - dt.timedelta(minutes=5),
                    outcome=None if state == "RUNNING" else state,
                )
            )
        for r in plan.runs:
            if busy.get(r.run_id) == "RUNNING":
                s.execute(sa.update(Level).where(Level.level_id == r.levels[1]).values(epoch=1))
    store.close()
    return url, plan, busy


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("narrow")
    url, plan, busy = make_sweep(tmp)
    return tmp, url, plan, busy


def _cli(tmp, *args, columns: int = 80):
    return tp(*args, cwd=tmp, env={"COLUMNS": str(columns), "TP_LOST_AFTER_S": "1e12"})


def _status(url: str, target: str) -> dict:
    """`status TARGET --format json`, in this process: the operation's result as the JSON says it."""
    from cli.common import json_text
    from orchestrator.operations.status import target_status
    from orchestrator.operations.stores import open_reader

    reader = open_reader(url, target=target, runs=True)
    try:
        return json.loads(json_text(target_status(reader, target).as_json()))
    finally:
        reader.close()


def _query(url: str, sweep: str, **request) -> list[dict]:
    """`query SWEEP --format json`, in this process."""
    from cli.common import json_text
    from orchestrator.operations.query import QueryRequest, query
    from orchestrator.operations.stores import open_reader

    reader = open_reader(url, target=sweep)
    try:
        return json.loads(json_text(query(reader, QueryRequest(sweep, **request)).rows))
    finally:
        reader.close()


def test_status_at_80_columns_shows_every_method_state_and_accuracy_whole(narrow):
    tmp, url, plan, busy = narrow
    proc = _cli(tmp, "status", "narrow", "--db", url)
    assert proc.returncode == 1, proc.stderr  # a FAILED run: exit 1
    out = proc.stdout
    assert max(len(line) for line in out.splitlines()) <= 80, out
    runs = json.loads(_cli(tmp, "status", "narrow", "--db", url, "--format", "json").stdout)["runs"]
    words = set(out.split())
    assert {"COMPLETED", "RUNNING", "FAILED"} <= words and set(METHODS) <= words, out
    for r in runs:  # every run is listed (fewer than 40), its accuracy in percent, whole
        assert r["run_id"][:8] in words
        if r["test_acc"] is not None:
            assert f"{r['test_acc'] * 100:.2f}" in words, (r, out)
    assert "test_acc (%) by sparsity" in out and "trainer exit 1" in out


@pytest.mark.parametrize("extra", [[], ["--group-by", "method,sparsity"], ["--levels"]])
def test_query_at_80_columns_shows_methods_and_percent_whole(narrow, extra):
    tmp, url, plan, busy = narrow
    out = _cli(tmp, "query", "narrow", "--db", url, *extra).stdout
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "test_acc (%)" in out
    words = set(out.split())
    assert set(METHODS) <= words, out
    rows = json.loads(_cli(tmp, "query", "narrow", "--db", url, *extra, "--format", "json").stdout)
    key = "test_acc_mean" if extra[:1] == ["--group-by"] else "test_acc"
    for r in rows:
        if r[key] is not None:
            assert f"{r[key] * 100:.2f}" in words, (r, out)
    assert all(r[key] is None or 0 <= r[key] <= 1 for r in rows)  # JSON keeps fractions


def test_a_where_that_compares_an_accuracy_with_a_percent_says_accuracies_are_fractions(narrow):
    """`--where "test_acc > 90"` (read off a table in percent) matched nothing, silently."""
    tmp, url, plan, busy = narrow
    proc = _cli(tmp, "query", "narrow", "--db", url, "--where", "test_acc > 90")
    assert proc.returncode == 0 and "no rows" in proc.stdout, proc.stdout + proc.stderr
    assert "warning:" in proc.stderr and "fractions" in proc.stderr and "use 0.9 for 90 %" in proc.stderr
    proc = _cli(tmp, "query", "narrow", "--db", url, "--where", "test_acc > 0.9 and seed > 0", "--format", "json")
    assert proc.returncode == 0 and json.loads(proc.stdout) and proc.stderr == "", proc.stderr
    from db.where import where_warnings

    for expr, fields in (
        ("80 < best_test_acc <= 99.5", ["best_test_acc with 80", "best_test_acc with 99.5"]),
        ("train_acc >= 1.5 or test_top5 in [0.5, 95]", ["train_acc with 1.5", "test_top5 with 95"]),
        ("method == 'imp' and not test_acc < 75", ["test_acc with 75"]),
    ):
        said = where_warnings(expr)
        assert len(said) == len(fields) and all(f in w for f, w in zip(fields, said)), (expr, said)
    for fine in ("test_acc > 0.9", "test_acc == 1", "test_acc * 100 > 90", "sparsity > 0.5 and seed < 3", "x >"):
        assert where_warnings(fine) == [], fine


def test_query_levels_at_80_columns_keeps_each_level_s_kind_and_id(narrow):
    """A row of `query --levels` is a level: its kind and id stay when columns must go."""
    tmp, url, plan, busy = narrow
    out = _cli(tmp, "query", "narrow", "--db", url, "--levels").stdout
    assert max(len(line) for line in out.splitlines()) <= 80, out
    header = out.splitlines()[1].split()
    assert {"level_kind", "level_id", "method", "sparsity"} <= set(header), out
    rows = json.loads(_cli(tmp, "query", "narrow", "--db", url, "--levels", "--format", "json").stdout)
    words = set(out.split())
    assert all(r["level_id"][:8] in words and r["level_kind"] in words for r in rows), out


# search_summary's rows (orchestrator/search/studies.py), as `query --best` and status read them
SEARCH_CELLS = [
    {
        "sweep": "srch",
        "method": "random_balanced",
        "sparsity": 0.95,
        "seed": 0,
        "axes": {"model.width": 64},
        "direction": "maximize",
        "trials": 24,
        "running": 1,
        "waiting": 0,
        "complete": 21,
        "pruned": 1,
        "fail": 1,
        "best_value": 0.9617130766249247,
        "best_params": {
            "optimizer.lr": 0.0008917730007820798,
            "optimizer.weight_decay": 3.0233257263183977e-05,
            "optimizer.momentum": 0.8510451867218373,
            "schedule.warmup_epochs": 3,
        },
        "best_trial": 17,
        "best_run_id": "3f2a9c1b88d04e67",
    },
    {
        "sweep": "srch",
        "method": "imp",
        "sparsity": 0.5,
        "seed": 1,
        "axes": {"model.width": 64},
        "direction": "maximize",
        "trials": 2,
        "running": 2,
        "waiting": 0,
        "complete": 0,
        "pruned": 0,
        "fail": 0,
    },
]


@pytest.fixture(scope="module")
def search_sweep(tmp_path_factory):
    """A sweep with a search, its cells' Optuna studies written straight into its store (trials
    added as finished, no training): (tmp, url)."""
    import optuna

    from db.store import Store
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.spec import parse_spec
    from orchestrator.search.studies import storage_for

    tmp = tmp_path_factory.mktemp("search")
    spec = {
        "name": "srch",
        "output_dir": str(tmp / "runs"),
        "trainer": {"config": "digits_mlp"},
        "grid": {"method": ["random_balanced"], "sparsity": [0.95], "seed": [0]},
        "search": {
            "params": {
                "optimizer.lr": {"type": "log_float", "low": 1e-4, "high": 0.3},
                "optimizer.weight_decay": {"type": "float", "low": 0.0, "high": 1e-3},
            },
            "n_trials": 2,
        },
    }
    plan = plan_sweep(parse_spec(spec))
    url = f"sqlite:///{tmp / 'store.db'}"
    store = Store(url)
    store.record_plan(plan, spec, plan.levels_dir)
    store.close()
    cell = SEARCH_CELLS[0]
    study = optuna.create_study(
        storage=storage_for(url), study_name="srch|random_balanced|0.95|0|{}", direction="maximize"
    )
    dists = {
        "optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 0.3, log=True),
        "optimizer.weight_decay": optuna.distributions.FloatDistribution(0.0, 1e-3),
    }
    params = {k: cell["best_params"][k] for k in dists}
    for value, run_id in ((0.5, "0123456789abcdef"), (cell["best_value"], cell["best_run_id"])):
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=dists, value=value, user_attrs={"run_id": run_id}
            )
        )
    return tmp, url


@pytest.mark.parametrize("columns", [80, 120])
def test_query_best_at_80_columns_shows_the_best_value_and_parameters(search_sweep, columns):
    tmp, url = search_sweep
    proc = _cli(tmp, "query", "srch", "--db", url, "--best", columns=columns)
    out = proc.stdout
    assert proc.returncode == 0 and max(len(line) for line in out.splitlines()) <= columns, out + proc.stderr
    assert re.search(r"best_value \(%\)\s+96\.17\b", out), out
    assert re.search(r"optimizer\.lr\s+0\.0008918\b", out) and "3f2a9c1b" in out, out
    (row,) = json.loads(_cli(tmp, "query", "srch", "--db", url, "--best", "--format", "json").stdout)
    assert row["best_value"] == SEARCH_CELLS[0]["best_value"]  # JSON: the fraction, in full
    assert row["best_params"]["optimizer.lr"] == SEARCH_CELLS[0]["best_params"]["optimizer.lr"]


def _rendered(items, width: int) -> str:
    import io

    from rich.console import Console

    from cli.render.tables import show

    console = Console(file=io.StringIO(), width=width)
    show(console, items)
    return console.file.getvalue()


@pytest.mark.parametrize("width", [80, 120])
def test_query_best_shows_the_value_in_percent_and_every_parameter_at_80_columns(width):
    """`query --best` was one 13-column table: below 200 columns best_value and best_params were
    dropped. Each cell's best is now keys and values, a line each, the value in percent as in
    every other table (of an accuracy) and the parameters to 4 significant digits."""
    from cli.render.search import best_renderables

    out = _rendered(best_renderables("srch", SEARCH_CELLS, "test_acc"), width)
    assert max(len(line) for line in out.splitlines()) <= width, out
    assert re.search(r"best_value \(%\)\s+96\.17\b", out), out
    for name, shown in (
        ("optimizer.lr", "0.0008918"),
        ("optimizer.weight_decay", "3.023e-05"),
        ("optimizer.momentum", "0.851"),
        ("schedule.warmup_epochs", "3"),
    ):
        assert re.search(rf"^\s+{re.escape(name)}\s+{re.escape(shown)}\s*$", out, re.M), (name, out)
    assert "0.00089177" not in out and "best_trial" in out and "3f2a9c1b" in out and "model.width 64" in out
    assert re.search(r"best_value \(%\)\s+-", out), out  # the cell with no finished trial yet
    loss = _rendered(best_renderables("srch", SEARCH_CELLS, "test_loss"), width)
    assert re.search(r"best_value\s+0\.9617\b", loss) and "(%)" not in loss, loss


def test_search_and_run_tables_show_searched_values_to_4_significant_digits():
    from cli.render.search import search_table
    from cli.render.status import run_cells, run_columns
    from db.summaries import RunSummary

    out = _rendered([search_table("srch", SEARCH_CELLS, "test_acc")], 200)
    assert "optimizer.lr=0.0008918" in out and "96.17" in out and "best (%)" in out, out
    run = RunSummary("3f2a9c1b88d04e67", "imp", 0, {"optimizer.lr": 0.0008917730007820798, "model.width": 64})
    cells = run_cells(run, ["model.width", "optimizer.lr"])
    assert cells["axis:optimizer.lr"] == "0.0008918" and cells["axis:model.width"] == "64"
    assert {c.key for c in run_columns(["model.width", "optimizer.lr"])} >= set(cells)


def test_status_json_says_time_and_device_hours(narrow):
    tmp, url, plan, busy = narrow
    st = json.loads(_cli(tmp, "status", "narrow", "--db", url, "--format", "json").stdout)
    assert st["counts"]["FAILED"] == 1 and st["counts"]["RUNNING"] == 1
    assert st["levels_total"] == len(plan.trained) and st["levels_done"] < st["levels_total"]
    assert st["device"] == "CPU" and st["devices_per_job"] == 2 and st["gpu_hours_used"] == 0.0
    assert st["epoch_s"] == 2.0  # every recorded epoch took 2 s
    assert st["device_hours_used"] == pytest.approx(st["epochs_done"] * 2.0 * 2 / 3600, abs=1e-3)
    assert st["device_hours_left"] == pytest.approx(st["epochs_left"] * 2.0 * 2 / 3600, abs=1e-3)
    by_state = {r["state"]: r for r in st["runs"]}
    running, failed = by_state["RUNNING"], by_state["FAILED"]
    assert running["epoch"] == 1 and running["epochs_left"] > 0
    assert running["eta_s"] == pytest.approx(running["epochs_left"] * 2.0, abs=0.1)
    assert running["elapsed_s"] >= 30 * 60 - 5  # its job's attempt started 30 minutes ago
    assert failed["message"] == "trainer exit 1" and failed["elapsed_s"] == pytest.approx(25 * 60, abs=5)
    assert all(r["eta_s"] is None and r["epochs_left"] == 0 for r in st["runs"] if r["state"] == "COMPLETED")


def test_status_and_query_load_neither_a_console_for_json_nor_the_orm(narrow):
    """JSON has no width to ask for (rich's Console cost 0.02 s of a 10,000-run status), and status
    reads through the Core tables (SQLAlchemy's ORM and the mapped classes cost 0.1 s): neither
    is imported, with a job running and one failed, until something has to be written."""
    tmp, url, plan, busy = narrow
    heavy = "('rich.console', 'sqlalchemy.orm', 'db.schema')"
    loaded = f"print(sorted(m for m in {heavy} if m in sys.modules), file=sys.stderr)"
    for cmd, fmt in (("status", "json"), ("status", "table"), ("query", "json")):
        code = (
            "import sys; from cli.tp_sweep import main; "
            f"sys.argv = ['tp-sweep', {cmd!r}, 'narrow', '--db', {url!r}, '--format', {fmt!r}]; main(); " + loaded
        )
        env = {**os.environ, "TP_LOST_AFTER_S": "1e12", "PYTHONPATH": REPO, "COLUMNS": "100"}
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp, env=env, capture_output=True, text=True, timeout=120
        )
        assert json.loads(proc.stdout) if fmt == "json" else proc.stdout, proc.stderr  # it answered
        want = "[]" if fmt == "json" else "['rich.console']"
        assert proc.stderr.strip().splitlines()[-1] == want, (cmd, fmt, proc.stderr[-2000:])


@pytest.mark.slow
def test_watch_shows_a_bar_of_levels_and_stops_on_ctrl_c(narrow):
    import signal
    import time

    tmp, url, plan, busy = narrow
    # Started with SIGINT ignored, as CI once started it: a thread of the test process was in
    # system() at the fork, which ignores SIGINT and SIGQUIT meanwhile, and the child kept
    # SIG_IGN (Python then installs no KeyboardInterrupt). The watch takes ^C itself.
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.tp_sweep", "status", "narrow", "--db", url, "--watch", "--interval", "0.2"],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        time.sleep(8)  # imports and a first refresh, on a loaded machine too
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # never left running after a failure (a hung watch once ran on for an hour)
        proc.wait()
    assert proc.returncode == 1, err  # the FAILED run, as without --watch
    assert f"/{len(plan.trained)} levels" in out and "Traceback" not in err, out + err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Two sweeps that nothing will change any more, each in a store of its own: `done` (every
    run COMPLETED) and `failed` (an imp_lrr run FAILED, the rest COMPLETED): {name: (tmp, url)}."""
    out = {}
    for name, open_runs in (("done", {}), ("failed", {"imp_lrr": "FAILED"})):
        tmp = tmp_path_factory.mktemp(name)
        out[name] = tmp, make_sweep(tmp, name, open_runs=open_runs)[0]
    return out


def _to_a_closed_pipe(tmp, *args, columns: int = 80) -> subprocess.CompletedProcess:
    """`tp-sweep ARGS | head` where head is gone before a byte is written: stdout is a real pipe
    whose reader is closed, so every write fails with EPIPE, whatever the output's size."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [*TP, *args],
            cwd=tmp,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": str(columns), "TP_LOST_AFTER_S": "1e12"},
        )
    finally:
        os.close(write)


@pytest.mark.parametrize(
    "sweep, args, code",
    [
        ("done", ["query", "--format", "csv"], 0),
        ("done", ["query", "--format", "json"], 0),
        ("done", ["query", "--levels"], 0),
        ("done", ["status"], 0),
        ("done", ["status", "--format", "json"], 0),
        ("failed", ["status"], 1),
        ("failed", ["status", "--format", "json"], 1),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else str(x),
)
def test_a_reader_that_goes_away_ends_the_command_quietly_with_its_status(finished, sweep, args, code):
    """`query SWEEP --format csv | head -1` once ended in a BrokenPipeError traceback and exit 1,
    and `status | head` in exit 1 (rich's answer to a closed pipe), as if a run had failed. The
    output stops; the status is the command's: 1 only when a run failed."""
    tmp, url = finished[sweep]
    proc = _to_a_closed_pipe(tmp, args[0], sweep, "--db", url, *args[1:])
    assert (proc.returncode, proc.stderr) == (code, ""), proc.stderr


@pytest.mark.parametrize(
    "sweep, args, code",
    [("done", [], 0), ("failed", [], 1), ("failed", ["--format", "json"], 1), ("done", ["RUN"], 0)],
    ids=lambda x: " ".join(x) if isinstance(x, list) else str(x),
)
def test_watch_ends_when_every_run_is_finished_and_writes_lines_to_a_pipe(finished, sweep, args, code):
    """`status --watch` on a finished sweep (or run) once refreshed until ^C, and into a pipe
    wrote nothing at all: rich's in-place view shows only on a terminal. It ends by itself,
    with status's exit status; into a pipe it writes a line, then the last status whole."""
    tmp, url = finished[sweep]
    target = sweep
    if args[:1] == ["RUN"]:
        runs = json.loads(_cli(tmp, "status", sweep, "--db", url, "--format", "json").stdout)["runs"]
        target, args = runs[0]["run_id"], []
    proc = subprocess.run(
        [*TP, "status", target, "--db", url, "--watch", "--interval", "0.2", *args],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80", "TP_LOST_AFTER_S": "1e12"},
    )
    assert (proc.returncode, proc.stderr) == (code, ""), proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    if args:  # --format json: a document per refresh, the last one finished
        assert json.loads(lines[-1])["sweep"] == sweep and "RUNNING" not in json.loads(lines[-1])["counts"]
        return
    assert re.fullmatch(r"\d\d:\d\d:\d\d (run \w{8}|" + sweep + r"): \d+/\d+ levels; .*", lines[0]), lines[0]
    if target == sweep:
        assert lines[1].startswith(f"sweep {sweep}: 24 runs") and "by sparsity" in proc.stdout, proc.stdout
    else:
        assert lines[1].startswith(f"run {target}"), proc.stdout


def test_only_a_sweep_that_nothing_moves_is_settled(narrow, finished):
    from db.reader import StoreReader
    from orchestrator.operations.status import sweep_status

    for (_, url), sweep, settled in ((narrow[:2], "narrow", False), (finished["done"], "done", True)):
        reader = StoreReader(url)
        try:
            progress = sweep_status(reader, sweep).progress
        finally:
            reader.close()
        assert progress.settled is settled and f"{sweep}: {progress.done}/{progress.total} levels" in progress.line


def test_a_second_sweep_in_the_store_counts_only_its_own_levels(narrow):
    from db.queries import level_progress
    from db.store import Store
    from db.summaries import sweep_status
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.spec import parse_spec

    tmp, url, plan, busy = narrow
    spec = {
        "name": "subset",
        "output_dir": str(tmp / "runs"),
        "trainer": {"config": "digits_mlp", "overrides": {"schedule.epochs": 3}},
        "grid": {"method": ["imp", "synflow"], "sparsity": [0.5], "seed": [0], "optimizer.lr": [0.1]},
    }
    sub = plan_sweep(parse_spec(spec))
    store = Store(url)
    try:
        store.record_plan(sub, spec, sub.levels_dir)  # two of `narrow`'s runs, and their levels
        runs, totals = sweep_status(store, "subset")
        assert len(runs) == 2 and (totals.levels_done, totals.levels_total) == level_progress(store, "subset")
        assert totals.levels_total < len(plan.trained)
        everything = sweep_status(store, "narrow")[1]
        assert everything.levels_total == len(plan.trained)
        assert 0 < totals.device_hours_used < everything.device_hours_used
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_sweep_totals_agree_by_every_path_with_levels_shared_between_sweeps(tmp_path, request, backend):
    """A sweep's totals (distinct levels, finished, seconds, epochs) are read one of three ways
    by the share of the store's runs it holds (all, at most half, more than half); each must
    give what counting its runs' levels one by one gives, with a level shared between sweeps."""
    from contextlib import nullcontext

    from tests.sweeputil import pg_schema

    where = (
        nullcontext(None)
        if backend == "sqlite"
        else pg_schema(request.getfixturevalue("postgres_url"), f"tp_totals_{os.getpid()}")
    )
    with where as url:
        _totals_by_every_path(tmp_path, url)


def _totals_by_every_path(tmp_path, url: str | None) -> None:
    from db import summaries
    from db.reader import StoreReader
    from db.store import Store
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.spec import parse_spec

    url, plan, _ = make_sweep(tmp_path, url=url)
    store = Store(url)
    lone = {}
    try:
        with store.read_connection() as conn:
            sid = conn.scalar(sa.text("SELECT id FROM sweeps WHERE name = 'narrow'"))
            lone["narrow"] = summaries._sweep_level_sums(conn, sid)  # the store's one sweep
        for name, grid in (
            ("subset", {"method": ["imp", "synflow"], "sparsity": [0.5], "seed": [0], "optimizer.lr": [0.1]}),
            ("other", {"method": ["imp_wr", "imp"], "sparsity": [0.5], "seed": [7, 0], "optimizer.lr": [0.1]}),
        ):
            spec = {
                "name": name,
                "output_dir": str(tmp_path / "runs"),
                "trainer": {"config": "digits_mlp", "overrides": {"schedule.epochs": 3}},
                "grid": grid,
            }
            sub = plan_sweep(parse_spec(spec))
            store.record_plan(sub, spec, sub.levels_dir)
    finally:
        store.close()
    reader = StoreReader(url)
    with reader.read_connection() as conn:
        c = lambda sql, **kw: conn.execute(sa.text(sql), kw).all()  # noqa: E731
        in_store = len(c("SELECT run_id FROM runs"))
        levels = {
            lid: (fin, secs, ep)
            for lid, fin, secs, ep in c("SELECT level_id, finished_at, seconds, epochs FROM levels")
        }
        seen = {}
        for sid, name in c("SELECT id, name FROM sweeps"):
            runs = {r for (r,) in c("SELECT run_id FROM sweep_runs WHERE sweep_id = :s", s=sid)}
            ids = {lid for r, lid in c("SELECT run_id, level_id FROM run_levels") if r in runs} & set(levels)
            done = [levels[i] for i in ids if levels[i][0] is not None]
            expect = (len(ids), len(done), sum(d[1] for d in done), sum(d[2] for d in done))
            got = summaries._sweep_level_sums(conn, sid)
            assert got[:2] == expect[:2] and got[3] == expect[3], (name, got, expect)
            assert got[2] == pytest.approx(expect[2], rel=1e-9), name
            seen[name] = (len(runs), ids)
    assert seen["narrow"][0] < in_store < 2 * seen["narrow"][0]  # narrow: the subtracting path
    assert 2 * seen["other"][0] <= in_store  # other: the direct path
    assert seen["other"][1] & seen["narrow"][1] and seen["other"][1] - seen["narrow"][1]  # shared, and its own
    assert lone["narrow"][:2] == (len(seen["narrow"][1]), sum(levels[i][0] is not None for i in seen["narrow"][1]))
    reader.close()


def test_a_run_id_prefix_that_matches_several_runs_lists_them(narrow):
    tmp, url, plan, busy = narrow
    ids = sorted(r.run_id for r in plan.runs)
    prefix = next(a[:1] for a, b in zip(ids, ids[1:]) if a[:1] == b[:1])
    matching = [i for i in ids if i.startswith(prefix)]
    from orchestrator.operations.cancel import cancel
    from orchestrator.operations.status import TargetError

    with pytest.raises(TargetError) as status_error:
        _status(url, prefix)
    with pytest.raises(TargetError) as cancel_error:
        cancel(url, prefix)
    for said in (status_error.value, cancel_error.value):
        assert said.exit_code == 2 and f"matches {len(matching)} runs" in str(said)
        assert all(i in str(said) for i in matching[:10]), str(said)
    proc = _cli(tmp, "cancel", prefix, "--db", url)  # the command: exit 2, the list on stderr
    assert proc.returncode == 2 and str(cancel_error.value) in proc.stderr, proc.stdout + proc.stderr
    assert _status(url, ids[0][:10])["run_id"] == ids[0]


def test_cancel_stops_a_run_s_open_jobs_and_leaves_finished_ones(tmp_path):
    """cancel RUN records its unfinished jobs CANCELLED (the debug executor has no scheduler to
    tell); a second cancel finds nothing left to cancel; status then says CANCELLED."""
    from orchestrator.operations.cancel import cancel

    url, plan, busy = make_sweep(tmp_path, "cancelled")
    failed = next(r for r in plan.runs if busy.get(r.run_id) == "FAILED")
    running = next(r for r in plan.runs if busy.get(r.run_id) == "RUNNING")
    assert cancel(url, failed.run_id).jobs == []  # failed: finished, left as it is
    done = cancel(url, running.run_id).jobs
    assert len(done) == 1 and cancel(url, running.run_id).jobs == []
    assert {j["job"]: j["state"] for j in _status(url, running.run_id)["jobs"]}[done[0]] == "CANCELLED"
    states = {r["run_id"]: r["state"] for r in _status(url, "cancelled")["runs"]}
    assert states[running.run_id] == "CANCELLED" and states[failed.run_id] == "FAILED"


def test_status_lists_every_sweep_of_a_store_with_its_runs_by_state(finished):
    from orchestrator.operations.status import list_sweeps
    from orchestrator.operations.stores import open_reader

    url = finished["failed"][1]
    reader = open_reader(url)
    try:
        listing = list_sweeps(reader)
    finally:
        reader.close()
    (only,) = listing.sweeps
    status = _status(url, "failed")
    assert only.sweep == "failed" and only.counts == status["counts"] and "FAILED" in only.counts
    assert sum(only.counts.values()) == len(status["runs"]) and listing.display_url.endswith("store.db")


def test_query_filters_groups_and_warns_before_it_filters(narrow):
    from orchestrator.operations.query import NothingToShow, best_trials, plot_rows
    from orchestrator.operations.stores import open_reader

    tmp, url, plan, busy = narrow
    every = _query(url, "narrow")
    assert {r["method"] for r in every} == set(METHODS) and len({r["run_id"] for r in every}) == len(plan.runs)
    imp = _query(url, "narrow", where="method == 'imp' and sparsity >= 0.8")
    assert imp and {r["method"] for r in imp} == {"imp"} and all(r["sparsity"] >= 0.8 for r in imp)
    grouped = _query(url, "narrow", group_by=("method",))
    assert sorted(g["method"] for g in grouped) == sorted(METHODS)
    assert grouped == _query(url, "narrow", group_by=("method",), where="True")  # the fast path agrees
    reader = open_reader(url, target="narrow")
    try:
        from orchestrator.operations.query import QueryRequest, query

        heard: list[str] = []
        query(reader, QueryRequest("narrow", where="test_acc > 90"), on_warning=heard.append)
        assert heard and "fraction" in heard[0], heard
        with pytest.raises(NothingToShow, match="has no search"):
            best_trials(reader, "narrow")
        assert plot_rows(reader, "narrow", "test_acc")
        with pytest.raises(NothingToShow, match="no finished test_top5"):
            plot_rows(reader, "narrow", "test_top5")
    finally:
        reader.close()


def test_a_hydra_store_that_will_not_open_is_bad_input(tmp_path):
    from orchestrator.operations.hydra_run import check_store
    from orchestrator.operations.stores import StoreNotOpened

    with pytest.raises(StoreNotOpened) as said:
        check_store(f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'store.db'}")
    assert said.value.exit_code == 2
    check_store(f"sqlite:///{tmp_path / 'store.db'}")  # created and migrated
    assert (tmp_path / "store.db").stat().st_size > 0


# ---- a big sweep: summarised ----------------------------------------------------------------
@pytest.fixture(scope="module")
def big(tmp_path_factory):
    sys.path.insert(0, str(REPO / "bench"))
    import synth_store

    tmp = tmp_path_factory.mktemp("big")
    url = f"sqlite:///{tmp / 'big.db'}"
    synth_store.write(url, synth_store.generate(200, str(tmp / "out")))
    return tmp, url


def test_a_big_sweep_is_summarised_and_all_lists_every_run(big):
    tmp, url = big
    out = _cli(tmp, "status", "bench", "--db", url).stdout
    assert "runs by method and state" in out and "runs that need a look" in out
    assert "GPU-hours" in out and "4 GPUs a job" in out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    st = json.loads(_cli(tmp, "status", "bench", "--db", url, "--format", "json").stdout)
    look = [r for r in st["runs"] if r["state"] in ("FAILED", "LOST", "PREEMPTED", "TIMEOUT", "RUNNING")]
    assert all(r["run_id"][:8] in out for r in look) and len(look) < 40
    done = [r for r in st["runs"] if r["state"] == "COMPLETED"]
    assert not any(r["run_id"][:8] in out for r in done)  # only counted
    every = _cli(tmp, "status", "bench", "--db", url, "--all", columns=200).stdout
    assert all(r["run_id"][:8] in every for r in st["runs"])


def test_status_asks_the_scheduler_once_per_refresh(big, tmp_path):
    tmp, url = big
    stub = tmp_path / "bin"
    stub.mkdir()
    calls = tmp_path / "calls"
    for tool in ("squeue", "scontrol", "sacct"):
        (stub / tool).write_text(f'#!/bin/sh\necho "$0 $*" >> {calls}\n')
        (stub / tool).chmod(0o755)
    env = {"PATH": f"{stub}:{os.environ['PATH']}", "TP_LOST_AFTER_S": "1e12"}
    tp("status", "bench", "--db", url, "--format", "json", cwd=tmp, env=env)
    lines = calls.read_text().splitlines()
    assert len(lines) == 1 and "squeue" in lines[0] and "--states=all" in lines[0], lines


def test_slurm_poll_is_one_call_for_any_number_of_jobs(monkeypatch):
    from slurm import executors

    seen = []

    def fake_run(cmd, **kw):
        seen.append(cmd)
        out = "".join(f"{100 + i}|{'COMPLETED' if i % 2 else 'RUNNING'}|None\n" for i in range(5000))
        return subprocess.CompletedProcess(cmd, 0, out, "")

    monkeypatch.setattr(executors.subprocess, "run", fake_run)
    ex = executors.SlurmExecutor(None, REPO)
    got = ex.poll([str(100 + i) for i in range(5000)])
    assert len(seen) == 1 and "-u" in seen[0]  # past MAX_IDS_PER_CALL: the user's jobs, in one call
    assert got["101"] == "COMPLETED" and got["100"] == "RUNNING"
    seen.clear()
    assert ex.poll(["7", "8"]) == {"7": executors.GONE, "8": executors.GONE} and len(seen) == 1


@pytest.mark.slow
def test_bench_store_small_runs(tmp_path):
    """bench/bench_store.py --small builds a store and times every command (the timings depend
    on the machine, so only that it ran and printed its table is checked): about 10 s idle."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_store.py"), "--small", "--no-pg", "--repeats", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    for what in (
        "status SWEEP --format json",
        "query SWEEP --group-by method,sparsity",
        "status SWEEP (table)",
        "status SWEEP beside plan10k --format json",
        "scheduler calls per status refresh",
        "plan + record 10,000 grid points",
        "tp-sweep data write --help",
        "error exit: status of an unknown sweep",
        "error exit: launch of a malformed spec",
        "launch --dry-run of 200 grid points",
    ):
        assert what in proc.stdout, proc.stdout
    assert re.search(r"scheduler calls per status refresh\s+1\s+1\s+yes", proc.stdout), proc.stdout


def test_trunk_landing_results_show_and_plot_their_achieved_sparsity(tmp_path):
    """prune.landing: trunk serves target 0.5 with trunk level 4 (sparsity 0.59): query says so
    (off_target, achieved_sparsity), the accuracy table marks the cell with the level's sparsity,
    and the plot puts the point at 0.59, hollow, not at 0.5."""
    from cli.render.plot import plot_accuracy
    from db.store import Store
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.spec import parse_spec

    spec = {
        "name": "trunky",
        "output_dir": str(tmp_path / "runs"),
        "trainer": {"config": "digits_mlp", "overrides": {"prune.landing": "trunk"}},
        "grid": {"method": ["dense", "imp", "snip"], "sparsity": [0.5, 0.8], "seed": [0, 1]},
    }
    plan = plan_sweep(parse_spec(spec))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    store.record_plan(plan, spec, plan.levels_dir)
    store.import_results(
        {
            lid: {
                "achieved_sparsity": round(1 - lv.density, 6),
                "test_acc": _acc(lid),
                "best_test_acc": _acc(lid),
                "epochs": 1,
                "seconds": 1.0,
                "network_sparsity": round((1 - lv.density) * 0.9, 6),
                "flops_dense": 1000.0,
                "flops": 1000.0 * lv.density,
                "resolution": 8,
                "history": [],
            }
            for lid, lv in plan.levels.items()
        }
    )
    store.close()
    rows = _query(url, "trunky")
    imp = {r["sparsity"]: r for r in rows if r["method"] == "imp" and r["seed"] == 0}
    assert imp[0.5]["off_target"] and imp[0.5]["achieved_sparsity"] == pytest.approx(1 - 0.8**4, abs=1e-6)
    assert imp[0.8]["off_target"] and imp[0.8]["achieved_sparsity"] == pytest.approx(1 - 0.8**8, abs=1e-6)
    assert not any(r["off_target"] for r in rows if r["method"] != "imp")
    assert imp[0.5]["speedup"] == pytest.approx(1 / 0.8**4) and imp[0.5]["resolution"] == 8
    out = _cli(tmp_path, "status", "trunky", "--db", url, columns=160).stdout
    assert "@0.590" in out and "@0.832" in out and "served by a trunk level" in out
    drawn = plot_accuracy(rows, "test_acc", str(tmp_path / "p.png"))
    assert [(round(x, 4), hollow) for x, _, hollow in drawn["imp"]] == [(0.5904, True), (0.8322, True)]
    assert [(round(x, 4), hollow) for x, _, hollow in drawn["snip"]] == [(0.5, False), (0.8, False)]
    drawn = plot_accuracy(rows, "test_acc", str(tmp_path / "f.png"), x="flops")
    assert [round(x, 1) for x, _, _ in drawn["imp"]] == [409.6, 167.8]
    assert (tmp_path / "p.png").stat().st_size > 0 and (tmp_path / "f.png").stat().st_size > 0
    old = imp[0.8]["level_id"]  # as if finished before whole-network sparsity was recorded
    with Store(url).engine.begin() as c:
        c.execute(sa.text("UPDATE levels SET network_sparsity = NULL WHERE level_id = :l"), {"l": old})
    out = tmp_path / "n.png"
    proc = _cli(tmp_path, "plot", "trunky", "--db", url, "--x", "network", "--out", str(out))
    assert proc.returncode == 0 and out.stat().st_size > 0, proc.stderr
    assert "warning: 1 grid point(s) left out of the plot: their level has no network_sparsity" in proc.stderr
    assert f"imp 0.8 seed 0 level {old}" in proc.stderr


def test_plot_leaves_out_and_names_points_without_the_axis_measure(tmp_path):
    """A level finished before whole-network sparsity was recorded has no place on that axis:
    its points are left out and named, never placed at their prunable-weight sparsity among the
    others. The dense reference line needs no place on the axis."""
    from cli.render.plot import plot_accuracy, unmeasured

    def row(method, sparsity, seed, network, acc=0.9):
        return {
            "method": method,
            "sparsity": sparsity,
            "seed": seed,
            "level_id": f"{method}{sparsity}{seed}",
            "achieved_sparsity": sparsity,
            "network_sparsity": network,
            "test_acc": acc,
        }

    rows = [
        row("dense", 0.0, 0, None, 0.95),
        row("imp", 0.5, 0, 0.45, 0.9),
        row("imp", 0.5, 1, None, 0.7),  # finished before network_sparsity existed
        row("imp", 0.8, 0, None, 0.8),
    ]
    assert [(r["sparsity"], r["seed"]) for r in unmeasured(rows, "test_acc", "network")] == [(0.5, 1), (0.8, 0)]
    assert unmeasured(rows, "test_acc", "sparsity") == []
    drawn = plot_accuracy(rows, "test_acc", str(tmp_path / "n.png"), x="network")
    assert drawn == {"imp": [(0.45, pytest.approx(90.0), False)]}


def test_a_shared_level_shows_its_role_in_each_run(tmp_path):
    """At prune.rate 0.2, target 0.2 is trunk level 1 (density 0.8 from level 0); at rate 0.5 the
    same computation is a branch from level 0: one level id, a trunk level to one run and a branch
    to the other, as query (grid points and --levels), status of a run and a store rebuilt by
    `db import` all say. A control shows the level of IMP it controls, not one deeper."""
    from db.queries import grid_results
    from db.store import Store
    from orchestrator.control.controller import write_plan_files
    from orchestrator.operations.store_admin import import_output
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.spec import parse_spec

    spec = roles_spec(tmp_path, "imp_layerwise_random")
    plan = plan_sweep(parse_spec(spec))
    imp = {r.axes["prune.rate"]: r for r in plan.runs if r.method == "imp"}
    shared = imp[0.2].points[0].level_id
    assert imp[0.5].points[0].level_id == shared
    assert (imp[0.2].kinds[shared], imp[0.5].kinds[shared]) == ("trunk", "branch")
    write_plan_files(plan, spec)
    url, rebuilt = f"sqlite:///{tmp_path / 'store.db'}", f"sqlite:///{tmp_path / 'rebuilt.db'}"
    store = Store(url)
    store.record_plan(plan, spec, plan.levels_dir)
    store.close()
    imported = import_output(rebuilt, str(tmp_path / "runs"))
    assert (imported.counts["sweeps"], imported.bad, imported.refused) == (1, {}, {})
    for db in (url, rebuilt):
        store = Store(db)
        points = {
            (r["method"], r["prune.rate"]): (r["level_kind"], r["level"]) for r in grid_results(store, "roles")
        }
        assert points == {
            ("imp", 0.2): ("trunk", 1),
            ("imp", 0.5): ("branch", 1),
            ("imp_layerwise_random", 0.2): ("control", 1),  # of IMP's level 1, not level 2
            ("imp_layerwise_random", 0.5): ("control", 1),
        }, db
        levels = grid_results(store, "roles", levels=True)
        roles = {
            (r["method"], r["prune.rate"], r["level_kind"], r["level"]) for r in levels if r["level_id"] == shared
        }
        assert roles == {
            (m, rate, kind, 1)
            for m in ("imp", "imp_layerwise_random")
            for rate, kind in ((0.2, "trunk"), (0.5, "branch"))
        }, db
        assert {r["level"] for r in levels if r["level_kind"] == "control"} == {1}
        store.close()
    run = _status(url, imp[0.5].run_id)
    assert [(lv["kind"], lv["level"]) for lv in run["levels"]] == [("dense", 0), ("branch", 1)]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_status_reads_again_what_reconcile_changed_while_it_read_ahead(tmp_path, monkeypatch, request, backend):
    """On PostgreSQL status reads every run's row on a second connection while reconcile runs.
    Here reconcile (standing in for a trainer's results found on disk) finishes the RUNNING
    run's levels after that read is done: the status must show the run COMPLETED with its last
    accuracy, not what it read before. (SQLite reads after reconcile: the same answer.)"""
    from contextlib import nullcontext

    from tests.sweeputil import pg_schema

    where = (
        nullcontext(None)
        if backend == "sqlite"
        else pg_schema(request.getfixturevalue("postgres_url"), f"tp_ahead_{os.getpid()}")
    )
    with where as url:
        _finish_during_reconcile(tmp_path, monkeypatch, url)


def _finish_during_reconcile(tmp_path, monkeypatch, url: str | None) -> None:
    import time

    import orchestrator.control.reconcile as reconcile
    from db.store import Store
    from orchestrator.operations.status import sweep_status

    url, plan, busy = make_sweep(tmp_path, "ahead", url)
    run = next(r for r in plan.runs if busy.get(r.run_id) == "RUNNING")
    store = Store(url)

    def finish_then_say_so(store, sweep, rows=None):
        time.sleep(0.5)  # the read ahead is over by now: it saw the run RUNNING
        results = {
            lid: {"test_acc": _acc(lid), "best_test_acc": _acc(lid), "epochs": 3, "seconds": 6.0, "history": []}
            for lid in run.levels[1:]
        }
        store.import_results(results)
        store.set_job_state(store.level_states([run.levels[-1]])[run.levels[-1]].job_id, "COMPLETED")
        return None  # it wrote to the store

    monkeypatch.setattr(reconcile, "reconcile_sweep", finish_then_say_so)
    row = next(r for r in sweep_status(store, "ahead").as_json()["runs"] if r["run_id"] == run.run_id)
    assert row["state"] == "COMPLETED" and row["level"] == row["levels_total"]
    assert row["test_acc"] == _acc(run.levels[-1])
    store.close()


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_watch_stops_on_a_ctrl_c_that_lands_in_a_finalizer(terminal):
    """^C during a refresh may arrive while a finalizer runs (garbage the refresh made): Python
    prints a KeyboardInterrupt raised there as "Exception ignored" and drops it. The CI once
    saw `status --watch` run on for a minute after ^C; the watch now stops on a flag."""
    import signal

    from rich.console import Console

    from cli.status import Progress, watch

    class Garbage:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(1000))  # the handler runs here, inside the finalizer

    calls = []

    def view():
        calls.append(1)
        assert len(calls) < 5, "^C was lost: the watch refreshed on"
        if len(calls) == 2:
            Garbage()
        return 3, "a view", Progress(len(calls), 10, False, f"{len(calls)}/10 levels")

    before = signal.getsignal(signal.SIGINT)
    console = Console(file=open(os.devnull, "w"), force_terminal=terminal)
    assert watch(console, view, 0.01) == 3 and len(calls) == 2
    assert signal.getsignal(signal.SIGINT) is before
