"""The notebook API, as a notebook uses it: `import turboprune as tp`, DataFrames from a store URL
or path, a level's mask and weights by id. The sweep is the one test_report.py reads
(sweeputil.finished_sweep: trained once per session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.sweeputil import REPO, finished_sweep
from tests.sweeputil import tp as cli

pytestmark = pytest.mark.slow  # every test reads a sweep trained through real processes


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return finished_sweep(tmp_path_factory)


def test_import_is_light_until_a_function_needs_more(shared):
    """`import turboprune` and the first DataFrame import no torch; only load_level does."""
    tmp, url = shared
    probe = (
        "import sys, turboprune as tp\n"
        "assert 'pandas' not in sys.modules and 'torch' not in sys.modules\n"
        f"df = tp.grid_points({str(tmp / 'tp-results.db')!r}, 'share')\n"
        "print('TORCH=' + str('torch' in sys.modules), 'PANDAS=' + str('pandas' in sys.modules), len(df))\n"
        "lv = tp.load_level(sys.argv[1], df.level_id[0])\n"
        "print('TORCH=' + str('torch' in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, url],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["TORCH=False PANDAS=True 10", "TORCH=True"], proc.stdout


def test_grouped_means_match_query_and_a_mask_gives_the_recorded_sparsity(shared, monkeypatch):
    import turboprune as tp

    tmp, url = shared
    monkeypatch.chdir(tmp)
    df = tp.grid_points("tp-results.db", "share")  # a path, relative to the notebook's folder
    query_cols = list(json.loads(tp_query(tmp, url))[0])
    assert list(df.columns) == query_cols
    means = df.groupby(["method", "sparsity"]).test_acc.agg(["mean", "std", "count"]).reset_index()
    grouped = json.loads(
        cli(
            "query", "share", "--group-by", "method,sparsity", "--format", "json", "--db", url, cwd=tmp, check=True
        ).stdout
    )
    assert len(means) == len(grouped)
    for (_, row), g in zip(means.iterrows(), grouped):
        assert (row["method"], row["sparsity"]) == (g["method"], g["sparsity"])
        assert row["mean"] == pytest.approx(g["test_acc_mean"], abs=1e-12)
        assert row["std"] == pytest.approx(g["test_acc_std"], abs=1e-12)
        assert row["count"] == g["n"]

    levels = tp.levels(url, "share")
    assert len(levels) == len(
        json.loads(cli("query", "share", "--levels", "--format", "json", "--db", url, cwd=tmp, check=True).stdout)
    )
    epochs = tp.epochs(url, "share")
    assert set(epochs.method) == {"dense", "imp", "random"} and epochs.epoch.max() == 1
    one = epochs[(epochs.method == "imp") & (epochs.seed == 0)]
    assert len(one) == 3 * 2 and one.test_acc.notna().all()  # 3 levels x 2 epochs

    row = df[(df.method == "imp") & (df.sparsity == 0.75)].iloc[0]
    lv = tp.load_level(url, row.level_id)
    assert lv.finished and lv.level_id == row.level_id and lv.description["kind"] == row.level_kind
    assert lv.sparsity() == pytest.approx(row.achieved_sparsity, abs=1e-12)
    assert set(lv.mask) <= set(lv.weights)
    for name, mask in lv.mask.items():  # pruned weights are exactly zero
        assert not lv.weights[name][~mask.bool()].any()
    same = tp.load_level(tmp / "tp-runs", row.level_id[:10])  # the output folder, by a prefix
    assert same.path == lv.path and same.sparsity() == lv.sparsity()
    assert tp.load_level(url, df[df.method == "dense"].level_id.iloc[0]).sparsity() == 0.0


def tp_query(tmp, url) -> str:
    return cli("query", "share", "--format", "json", "--db", url, cwd=tmp, check=True).stdout


def test_bad_sources_say_what_is_wrong(shared, tmp_path):
    import turboprune as tp

    _, url = shared
    with pytest.raises(FileNotFoundError, match="no results store"):
        tp.grid_points(tmp_path / "missing.db", "share")
    assert not (tmp_path / "missing.db").exists()  # never created
    with pytest.raises(Exception, match="no sweep named 'nosuch'"):
        tp.grid_points(url, "nosuch")
    with pytest.raises(tp.LevelNotFound, match="not a level id"):
        tp.load_level(url, "../../etc")
    with pytest.raises(tp.LevelNotFound, match="no level"):
        tp.load_level(url, "0123456789abcdef")
    with pytest.raises(AttributeError):
        _ = tp.no_such_function


@pytest.mark.postgres
def test_the_same_frames_and_report_from_postgresql(shared, postgres_url, tmp_path):
    """The shared sweep imported into PostgreSQL from its output folder (`tp-sweep db import`):
    the same DataFrame from a postgresql:// URL, and a report from it."""
    import turboprune as tp
    from tests.sweeputil import pg_schema

    tmp, url = shared
    with pg_schema(postgres_url, "tp_notebook") as pg:
        cli("db", "import", str(tmp / "tp-runs"), "--db", pg, cwd=tmp, check=True)
        lite = tp.grid_points(url, "share").sort_values(["method", "sparsity", "seed"]).reset_index(drop=True)
        post = tp.grid_points(pg, "share").sort_values(["method", "sparsity", "seed"]).reset_index(drop=True)
        keep = ["method", "sparsity", "seed", "run_id", "level_id", "achieved_sparsity", "test_acc"]
        assert lite[keep].equals(post[keep])
        assert len(tp.epochs(pg, "share")) == len(tp.epochs(url, "share"))
        cli("report", "share", "--db", pg, "--out", str(tmp_path / "pg.html"), cwd=tmp_path, check=True)
        assert "Results by method and sparsity" in (tmp_path / "pg.html").read_text()
