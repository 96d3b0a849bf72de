"""Every command of DESIGN.md answers, and `db upgrade` migrates a new and a current store."""
from __future__ import annotations

import sqlalchemy as sa

from orchestrator.cli import build_parser
from tests.sweeputil import tp

COMMANDS = ["launch", "status", "resume", "cancel", "query", "plot", "data", "db", "cluster"]


def test_every_design_command_is_there():
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    assert sorted(sub.choices) == sorted(COMMANDS)


def test_db_upgrade_creates_then_keeps_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    first = tp("db", "upgrade", "--db", url, cwd=tmp_path, check=True)
    assert "schema empty -> 0002" in first.stdout
    again = tp("db", "upgrade", "--db", url, cwd=tmp_path, check=True)
    assert "schema 0002 -> 0002" in again.stdout
    eng = sa.create_engine(url)
    assert {"sweeps", "runs", "levels", "epochs", "events", "attempts"} <= set(sa.inspect(eng).get_table_names())
    eng.dispose()
