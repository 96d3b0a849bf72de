"""The tests' in-process status and launch (tests/inprocess.py: status_json, level_ids,
launch_here) against the real CLI: the same JSON from the same store, found from the same cwd,
--db and TP_DB_URL, and no store left open between calls."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.inprocess import dry_run_json, launch_here, level_ids, status_json
from tests.sweeputil import tiny_spec, tp, write_spec


def status_json_cli(
    sweep: str, cwd: Path, db: str | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """status_json through the real CLI in a subprocess: for the test that the two agree."""
    args = ["status", sweep, "--format", "json"] + (["--db", db] if db else [])
    return json.loads(tp(*args, cwd=cwd, env=env, check=True).stdout)


def _open_files(path: str) -> list[str]:
    """This process's open files at `path` (a store's SQLite file, its journal or WAL): this
    test's own, whatever handles another test of the same worker left open."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(path):
            out.append(target)
    return out


@pytest.mark.slow  # two levels of one epoch, trained by local jobs
def test_in_process_status_and_query_equal_the_cli_s(tmp_path):
    spec = tiny_spec("same", output_dir=str(tmp_path / "tp-runs"))
    spec["grid"] = {"method": ["dense", "imp"], "sparsity": [0.5], "seed": [0]}
    path = write_spec(tmp_path, spec)
    cli_dry = json.loads(tp("launch", str(path), "--dry-run", "--format", "json", cwd=tmp_path, check=True).stdout)
    assert dry_run_json(path, tmp_path) == cli_dry and cli_dry["levels_to_train"] == 2
    launch_here(path, tmp_path)
    assert not _open_files(str(tmp_path / "tp-results.db"))

    here = status_json("same", tmp_path)
    assert here == status_json_cli("same", tmp_path)
    assert here["counts"] == {"COMPLETED": 2} and len(here["runs"]) == 2
    assert not _open_files(str(tmp_path / "tp-results.db")), "the in-process status closes its store"
    run_id = here["runs"][0]["run_id"]
    assert status_json(run_id[:8], tmp_path) == status_json_cli(run_id[:8], tmp_path)

    cli_levels = json.loads(tp("query", "same", "--levels", "--format", "json", cwd=tmp_path, check=True).stdout)
    assert level_ids("same", tmp_path) == list(dict.fromkeys(r["level_id"] for r in cli_levels))
    assert len(level_ids("same", tmp_path)) == 2

    # the same store named by a relative --db, or by TP_DB_URL, from the same cwd
    assert status_json("same", tmp_path, db="sqlite:///tp-results.db") == here
    env = {"TP_DB_URL": f"sqlite:///{tmp_path / 'tp-results.db'}"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert status_json("same", elsewhere, env=env) == status_json_cli("same", elsewhere, env=env) == here
    assert "TP_DB_URL" not in os.environ or os.environ["TP_DB_URL"] != env["TP_DB_URL"]


def test_in_process_status_refuses_what_the_cli_refuses(tmp_path):
    from core.errors import UserError

    proc = tp("status", "nosuch", "--format", "json", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    with pytest.raises(UserError) as exc:
        status_json("nosuch", tmp_path)
    assert exc.value.exit_code == 2
    assert not (tmp_path / "tp-results.db").exists()
