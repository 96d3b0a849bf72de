"""Hydra: config groups composed alike by hydra and by tp-sweep's resolver, the presets' run ids
unchanged by the reorganisation, group choices in specs, `python -m trainer` as hydra users know
it, and hydra multiruns (submitit_local, submitit_slurm) recorded in the store like any sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core import config as trainer_config
from core.levels import run_id
from core.schema import validate_config
from orchestrator.operations.query import QueryRequest, query
from orchestrator.operations.status import list_sweeps, sweep_status
from orchestrator.operations.stores import open_reader
from orchestrator.plan.grid import plan_sweep
from orchestrator.plan.spec import SpecError, parse_spec
from tests.sweeputil import REPO, SECRET, grep_tree, tiny_spec, tp, write_spec

FIXTURES = REPO / "tests" / "data" / "presets"  # captured before conf/ was split into groups
PRESETS = trainer_config.available_configs()
TINY = ["schedule.epochs=1", "model.hidden=[32]", "data.batch_size=128", "prune.rate=0.5"]


def _trainer(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    full_env = {**os.environ, "PYTHONPATH": str(REPO)}
    full_env.pop("TP_DB_URL", None)  # a store only where the test names one
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- the presets keep their configs, run ids and level ids -------------------------------------
def test_the_three_presets_are_the_three_flat_configs():
    assert PRESETS == ["cifar10_resnet20", "digits_mlp", "imagenet_rn50"]
    ids = json.loads((FIXTURES / "run_ids.json").read_text())
    for name in PRESETS:
        assert trainer_config.resolve(name) == json.loads((FIXTURES / f"{name}.json").read_text()), name
        for method, rid in ids[name].items():
            assert run_id(trainer_config.resolve(name, {"method": method, "seed": 0})) == rid


def test_shipped_sweeps_keep_their_run_and_level_ids():
    from orchestrator.plan.spec import load_spec

    want = json.loads((FIXTURES / "sweep_ids.json").read_text())
    for name, ids in want.items():
        plan = plan_sweep(load_spec(REPO / "sweeps" / f"{name}.yaml"), reuse="any")  # ids without code
        assert sorted(r.run_id for r in plan.runs) == ids["runs"], name
        assert sorted(plan.levels) == ids["levels"], name


# ---- our resolver is hydra's composition -------------------------------------------------------
CHOICES = [  # (hydra overrides, the same as a spec's trainer.overrides)
    ([], {}),
    (["model=resnet18"], {"model": "resnet18"}),
    (["model=lenet", "data=synthetic"], {"model": "lenet", "data": "synthetic"}),
    (
        ["optimizer=adamw", "schedule=multistep", "schedule.milestones=[2,3]"],
        {"optimizer": "adamw", "schedule": "multistep", "schedule.milestones": [2, 3]},
    ),
    (
        ["model=mlp", "model.hidden=[16,8]", "train=fast", "logging=wandb"],
        {"model.hidden": [16, 8], "model": "mlp", "train": "fast", "logging": "wandb"},
    ),  # choices first
    (
        ["data=imagenet", "data.batch_size=256", "prune.rate=0.5", "method=imp", "seed=3"],
        {"data": "imagenet", "data.batch_size": 256, "prune.rate": 0.5, "method": "imp", "seed": 3},
    ),
]


def _hydra_compose(preset: str, overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(trainer_config.CONF_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name=preset, overrides=overrides))


@pytest.mark.parametrize("preset", PRESETS)
def test_resolver_matches_hydra_compose(preset):
    for hydra_overrides, ours in CHOICES:
        assert trainer_config.resolve(preset, ours) == _hydra_compose(preset, hydra_overrides), hydra_overrides


def test_every_group_option_composes_alike_and_validates():
    for group in trainer_config.groups():
        options = trainer_config.group_options(group)
        hydra_side = {o: _hydra_compose("digits_mlp", [f"{group}={o}"]) for o in options}
        for option in options:
            cfg = trainer_config.resolve("digits_mlp", {group: option})
            assert cfg == hydra_side[option], f"{group}={option}"
            validate_config(cfg)


def test_resolver_refuses_what_it_does_not_implement(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.yaml").write_text("name: mlp\n")
    (tmp_path / "p.yaml").write_text("defaults:\n  - override model: a\n")
    (tmp_path / "q.yaml").write_text("defaults:\n  - model: a\nmethod: ${seed}\n")
    monkeypatch.setattr(trainer_config, "CONF_DIR", tmp_path)
    with pytest.raises(trainer_config.ConfigError, match="not `GROUP: OPTION`"):
        trainer_config.load_config("p")
    with pytest.raises(trainer_config.ConfigError, match="interpolations"):
        trainer_config.load_config("q")


# ---- group choices in specs --------------------------------------------------------------------
def test_group_choices_in_overrides_and_axes():
    spec = tiny_spec("groups")
    spec["trainer"]["overrides"] = {"schedule.epochs": 1, "data": "synthetic", "model": "resnet18"}
    spec["grid"] = {"method": ["imp"], "sparsity": [0.5], "seed": [0], "model": ["mlp", "lenet"]}
    plan = plan_sweep(parse_spec(spec), reuse="any")  # run ids of the config alone
    assert {r.axes["model"]: r.config["model"] for r in plan.runs} == {
        "mlp": {"name": "mlp", "hidden": [128, 128]},
        "lenet": {"name": "lenet"},
    }
    assert all(r.config["data"]["name"] == "synthetic" for r in plan.runs)
    for r in plan.runs:  # the id tp-sweep gives is the id of hydra's composition
        composed = _hydra_compose(
            "digits_mlp", ["schedule.epochs=1", "data=synthetic", f"model={r.axes['model']}", "method=imp"]
        )
        assert r.run_id == run_id(composed)


def test_unknown_group_option_in_a_spec_exits_2(tmp_path):
    options = "options: deit_small, deit_tiny, lenet, mlp, resnet18"
    spec = tiny_spec("bad_override")
    spec["trainer"]["overrides"]["model"] = "resnet7"
    with pytest.raises(SpecError, match=f"trainer.overrides: model: unknown option 'resnet7'; {options}"):
        parse_spec(spec, "spec.yaml")
    spec = tiny_spec("bad_axis")
    spec["grid"]["data"] = ["digits", "mnist"]
    path = write_spec(tmp_path, spec)
    proc = tp("launch", str(path), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "grid.data: unknown option 'mnist'; options: beton, cifar10, cifar100, digits" in " ".join(
        proc.stderr.split()
    )


# ---- python -m trainer -------------------------------------------------------------------------
def test_the_entry_imports_neither_orchestrator_nor_the_store_nor_torch():
    code = (
        "import sys, trainer.__main__, cli.hydra_argv; bad = [m for m in sys.modules "
        "if m.split('.')[0] in ('orchestrator', 'db', 'torch')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_cfg_job_prints_the_composed_config(tmp_path):
    proc = _trainer("--cfg", "job", "model=resnet20", "data=cifar10", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    shown = yaml.safe_load(proc.stdout)
    assert {k: shown.pop(k) for k in ("db", "db_file")} == {"db": None, "db_file": None}
    assert shown == trainer_config.resolve("digits_mlp", {"model": "resnet20", "data": "cifar10"})
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_help_names_the_groups_and_the_run_keys_not_the_internal_groups(tmp_path):
    proc = _trainer("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    shown = {line.split(":")[0] for line in lines if ": " in line and not line.startswith(" ")}
    assert set(trainer_config.groups()) <= shown
    assert not {"tp", "tp_schema"} & shown and "standalone" not in proc.stdout, proc.stdout
    for key in ("+sparsities=", "+output_dir=", "+sweep=", "+reuse=", "db="):  # a line each, saying what
        (line,) = [line for line in lines if line.startswith(key)]
        assert len(line.split()) > 4, line
    assert list(tmp_path.iterdir()) == []


def test_info_and_its_optional_value(tmp_path):
    for args in (["--info"], ["model=lenet", "--info", "defaults"], ["optimizer=adamw", "--info", "config"]):
        proc = _trainer(*args, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr)
    assert "model/lenet" in _trainer("--info", "defaults", "model=lenet", cwd=tmp_path).stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args,needle",
    [
        (["model=resnet7"], "model: unknown option 'resnet7'; options: deit_small, deit_tiny, lenet"),
        (["-m", "hydra/launcher=submitit_local", "model=mlp,resnet7"], "model: unknown option 'resnet7'"),
        (
            ["-m", "hydra/launcher=submitit_local", "schedule.epochs=1,0"],
            "job #1 (schedule.epochs=0): schedule.epochs: 0 is below the minimum 1",
        ),
        (
            ["-m", "hydra/launcher=submitit_local", "method=imp", "+sparsities=[0.5,1.5]"],
            "sparsities: 1.5 is not a sparsity in [0, 1)",
        ),
        (["-m", "method=imp", "db=postgresql://u:hunter2@127.0.0.1/tp"], "db: a password on the command line"),
    ],
)
def test_bad_command_line_exits_2_before_anything_runs(tmp_path, args, needle):
    proc = _trainer(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []  # no multirun/ folder, no levels, no store


def test_a_run_ends_with_a_summary_of_what_it_trained_and_reused(tmp_path):
    def run() -> str:
        proc = _trainer("method=imp", "+sparsities=[0.5]", *TINY, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc.stdout.strip().splitlines()[-1]

    first, again = run(), run()
    levels = tmp_path / "tp-runs" / "levels"
    (served,) = [d.name for d in levels.iterdir() if json.loads((d / "level.json").read_text())["depth"] == 1]
    for line, counts in ((first, "2 levels trained, 0 reused"), (again, "0 levels trained, 2 reused")):
        assert line.startswith(f"[trainer] done: {counts}"), line
        assert "sparsity 0.5 test_acc " in line and served in line and f"results in {levels}" in line, line


# ---- multiruns recorded in the store -------------------------------------------------------------
def _expected_runs() -> dict[str, str]:
    spec = tiny_spec("expected")
    spec["grid"] = {"method": ["imp", "random"], "sparsity": [0.5], "seed": [0]}
    return {r.method: r.run_id for r in plan_sweep(parse_spec(spec)).runs}


def _check_recorded(tmp_path: Path, db: str, sweep: str | None = None) -> str:
    if sweep is None:  # named after the multirun's folder
        (folder,) = (tmp_path / "multirun").iterdir()
        sweep = f"hydra-{folder.name}"
    reader = open_reader(db)
    try:
        assert [s.sweep for s in list_sweeps(reader).sweeps] == [sweep]
        status = sweep_status(reader, sweep).as_json()
        rows = query(reader, QueryRequest(sweep)).rows
    finally:
        reader.close()
    assert {r["method"]: (r["run_id"], r["state"]) for r in status["runs"]} == {
        m: (rid, "COMPLETED") for m, rid in _expected_runs().items()
    }
    assert sorted((r["method"], r["sparsity"], r["run_id"]) for r in rows) == sorted(
        (m, 0.5, rid) for m, rid in _expected_runs().items()
    )
    assert all(r["test_acc"] is not None for r in rows)
    resumed = tp("resume", sweep, "--db", db, cwd=tmp_path)  # the stored spec is a real one
    assert resumed.returncode == 0 and "nothing to resume" in resumed.stdout, resumed.stdout + resumed.stderr
    return sweep


@pytest.mark.slow
def test_submitit_local_multirun_records_both_runs_with_tp_sweep_ids(tmp_path):
    db = f"sqlite:///{tmp_path / 'store.db'}"
    proc = _trainer(
        "-m",
        "hydra/launcher=submitit_local",
        "method=imp,random",
        "+sparsities=[0.5]",
        *TINY,
        f"db={db}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    _check_recorded(tmp_path, db)


def test_submitit_local_with_tp_db_url_keeps_the_password_out_of_files(tmp_path, secret_pg):
    url = secret_pg
    proc = _trainer(
        "-m",
        "hydra/launcher=submitit_local",
        "method=imp,random",
        "+sparsities=[0.5]",
        *TINY,
        "+sweep=hydra_pg",
        cwd=tmp_path,
        env={"TP_DB_URL": url},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    _check_recorded(tmp_path, url, "hydra_pg")
    hits = grep_tree(tmp_path, SECRET.encode())  # multirun.yaml, submitit's pickles and logs...
    assert hits and all("/_jobs/secrets/" in h for h in hits), hits
    assert all(os.stat(h).st_mode & 0o077 == 0 for h in hits)


@pytest.mark.slow
def test_submitit_slurm_multirun_records_both_runs(tmp_path, slurm_cluster):
    db = f"sqlite:///{tmp_path / 'store.db'}"
    proc = _trainer(
        "-m",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
        "method=imp,random",
        "+sparsities=[0.5]",
        *TINY,
        f"db={db}",
        "+sweep=hydra_slurm",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    _check_recorded(tmp_path, db, "hydra_slurm")
    status = json.loads(tp("status", "hydra_slurm", "--db", db, "--format", "json", cwd=tmp_path).stdout)
    assert all("_" in r["job_id"] for r in status["runs"])  # Slurm array ids: status polls Slurm
