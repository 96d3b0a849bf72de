"""Reuse and code: a level's code is part of what it computes. Under reuse same-code (the
default) a relaunch after a trainer change retrains exactly the levels whose code changed; under
reuse any it reuses them and says from which code. Run from a copy of the package, edited."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.sweeputil import REPO, tiny_spec, tp, write_spec

PACKAGES = ("core", "trainer", "slurm", "db", "orchestrator", "cli")


def copy_package(dst: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


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
    out = run("launch", str(tmp_path / "anycode.yaml")).stdout
    assert "1 were trained by other code" in " ".join(out.split()) and "nothing to submit" in out
