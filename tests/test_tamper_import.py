"""Nothing tampered is imported: an output folder whose files were edited, swapped, replaced by
a FIFO or a symlink, or grown past their limits is checked before anything of it reaches a store
(`tp-sweep db import`, launch) or a notebook (`tp.load_level`). Each bad file is named with its
problem, skipped, and never crashes a later command on that folder.

One tiny sweep is trained (imp at 0.5: level 0 and trunk level 1, one epoch each); every test
tampers with a copy of its output folder."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.sweeputil import tiny_spec, tp, write_spec

NAME = "tamper"


def _spec(output_dir: Path | None = None) -> dict:
    spec = tiny_spec(NAME)
    spec["grid"] = {"method": ["imp"], "sparsity": [0.5], "seed": [0]}
    if output_dir is not None:
        spec["output_dir"] = str(output_dir)
    return spec


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[str]]:
    """(folder holding tp-runs/, the level ids: level 0 then level 1)."""
    tmp = tmp_path_factory.mktemp("tamper")
    tp("launch", str(write_spec(tmp, _spec())), cwd=tmp, check=True)
    rows = json.loads(tp("query", NAME, "--levels", "--format", "json", cwd=tmp, check=True).stdout)
    ids = [r["level_id"] for r in sorted(rows, key=lambda r: r["level"])]
    assert len(ids) == 2
    return tmp, ids


@pytest.fixture
def copy(trained, tmp_path) -> Path:
    src, _ = trained
    out = tmp_path / "runs"
    shutil.copytree(src / "tp-runs", out, ignore=shutil.ignore_patterns("_jobs", "_code", "wandb"))
    return out


def _import(out: Path, cwd: Path) -> tuple[int, str, Path]:
    """`db import` into a new store, never hanging: (exit status, stderr on one line, store)."""
    db = cwd / "import.db"
    proc = tp("db", "import", str(out), "--db", f"sqlite:///{db}", cwd=cwd, timeout=120)
    return proc.returncode, " ".join(proc.stderr.split()), db


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(sql).fetchall()


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _launch(out: Path, cwd: Path):
    """A real launch on the tampered folder (every good level is done: nothing trains)."""
    spec = write_spec(cwd, _spec(out))
    return tp("launch", str(spec), "--db", f"sqlite:///{cwd / 'launch.db'}", cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("test_acc", "oops", "history[0].test_acc 'oops' is not a number"),
        ("epoch", 2**70, f"history[0].epoch {2**70} is out of range"),
    ],
)
def test_a_bad_epoch_is_named_skipped_and_never_crashes_a_launch(trained, copy, tmp_path, field, value, says):
    _, (l0, l1) = trained
    _edit_json(copy / "levels" / l1 / "metrics.json", lambda d: d["history"][0].update({field: value}))
    rc, err, db = _import(copy, tmp_path)
    assert rc == 1 and "Traceback" not in err, err
    assert f"{l1}: metrics.json: {says}" in err
    assert _rows(db, "select level_id from levels") == [(l0,)]  # nothing of the bad level
    assert _rows(db, "select distinct level_id from epochs") == [(l0,)]
    for _ in range(2):  # and every later launch on the folder says so, without a traceback
        proc = _launch(copy, tmp_path)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{l1}: metrics.json: {says}" in " ".join(proc.stderr.split())


def test_a_fifo_as_metrics_json_is_refused_without_blocking(trained, copy, tmp_path):
    _, (_, l1) = trained
    metrics = copy / "levels" / l1 / "metrics.json"
    metrics.unlink()
    os.mkfifo(metrics)
    rc, err, db = _import(copy, tmp_path)  # a blocked open would time out here
    assert rc == 1 and f"{l1}: metrics.json is not a regular file" in err, err
    assert l1 not in {lid for (lid,) in _rows(db, "select level_id from levels")}


def test_files_past_their_limits_are_refused(trained, copy, tmp_path):
    _, (l0, l1) = trained
    _edit_json(copy / "levels" / l0 / "metrics.json", lambda d: d["provenance"].update(note="x" * 100_000))
    _edit_json(copy / "levels" / l1 / "metrics.json", lambda d: d.update(padding="x" * (5 << 20)))
    rc, err, db = _import(copy, tmp_path)
    assert rc == 1, err
    assert f"{l0}: metrics.json: provenance is 100," in err and "more than its limit of 65,536" in err
    assert f"{l1}: metrics.json is 5,2" in err and "more than its limit of 4,194,304" in err
    assert _rows(db, "select level_id from levels") == []


def test_a_symlinked_level_folder_is_refused(trained, copy, tmp_path):
    _, (_, l1) = trained
    elsewhere = tmp_path / "elsewhere"
    shutil.move(copy / "levels" / l1, elsewhere)
    (copy / "levels" / l1).symlink_to(elsewhere)
    rc, err, db = _import(copy, tmp_path)
    assert rc == 1 and f"{l1}: the level folder is a symlink" in err, err
    assert l1 not in {lid for (lid,) in _rows(db, "select level_id from levels")}


def test_a_levels_dir_outside_the_folder_is_refused(trained, tmp_path):
    src, _ = trained
    out = tmp_path / "records-only"
    shutil.copytree(src / "tp-runs" / "sweeps", out / "sweeps")  # its record names src's levels
    rc, err, db = _import(out, tmp_path)
    assert rc == 1 and f"sweeps/{NAME}.json: levels_dir" in err and "is outside the output folder" in err, err
    assert _rows(db, "select name from sweeps") == [] and _rows(db, "select level_id from levels") == []


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda r: r.update(name="../<b>x</b>"), "name '../<b>x</b>' is not a name"),
        (lambda r: r["points"][0].update(seed="0"), "points[0].seed '0' is not an integer"),
        (lambda r: r["runs"][0].update(method="imp; drop"), "runs[0].method 'imp; drop' is not a pruning method"),
    ],
    ids=["path-and-html-name", "string-seed", "unknown-method"],
)
def test_a_bad_sweep_record_is_refused_whole(copy, tmp_path, edit, says):
    _edit_json(copy / "sweeps" / f"{NAME}.json", edit)
    rc, err, db = _import(copy, tmp_path)
    assert rc == 1 and f"sweeps/{NAME}.json: {says}" in err, err
    for table in ("sweeps", "runs", "grid_points", "levels"):
        assert _rows(db, f"select * from {table}") == []


def test_a_launch_sets_a_bad_sweep_record_aside(copy, tmp_path):
    record = copy / "sweeps" / f"{NAME}.json"
    _edit_json(record, lambda r: r.update(runs="x"))
    proc = _launch(copy, tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{record}: runs or points is not a list; moved aside" in " ".join(proc.stderr.split())
    assert json.loads(record.read_text())["runs"] and (copy / "sweeps" / f"{NAME}.json.bad").exists()


def test_a_swapped_final_pt_is_refused_by_import_launch_and_load_level(trained, copy, tmp_path):
    import turboprune as tp_api

    _, (l0, l1) = trained
    a, b = copy / "levels" / l0 / "final.pt", copy / "levels" / l1 / "final.pt"
    a.rename(tmp_path / "final.tmp")
    b.rename(a)
    (tmp_path / "final.tmp").rename(b)
    rc, err, db = _import(copy, tmp_path)
    assert rc == 1, err
    for lid in (l0, l1):
        assert f"{lid}: final.pt is not the file its metrics.json was written beside" in err
    assert _rows(db, "select level_id from levels where finished_at is not null") == []
    spec = write_spec(tmp_path, _spec(copy))
    dry = tp("launch", str(spec), "--dry-run", "--format", "json", cwd=tmp_path, timeout=120)
    assert dry.returncode == 1 and json.loads(dry.stdout)["levels_done"] == 0
    with pytest.raises(ValueError, match="final.pt is not the file its metrics.json was written beside"):
        tp_api.load_level(copy, l1)


def test_load_level_refuses_a_folder_named_otherwise(trained, copy):
    import turboprune as tp_api

    _, (_, l1) = trained
    assert tp_api.load_level(copy, l1).weights  # the untouched copy loads
    renamed = "0123456789abcdef"
    (copy / "levels" / l1).rename(copy / "levels" / renamed)
    with pytest.raises(ValueError, match="differs from the level_id"):
        tp_api.load_level(copy, renamed)
