"""The whole path on the local executor: launch -> torchrun trainer -> store -> status/query/plot."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.inprocess import status_json
from tests.sweeputil import tiny_spec, tp, write_spec


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    spec = tiny_spec("local_e2e", executor__procs_per_node=2, executor__cpus_per_task=2)
    path = write_spec(tmp, spec)
    proc = tp("launch", str(path), cwd=tmp, check=True)
    return tmp, path, proc


@pytest.mark.slow
def test_launch_completes_every_run(finished_sweep):
    tmp, _, proc = finished_sweep
    st = status_json("local_e2e", tmp)
    assert st["counts"] == {"COMPLETED": 2}, st
    for run in st["runs"]:
        assert set(run) >= {
            "run_id",
            "state",
            "method",
            "seed",
            "sparsities",
            "level",
            "levels_total",
            "epoch",
            "job_id",
            "attempts",
        }
        assert run["level"] == run["levels_total"] and run["attempts"] == 1
        assert run["job_id"]
    imp = next(r for r in st["runs"] if r["method"] == "imp")
    assert imp["sparsities"] == [0.5, 0.75] and imp["levels_total"] == 3
    assert "test_acc (%) by sparsity" in proc.stdout  # the accuracy table of the README


def test_query_json_one_row_per_grid_point(finished_sweep):
    tmp, _, _ = finished_sweep
    rows = json.loads(tp("query", "local_e2e", "--format", "json", cwd=tmp, check=True).stdout)
    assert sorted((r["method"], r["sparsity"]) for r in rows) == [("dense", 0.0), ("imp", 0.5), ("imp", 0.75)]
    for r in rows:
        assert set(r) >= {
            "sweep",
            "method",
            "sparsity",
            "seed",
            "run_id",
            "level",
            "level_id",
            "level_kind",
            "achieved_sparsity",
            "test_acc",
            "best_test_acc",
            "epochs",
            "state",
        }
        assert abs(r["achieved_sparsity"] - r["sparsity"]) < 1e-3
        assert 0.3 < r["test_acc"] <= 1.0  # one epoch on digits is far above chance (0.1)
    levels = json.loads(tp("query", "local_e2e", "--levels", "--format", "json", cwd=tmp).stdout)
    assert len(levels) == 1 + 3
    grouped = json.loads(
        tp(
            "query", "local_e2e", "--group-by", "method", "--where", "sparsity > 0", "--format", "json", cwd=tmp
        ).stdout
    )
    assert [g["method"] for g in grouped] == ["imp"] and grouped[0]["runs"] == 2
    bad = tp("query", "local_e2e", "--where", "__import__('os')", cwd=tmp)
    assert bad.returncode == 2 and "not allowed" in bad.stderr


def test_relaunch_submits_nothing(finished_sweep):
    tmp, path, _ = finished_sweep
    proc = tp("launch", str(path), cwd=tmp, check=True)
    assert "nothing to submit" in proc.stdout
    st = status_json("local_e2e", tmp)
    assert all(r["attempts"] == 1 for r in st["runs"])


def test_events_record_every_transition(finished_sweep):
    tmp, _, _ = finished_sweep
    eng = sa.create_engine(f"sqlite:///{tmp / 'tp-results.db'}")
    with eng.connect() as c:
        rows = c.execute(sa.text("select job_id, state_to from events order by id")).all()
    per_run: dict[str, list[str]] = {}
    for run_id, state in rows:
        per_run.setdefault(run_id, []).append(state)
    assert all(s == ["PLANNED", "PENDING", "RUNNING", "COMPLETED"] for s in per_run.values()), per_run


def test_plot_writes_png(finished_sweep):
    tmp, _, _ = finished_sweep
    out = tmp / "acc.png"
    tp("plot", "local_e2e", "--out", str(out), cwd=tmp, check=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_run_detail_and_unknown_target(finished_sweep):
    tmp, _, _ = finished_sweep
    st = status_json("local_e2e", tmp)
    rid = st["runs"][0]["run_id"]
    detail = json.loads(tp("status", rid[:8], "--format", "json", cwd=tmp, check=True).stdout)
    assert detail["run_id"] == rid and detail["levels"]
    proc = tp("status", "no_such_sweep", cwd=tmp)
    assert proc.returncode == 2 and "no sweep or run" in proc.stderr


def test_postgres_store(tmp_path, postgres_url):
    """The same small sweep recorded through a postgresql:// URL."""
    eng = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with eng.begin() as c:  # a clean schema for this test
        c.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    path = write_spec(tmp_path, tiny_spec("pg_e2e"))
    proc = tp("launch", str(path), "--db", postgres_url, cwd=tmp_path, check=True)
    assert "tp:***@" in proc.stdout and ":tp@" not in proc.stdout  # password never printed
    st = status_json("pg_e2e", tmp_path, db=postgres_url)
    assert st["counts"] == {"COMPLETED": 2}
    with eng.connect() as c:  # level 0 is shared by dense and imp: 3 levels, trained once each
        assert c.execute(sa.text("select count(*) from levels where finished_at is not null")).scalar() == 3
        assert c.execute(sa.text("select count(*) from epochs")).scalar() == 3
    assert not (tmp_path / "tp-results.db").exists()


def test_unreachable_database_is_bad_input(tmp_path):
    path = write_spec(tmp_path, tiny_spec("nodb"))
    url = "postgresql://tp:s3cret@127.0.0.1:1/nope"
    proc = tp("launch", str(path), "--db", url, cwd=tmp_path)
    assert proc.returncode == 2
    assert "cannot reach the results store" in proc.stderr and "s3cret" not in proc.stderr
    assert not (tmp_path / "tp-runs").exists() or not any((tmp_path / "tp-runs").iterdir())
