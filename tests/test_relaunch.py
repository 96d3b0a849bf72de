"""A sweep's name is its identity: a launch under a name the store holds goes on when it only
adds grid values with the same settings (an extension), and otherwise stops with exit 2 before
anything changes, saying what differs and how to go on (a new name, --extend, --replace).
Stores are written directly (a real plan recorded with Store.record_plan): no training, but for
the one end-to-end extension (marked slow)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.sweeputil import tiny_spec, tp, write_spec


def _spec(tmp, **over):
    spec = tiny_spec("same", executor__kind="debug")
    spec["grid"] = {"method": ["imp"], "sparsity": [0.5], "seed": [0, 1]}
    spec["output_dir"] = str(tmp / "tp-runs")
    for k, v in over.items():
        spec[k] = v
    return spec


def _record(tmp, spec):
    """The sweep as a launch records it, without training."""
    from db.store import Store
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.spec import parse_spec

    plan = plan_sweep(parse_spec(spec))
    store = Store(f"sqlite:///{tmp / 'tp-results.db'}")
    store.record_plan(plan, spec, plan.levels_dir)
    store.close()
    return plan


def _state(tmp):
    """Every file under tmp with its size (SQLite's own -wal and -shm aside), and every row of
    the sweep's tables."""
    files = sorted(
        (str(p.relative_to(tmp)), p.stat().st_size)
        for p in tmp.rglob("*")
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    )
    with sqlite3.connect(tmp / "tp-results.db") as c:
        tables = ("sweeps", "grid_points", "sweep_runs")
        rows = {t: sorted(map(repr, c.execute(f"select * from {t}"))) for t in tables}
    return files, rows


def _with_lr(spec, lr, seeds=None):
    spec = json.loads(json.dumps(spec))
    spec["trainer"]["overrides"]["optimizer.lr"] = lr
    if seeds is not None:
        spec["grid"]["seed"] = seeds
    return spec


def test_a_relaunch_that_changes_settings_stops_before_anything_changes(tmp_path):
    """Relaunching `same` with optimizer.lr added silently moved its seeds to the new settings,
    beside a seed kept at the old ones: now exit 2, saying which key changed and how to go on."""
    spec = _spec(tmp_path)
    _record(tmp_path, spec)
    changed = tmp_path / "changed.yaml"
    changed.write_text(json.dumps(_with_lr(spec, 0.05)))
    before = _state(tmp_path)
    for extra in ([], ["--extend"], ["--dry-run"]):
        proc = tp("launch", str(changed), *extra, cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        err = " ".join(proc.stderr.split())
        assert "sweep same exists" in err and "nothing was recorded or submitted" in err, err
        assert "trainer.overrides.optimizer.lr: 0.1 -> 0.05" in err, err
        assert "runs whose settings change: 2 (imp seed 0, imp seed 1)" in err, err
        assert "a new name" in err and "--replace" in err, err
        assert _state(tmp_path) == before, extra


def test_extending_by_grid_values_needs_no_flag_and_other_settings_need_extend(tmp_path):
    """The dry run in-process (orchestrator.operations.launch): its JSON, or its refusal (exit 2)."""
    from core.errors import UserError
    from orchestrator.operations.launch import LaunchRequest, dry_run

    spec = _spec(tmp_path)
    _record(tmp_path, spec)
    db = f"sqlite:///{tmp_path / 'tp-results.db'}"

    def dry(s, mode=None):
        path = tmp_path / "next.yaml"
        path.write_text(json.dumps(s))
        return dry_run(LaunchRequest(str(path), db=db, mode=mode))

    def refused(s, mode=None):
        with pytest.raises(UserError) as exc:
            dry(s, mode)
        assert exc.value.exit_code == 2
        return str(exc.value)

    # the documented use: a seed, a target and a method more, nothing else changed
    wider = json.loads(json.dumps(spec))
    wider["grid"] = {"method": ["imp", "dense"], "sparsity": [0.5, 0.75], "seed": [0, 1, 2]}
    out = dry(wider)
    assert out.exit_code == 0, out.bad
    rel = json.loads(json.dumps(out.info()))["relaunch"]
    assert rel["needs"] is None and rel["settings_changed"] == {} and rel["runs_changed"] == []
    assert rel["runs_added"] == ["dense seed 0", "dense seed 1", "dense seed 2", "imp seed 2"]
    assert rel["grid_points_added"] == 7  # imp at 0.75 for seeds 0, 1; imp seed 2 twice; dense x 3
    # a spec that lists part of the sweep: the rest is kept
    out = dry({**spec, "grid": {**spec["grid"], "seed": [5]}})
    rel = out.info()["relaunch"]
    assert out.exit_code == 0 and rel["runs_unlisted"] == ["imp seed 0", "imp seed 1"]
    # new runs with other settings: --extend (the sweep's runs stay as they are)
    other = _with_lr(spec, 0.05, seeds=[5])
    why = refused(other)
    assert "--extend" in why and "--replace" in why
    out = dry(other, "extend")
    assert out.exit_code == 0, out.bad
    assert out.info()["relaunch"]["needs"] == "extend"
    # a new grid axis is a change of settings too
    assert "grid axes" in refused({**spec, "grid": {**spec["grid"], "optimizer.lr": [0.1, 0.05]}})
    # --replace may change the sweep's runs; --extend may not
    changed = _with_lr(spec, 0.05)
    refused(changed, "extend")
    out = dry(changed, "replace")
    assert out.exit_code == 0, out.bad
    assert out.info()["relaunch"]["runs_changed"] == ["imp seed 0", "imp seed 1"]


def test_replace_makes_the_sweep_exactly_the_spec(tmp_path):
    from db.store import Store
    from orchestrator.control.controller import write_plan_files
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.spec import parse_spec

    spec = _spec(tmp_path)
    spec["grid"]["seed"] = [0, 1, 5]
    first = _record(tmp_path, spec)
    write_plan_files(first, spec)
    new = _with_lr(spec, 0.05, seeds=[0, 1])
    plan = plan_sweep(parse_spec(new))
    store = Store(f"sqlite:///{tmp_path / 'tp-results.db'}")
    store.record_plan(plan, new, plan.levels_dir, replace=True)
    write_plan_files(plan, new, replace=True)
    with sqlite3.connect(tmp_path / "tp-results.db") as c:
        points = sorted(c.execute("select seed, run_id from grid_points"))
        members = sorted(r for (r,) in c.execute("select run_id from sweep_runs"))
        runs = c.execute("select count(*) from runs").fetchone()[0]
    assert points == sorted((r.seed, r.run_id) for r in plan.runs)
    assert members == sorted(r.run_id for r in plan.runs)
    assert runs == 5  # the dropped runs keep their rows
    record = json.loads((tmp_path / "tp-runs" / "sweeps" / "same.json").read_text())
    assert sorted(r["run_id"] for r in record["runs"]) == members and len(record["points"]) == 2
    store.close()


@pytest.mark.slow  # trains through the debug executor: a level of one epoch per launch
def test_a_sweep_extended_by_a_seed_trains_it_and_keeps_the_rest(tmp_path):
    spec = _spec(tmp_path)
    spec["grid"] = {"method": ["dense"], "seed": [0]}
    tp("launch", str(write_spec(tmp_path, spec)), cwd=tmp_path, check=True)
    spec["grid"]["seed"] = [1]
    out = tp("launch", str(write_spec(tmp_path, spec)), cwd=tmp_path, check=True).stdout
    assert "runs added: 1 (dense seed 1)" in " ".join(out.split()), out
    rows = json.loads(tp("query", "same", "--format", "json", cwd=tmp_path, check=True).stdout)
    assert sorted(r["seed"] for r in rows) == [0, 1] and all(r["test_acc"] is not None for r in rows)
