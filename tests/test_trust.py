"""Trust under load, on the real SQLite and PostgreSQL: concurrent first use, concurrent writers
and launches, and a store outage mid-run. (Attacks are in test_bad_input.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import sqlalchemy as sa

from tests.conftest import require_service
from tests.inprocess import status_json
from tests.sweeputil import REPO, TP, admin_sql, pg_schema, slow_spec, tiny_spec, wait_for, write_spec


def _many(n: int, code: str, *args: str) -> list[tuple[int, str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(n)
    ]
    return [(p.wait(timeout=300), p.stdout.read()) for p in procs]


FIRST_USE = "import sys; from db.store import Store; Store(sys.argv[1]).close()"
WRITES = """
import sys
from db.recorder import JobRecorder
rec = JobRecorder(sys.argv[1], "J")
for i in range(500):
    rec.log_epoch("L%d" % (i % 5), i % 7, {"train_loss": float(i), "train_acc": 0.5, "lr": 0.1,
                  "steps": i, "seconds": 1.0, "images_per_s": 2.0})
ok = rec.flush(240)
rec.close()
print("failures", rec.failures, "drained", ok)
sys.exit(0 if ok and rec.failures == 0 else 1)
"""


def _check_concurrency(url: str) -> None:
    results = _many(16, FIRST_USE, url)
    assert all(rc == 0 for rc, _ in results), [out for rc, out in results if rc]
    results = _many(16, WRITES, url)
    assert all(rc == 0 for rc, _ in results), [out for rc, out in results if rc]
    eng = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with eng.connect() as c:
        rows = c.execute(sa.text("select level_id, epoch, count(*) from epochs group by level_id, epoch")).all()
    eng.dispose()
    # 500 writes cycle over 5 levels x 7 epochs: every pair written, each stored exactly once.
    assert len(rows) == 35 and all(n == 1 for _, _, n in rows)


@pytest.mark.slow
def test_concurrent_first_use_and_same_row_writes_on_sqlite(tmp_path):
    _check_concurrency(f"sqlite:///{tmp_path / 'fresh.db'}")


def test_concurrent_first_use_and_same_row_writes_on_postgres(postgres_url):
    with pg_schema(postgres_url, "tp_concurrency_test") as url:
        _check_concurrency(url)


@pytest.mark.slow
def test_five_concurrent_launches_of_one_spec_end_cleanly(tmp_path):
    path = write_spec(tmp_path, tiny_spec("race"))
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [*TP, "launch", str(path)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(5)
    ]
    outs = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    for rc, out, err in outs:
        assert rc in (0, 2), (rc, out, err)
        assert "Traceback" not in err, err
        assert rc == 0 or err.startswith("error:"), err
    st = status_json("race", tmp_path)
    wait_for(lambda: status_json("race", tmp_path)["counts"] == {"COMPLETED": 2}, 120, "every run done")
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'tp-results.db'}")
    with eng.connect() as c:  # every job ran exactly once, every level trained once
        assert c.execute(sa.text("select max(attempts) from jobs")).scalar() == 1
        assert c.execute(sa.text("select count(*) from levels where finished_at is null")).scalar() == 0
    eng.dispose()
    assert st["sweep"] == "race"


@pytest.fixture
def private_pg():
    """A PostgreSQL server of its own, to stop and start without touching the main one."""
    if os.geteuid() != 0 or shutil.which("pg_createcluster") is None:
        require_service("PostgreSQL cluster tools", "needs root and postgresql-common")
    from tests.sweeputil import free_port_block

    port = free_port_block(0, start=25432)
    name = "tpoutage" + uuid.uuid4().hex[:4]
    subprocess.run(["pg_createcluster", "15", name, "-p", str(port)], check=True, capture_output=True)
    subprocess.run(["pg_ctlcluster", "15", name, "start"], check=True, capture_output=True)
    try:
        admin_sql("CREATE ROLE tpo LOGIN PASSWORD 'tpo'", port)
        admin_sql("CREATE DATABASE tpo OWNER tpo", port)
        yield name, f"postgresql://tpo:tpo@127.0.0.1:{port}/tpo"
    finally:
        subprocess.run(["pg_dropcluster", "--stop", "15", name], capture_output=True)


@pytest.mark.slow
def test_a_store_outage_mid_run_loses_nothing(tmp_path, private_pg):
    name, url = private_pg
    spec = slow_spec("outage")
    path = write_spec(tmp_path, spec)
    launcher = subprocess.Popen(
        [*TP, "launch", str(path), "--db", url],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)},
    )

    def progress():
        eng = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with eng.connect() as c:
                return c.execute(sa.text("select count(*) from epochs")).scalar() >= 2
        except sa.exc.SQLAlchemyError:
            return False
        finally:
            eng.dispose()

    wait_for(progress, 240, "two epochs recorded")
    subprocess.run(["pg_ctlcluster", "15", name, "stop", "-m", "fast"], check=True, capture_output=True)
    time.sleep(20)
    subprocess.run(["pg_ctlcluster", "15", name, "start"], check=True, capture_output=True)
    out, _ = launcher.communicate(timeout=600)
    assert launcher.returncode == 0, out
    assert "Traceback" not in out
    st = status_json("outage", tmp_path, db=url)
    assert st["counts"] == {"COMPLETED": 1}, st
    eng = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with eng.connect() as c:  # 3 levels x 6 epochs, every one recorded once
        assert c.execute(sa.text("select count(*) from epochs")).scalar() == 18
        assert c.execute(sa.text("select count(*) from levels where finished_at is not null")).scalar() == 3
    eng.dispose()
