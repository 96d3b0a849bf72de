"""Stores written by an older schema carry forward: 0001 (one trajectory per run) -> head, on
SQLite and PostgreSQL, and the sweeps recorded there still query."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from db import migrate
from db.engine import make_engine
from db.queries import grid_results
from db.store import Store
from db.summaries import run_summaries
from orchestrator.operations.query import QueryRequest, query
from orchestrator.operations.stores import open_reader
from tests.sweeputil import pg_schema, roles_spec

NOW = dt.datetime(2026, 11, 1, 12, 0, 0)


def _old_store(url: str) -> None:
    """A 0001 store holding one finished imp run (levels 0..2 at densities 1, 0.5, 0.25) and a
    dense run that was preempted after level 0 had not finished."""
    eng = make_engine(url)
    migrate.upgrade_to(eng, "0001")
    meta = sa.MetaData()
    meta.reflect(eng)
    t = meta.tables
    with eng.begin() as c:
        c.execute(
            t["sweeps"].insert(),
            [
                {
                    "id": 1,
                    "name": "old",
                    "spec": {"name": "old", "db": "postgresql://u:hunter2@h/d"},
                    "executor": "local",
                    "output_dir": "/x",
                    "created_at": NOW,
                }
            ],
        )
        base = {
            "axes": {},
            "config": {"method": "imp"},
            "run_dir": "/x/r",
            "executor": "local",
            "level": 0,
            "epoch": 0,
            "heartbeat_at": NOW,
            "message": None,
            "created_at": NOW,
            "updated_at": NOW,
        }
        c.execute(
            t["runs"].insert(),
            [
                {
                    **base,
                    "run_id": "aaaa",
                    "method": "imp",
                    "seed": 0,
                    "sparsities": [0.5, 0.75],
                    "densities": [1.0, 0.5, 0.25],
                    "state": "COMPLETED",
                    "job_id": "12_0",
                    "attempts": 2,
                },
                {
                    **base,
                    "run_id": "bbbb",
                    "method": "dense",
                    "seed": 0,
                    "sparsities": [0.0],
                    "densities": [1.0],
                    "state": "PREEMPTED",
                    "job_id": "12_1",
                    "attempts": 1,
                },
            ],
        )
        c.execute(t["sweep_runs"].insert(), [{"sweep_id": 1, "run_id": "aaaa"}, {"sweep_id": 1, "run_id": "bbbb"}])
        c.execute(
            t["grid_points"].insert(),
            [
                {
                    "sweep_id": 1,
                    "run_id": "aaaa",
                    "method": "imp",
                    "sparsity": s,
                    "seed": 0,
                    "axes": {},
                    "axes_key": "{}",
                    "level": lvl,
                }
                for s, lvl in ((0.5, 1), (0.75, 2))
            ]
            + [
                {
                    "sweep_id": 1,
                    "run_id": "bbbb",
                    "method": "dense",
                    "sparsity": 0.0,
                    "seed": 0,
                    "axes": {},
                    "axes_key": "{}",
                    "level": 0,
                }
            ],
        )
        c.execute(
            t["levels"].insert(),
            [
                {
                    "run_id": "aaaa",
                    "level": i,
                    "density": d,
                    "achieved_sparsity": 1 - d,
                    "test_acc": acc,
                    "test_top5": None,
                    "test_loss": 0.5,
                    "best_test_acc": acc,
                    "train_loss": 0.4,
                    "train_acc": 0.9,
                    "epochs": 2,
                    "seconds": 1.5,
                    "finished_at": NOW,
                }
                for i, (d, acc) in enumerate(((1.0, 0.91), (0.5, 0.92), (0.25, 0.9)))
            ],
        )
        c.execute(
            t["epochs"].insert(),
            [
                {
                    "run_id": "aaaa",
                    "level": i,
                    "epoch": e,
                    "train_loss": 0.4,
                    "train_acc": 0.9,
                    "test_loss": None,
                    "test_acc": None,
                    "test_top5": None,
                    "lr": 0.1,
                    "steps": 10,
                    "seconds": 0.7,
                    "images_per_s": 100.0,
                    "at": NOW,
                }
                for i in range(3)
                for e in range(2)
            ],
        )
        c.execute(
            t["events"].insert(),
            [
                {
                    "run_id": "aaaa",
                    "at": NOW,
                    "state_from": None,
                    "state_to": "PLANNED",
                    "job_id": None,
                    "message": "planned",
                },
                {
                    "run_id": "bbbb",
                    "at": NOW,
                    "state_from": "RUNNING",
                    "state_to": "PREEMPTED",
                    "job_id": "12_1",
                    "message": "stopped",
                },
            ],
        )
        c.execute(
            t["attempts"].insert(),
            [
                {
                    "run_id": "aaaa",
                    "attempt": 1,
                    "job_id": "12_0",
                    "host": "h",
                    "world_size": 2,
                    "resumed_from": None,
                    "started_at": NOW,
                    "ended_at": NOW,
                    "outcome": "COMPLETED",
                }
            ],
        )
        # Stores of that time kept our revision in Alembic's default table.
        c.execute(sa.text("ALTER TABLE tp_alembic_version RENAME TO alembic_version"))
    eng.dispose()


def _check_carried_forward(url: str) -> None:
    store = Store(url)  # first use upgrades to head
    with store.engine.connect() as c:
        assert migrate.current_revision(c) == migrate.head_revision()
        assert "alembic_version" not in sa.inspect(c).get_table_names()  # left free for Optuna
        assert c.execute(sa.text("select count(*) from epochs")).scalar() == 6
        assert c.execute(sa.text("select count(*) from jobs")).scalar() == 2
        assert c.execute(sa.text("select sched_id from attempts")).scalar() == "12_0"
    assert store.get_sweep("old").spec["db"] == "postgresql://u:***@h/d"  # no password kept
    rows = {(r["method"], r["sparsity"]): r for r in grid_results(store, "old")}
    assert rows[("imp", 0.5)]["test_acc"] == 0.92 and rows[("imp", 0.75)]["test_acc"] == 0.9
    assert rows[("imp", 0.75)]["level"] == 2 and rows[("imp", 0.75)]["level_kind"] == "legacy"
    # 0003's columns: levels finished before it have no cost or provenance, and say so with null
    unmeasured = ("network_sparsity", "flops", "speedup", "resolution", "code")
    assert all(rows[k][c] is None for k in rows for c in unmeasured)
    assert rows[("dense", 0.0)]["state"] == "PREEMPTED" and rows[("dense", 0.0)]["test_acc"] is None
    runs = {r.method: r for r in run_summaries(store, "old")}
    assert runs["imp"].state == "COMPLETED" and runs["imp"].levels_done == 3 and runs["imp"].attempts == 2
    assert runs["dense"].state == "PREEMPTED"
    assert len(grid_results(store, "old", levels=True)) == 4
    store.close()


def test_sqlite_store_of_0001_carries_forward(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _old_store(url)
    _check_carried_forward(url)
    reader = open_reader(url, target="old")
    try:
        assert {r["method"] for r in query(reader, QueryRequest("old")).rows} == {"imp", "dense"}
    finally:
        reader.close()


def test_postgres_store_of_0001_carries_forward(postgres_url):
    with pg_schema(postgres_url, "tp_migration_test") as url:
        _old_store(url)
        _check_carried_forward(url)


@pytest.mark.slow
@pytest.mark.parametrize("n", [8])
def test_many_processes_can_open_a_fresh_store_at_once(tmp_path, n):
    """Migrations run under a lock: every process finds the schema, none fails creating it."""
    import subprocess
    import sys

    from tests.sweeputil import REPO

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = "import sys; from db.store import Store; Store(sys.argv[1]).close()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url], cwd=REPO, stderr=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    errs = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in errs), [e for rc, e in errs if rc]


def test_optuna_studies_share_the_store(tmp_path):
    """Optuna's RDB storage (tp-sweep's search) lives in the store's database: both histories
    of migrations coexist, whichever comes first."""
    import optuna

    url = f"sqlite:///{tmp_path / 'both.db'}"
    Store(url).close()
    study = optuna.create_study(study_name="s", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    Store(url).close()
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 2
    url2 = f"sqlite:///{tmp_path / 'optuna_first.db'}"
    optuna.create_study(study_name="s", storage=url2)
    store = Store(url2)
    with store.engine.connect() as c:
        assert migrate.current_revision(c) == migrate.head_revision()
    store.close()
    assert optuna.load_study(study_name="s", storage=url2).trials == []


def test_a_store_at_head_opens_without_alembic(tmp_path):
    """The migration check costs nothing at head: one SELECT of our version table, the head read
    from the migration files, and Alembic (0.2 s of imports) never loaded."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'head.db'}"
    Store(url).close()  # created and migrated to head here
    code = (
        "import sys; from db.store import Store; Store(sys.argv[1]).close(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_runs_keep_their_level_count_and_last_level_as_plans_grow(tmp_path):
    """runs.n_levels and runs.last_level_id (0006) are what status shows a run by: written with
    each plan, they follow a run's levels when a later plan gives it more (a higher sparsity)."""
    from db.schema import Run, RunLevel
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.spec import parse_spec

    store = Store(f"sqlite:///{tmp_path / 'grow.db'}")

    def record(sparsities: list[float]) -> None:
        spec = {
            "name": "grow",
            "output_dir": str(tmp_path / "runs"),
            "trainer": {"config": "digits_mlp", "overrides": {"schedule.epochs": 1}},
            "grid": {"method": ["imp", "random"], "sparsity": sparsities, "seed": [0]},
        }
        plan = plan_sweep(parse_spec(spec))
        store.record_plan(plan, spec, plan.levels_dir)

    def kept_and_actual() -> tuple[dict, dict]:
        with store.reading() as s:
            kept = {r.run_id: (r.n_levels, r.last_level_id) for r in s.scalars(sa.select(Run))}
            actual: dict[str, tuple[int, str]] = {}
            in_order = sa.select(RunLevel.run_id, RunLevel.level_id).order_by(RunLevel.position, RunLevel.level_id)
            for run_id, lid in s.execute(in_order):
                actual[run_id] = (actual.get(run_id, (0, ""))[0] + 1, lid)
        return kept, actual

    record([0.5])
    kept, actual = kept_and_actual()
    assert kept == actual and all(n >= 1 for n, _ in kept.values())
    before = dict(kept)
    record([0.5, 0.9])  # the same runs, with more levels
    kept, actual = kept_and_actual()
    assert kept == actual and all(kept[r][0] > before[r][0] for r in before)
    runs = {r.run_id: r for r in run_summaries(store, "grow")}
    assert all(runs[r].levels_total == kept[r][0] for r in kept)
    store.close()


def test_0008_gives_each_run_its_levels_roles(tmp_path):
    """A store of 0007 kept one kind per level, that of the run that planned it first, and a
    control's grid points one level below IMP's. Upgraded, each run shows its own role for a
    shared level (trunk at prune.rate 0.2, branch at 0.5) and a control the level it controls."""
    from alembic import command

    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.spec import parse_spec

    spec = roles_spec(tmp_path, "imp_reinit")
    plan = plan_sweep(parse_spec(spec))
    url = f"sqlite:///{tmp_path / 'roles.db'}"
    store = Store(url)
    store.record_plan(plan, spec, plan.levels_dir)
    want = {(r["method"], r["prune.rate"]): (r["level_kind"], r["level"]) for r in grid_results(store, "roles")}
    assert want[("imp", 0.5)] == ("branch", 1) and want[("imp_reinit", 0.5)] == ("control", 1)
    store.close()
    eng = make_engine(url)
    with eng.begin() as conn:  # back to 0007, as that store would have been written
        cfg = migrate._config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007")
        conn.execute(sa.text("UPDATE levels SET kind = 'trunk' WHERE kind = 'branch'"))
        assert conn.execute(sa.text("SELECT max(level) FROM grid_points")).scalar() == 2  # the controls'
    eng.dispose()
    store = Store(url)  # upgraded on first use
    got = {(r["method"], r["prune.rate"]): (r["level_kind"], r["level"]) for r in grid_results(store, "roles")}
    assert got == want
    store.close()
