"""Adversarial cases: every bad input is refused before anything runs, with a message that names
the field; a checkpoint crafted to run code runs nothing; and the store's password appears nowhere
but its owner-only URL file (command lines while a job runs, every file under output_dir, the job
logs, the store's own tables).

Trainer values go through the spec (overrides and grid axes), YAML-level problems through files
and load_spec, filters through compile_where; none of those start a process. The checkpoint and
password tests at the end do.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch

from core import config as trainer_config
from core.config import ConfigError, load_yaml
from core.schema import OPTIMIZER_NAMES, SCHEDULE_NAMES, TrainerConfig, validate_config
from db.reader import QueryError
from db.where import compile_where
from orchestrator.plan.spec import SpecError, load_spec, parse_spec
from tests.sweeputil import REPO, SECRET, TP, grep_tree, tiny_spec, tp, write_spec
from trainer import checkpoint as ckpt


def _refused(spec: dict, needle: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(spec, "spec.yaml")
    msg = str(info.value)
    assert msg.startswith("spec.yaml: "), msg
    assert needle in msg, msg
    return msg


# ---- trainer values: (dotted key, value, what the message must say) ----------------------------
TRAINER_BAD = [
    ("optimizer.lr", "fast", "optimizer.lr: 'fast' is not a number"),
    ("optimizer.lr", 0, "optimizer.lr: 0 must be greater than 0"),
    ("optimizer.lr", float("nan"), "optimizer.lr: nan is not a finite number"),
    ("optimizer.momentum", 1.0, "optimizer.momentum: 1.0 must be less than 1"),
    ("optimizer.weight_decay", -0.1, "optimizer.weight_decay: -0.1 is below the minimum 0"),
    ("optimizer.name", "adam", "optimizer.name: 'adam' is not one of sgd, adamw"),
    ("optimizer.betas", [0.9], "optimizer.betas: [0.9] has 1 values; allowed: exactly 2"),
    ("optimizer.nesterov", "yes", "optimizer.nesterov: 'yes' is not true or false"),
    ("data.batch_size", -5, "data.batch_size: -5 is below the minimum 1"),
    ("data.batch_size", True, "data.batch_size: true is not an integer"),
    ("data.num_workers", None, "data.num_workers: null is not an integer"),
    ("model.hidden", "big", "model.hidden: 'big' is not a list of integers"),
    ("model.hidden", [32, 0], "model.hidden[1]: 0 is below the minimum 1"),
    ("model.hidden", [32, 2.5], "model.hidden[1]: 2.5 is not an integer"),
    ("seed", -1, "seed: -1 is below the minimum 0"),
    ("seed", 2**70, "seed: 1180591620717411303424 must be less than 2**63"),
    ("method", "magic", "method: 'magic' is not one of"),
    ("prune.scope", "nonsense", "prune.scope: 'nonsense' is not one of global, layerwise"),
    ("prune.landing", "air", "prune.landing: 'air' is not one of branch, trunk"),
    ("prune.rate", 0.0001, "prune.rate: 0.0001 is outside [0.01, 0.9]"),
    ("prune.rate", 0.95, "prune.rate: 0.95 is outside [0.01, 0.9]"),
    ("prune.rewind_iterations", -3, "prune.rewind_iterations: -3 is below the minimum 0"),
    ("prune.rewind_optimizer", 1, "prune.rewind_optimizer: 1 is not true or false"),
    ("prune.synflow_rounds", 10**9, "prune.synflow_rounds: 1000000000 is above the maximum 10000"),
    ("schedule.epochs", "three", "schedule.epochs: 'three' is not an integer"),
    ("schedule.epochs", 2.7, "schedule.epochs: 2.7 is not an integer"),
    ("schedule.epochs", 3.0, "schedule.epochs: 3.0 is not an integer"),  # ints are ints
    ("schedule.epochs", 0, "schedule.epochs: 0 is below the minimum 1"),
    ("schedule.name", "linear", "schedule.name: 'linear' is not one of constant, cosine"),
    ("schedule.milestones", [1, "x"], "schedule.milestones[1]: 'x' is not an integer"),
    ("schedule.warmup_epochs", 9, "schedule.warmup_epochs: 9 is past schedule.epochs 1"),
    ("train.precision", "fp16", "train.precision: 'fp16' is not one of auto, fp32, bf16"),
    ("train.channels_last", "yes", "train.channels_last: 'yes' is not one of true, false, auto"),
    ("train.channels_last", 1, "train.channels_last: 1 is not one of true, false, auto"),
    ("train.label_smoothing", 1.5, "train.label_smoothing: 1.5 must be less than 1"),
    ("train.eval_every", 0, "train.eval_every: 0 is below the minimum 1"),
    ("data.test_batch_size", "x" * 5000, "data.test_batch_size: 'xxxxx"),
    ("optimizer", 3, "optimizer: 3 is not a mapping (the optimizer section)"),
    ("optimizer", {"lr": 0.1}, "optimizer.name: missing (required)"),
    ("model", {"name": "mlp", "depth": 3}, "model.depth: unknown key; known: name, hidden"),
]


@pytest.mark.parametrize("key,value,needle", TRAINER_BAD, ids=[f"{k}={v!r}"[:40] for k, v, _ in TRAINER_BAD])
def test_bad_trainer_value_in_overrides(key, value, needle):
    spec = tiny_spec("bad")
    spec["trainer"]["overrides"][key] = value
    msg = _refused(spec, needle)
    assert "trainer.overrides: " in msg


# Every value of an axis is checked, not only the first.
GRID_BAD = [
    ("optimizer.lr", [0.1, "fast"], "grid.optimizer.lr: 'fast' is not a number"),
    ("data.batch_size", [64, -5], "grid.data.batch_size: -5 is below the minimum 1"),
    ("model.hidden", [[32], "big"], "grid.model.hidden: 'big' is not a list of integers"),
    ("schedule.epochs", [1, 2.7], "grid.schedule.epochs: 2.7 is not an integer"),
    ("prune.scope", ["global", "nonsense"], "grid.prune.scope: 'nonsense' is not one of"),
    ("optimizer", [3], "grid.optimizer: 3 is not a mapping"),
    ("model.depth", [1, 2], "grid.model.depth: unknown trainer key 'model.depth'"),
]


@pytest.mark.parametrize("axis,values,needle", GRID_BAD, ids=[g[0] for g in GRID_BAD])
def test_bad_grid_axis_value(axis, values, needle):
    spec = tiny_spec("bad")
    spec["grid"][axis] = values
    _refused(spec, needle)


def test_a_bad_combination_of_two_axes_names_both():
    spec = tiny_spec("bad")
    # Each value is fine alone; sgd's nesterov needs momentum, so the pair is not.
    spec["trainer"]["overrides"]["optimizer.nesterov"] = False
    spec["grid"].update({"optimizer.nesterov": [False, True], "optimizer.momentum": [0.9, 0.0]})
    _refused(spec, "grid: with optimizer.nesterov=True, optimizer.momentum=0.0: optimizer.nesterov:")


# ---- the spec's own fields --------------------------------------------------------------------
def _grid_points(s, n):
    s["grid"].update(
        {
            "optimizer.lr": [0.001 * (i + 1) for i in range(n)],
            "optimizer.weight_decay": [0.0001 * i for i in range(n)],
        }
    )


SPEC_BAD = [
    ("name ..", lambda s: s.__setitem__("name", ".."), "name: '..' must start with"),
    ("name .", lambda s: s.__setitem__("name", "."), "name: '.' must start with"),
    ("name -rf", lambda s: s.__setitem__("name", "-rf"), "name: '-rf' must start with"),
    ("name a/b", lambda s: s.__setitem__("name", "a/b"), "name: 'a/b'"),
    (
        "duplicate sparsity",
        lambda s: s["grid"].__setitem__("sparsity", [0.5, 0.75, 0.5]),
        "grid.sparsity: duplicate value 0.5",
    ),
    ("duplicate seed", lambda s: s["grid"].__setitem__("seed", [0, 1, 0]), "grid.seed: duplicate value 0"),
    (
        "duplicate list value",
        lambda s: s["grid"].__setitem__("model.hidden", [[32], [32]]),
        "grid.model.hidden: duplicate value [32]",
    ),
    (
        "seed 2**70",
        lambda s: s["grid"].__setitem__("seed", [2**70]),
        "grid.seed: seed 1180591620717411303424 is outside [0, 2**63)",
    ),
    ("seed -1", lambda s: s["grid"].__setitem__("seed", [-1]), "grid.seed: seed -1 is outside"),
    (
        "method not a string",
        lambda s: s["grid"].__setitem__("method", [["imp"]]),
        "grid.method: unknown method ['imp']",
    ),
    (
        "sparsity nan",
        lambda s: s["grid"].__setitem__("sparsity", [float("nan")]),
        "grid.sparsity: sparsity nan is not a number",
    ),
    (
        "million grid points",
        lambda s: _grid_points(s, 1000),
        "grid: 2 method x 2 sparsity x 1 seed x 1000 optimizer.lr x 1000 optimizer.weight_decay is "
        "4,000,000 grid points, more than max_grid_points 10,000",
    ),
    (
        "raised cap still bounds",
        lambda s: (s.__setitem__("max_grid_points", 100), _grid_points(s, 10)),
        "more than max_grid_points 100",
    ),
    ("max_grid_points 0", lambda s: s.__setitem__("max_grid_points", 0), "max_grid_points"),
    (
        "trainer config path",
        lambda s: s["trainer"].__setitem__("config", "../../sweeps/demo"),
        "core.config: unknown trainer config '../../sweeps/demo'",
    ),
    (
        "extra newline",
        lambda s: s["executor"].__setitem__("extra", {"comment": "x\n#SBATCH --uid=0"}),
        "executor.extra: comment: control characters",
    ),
    (
        "partition newline",
        lambda s: s["executor"].__setitem__("partition", "gpu\nrm -rf ~"),
        "executor.partition: control characters",
    ),
    (
        "extra nested",
        lambda s: s["executor"].__setitem__("extra", {"account": {"a": [1, 2]}}),
        "executor.extra: account: a dict is not an sbatch value",
    ),
    (
        "extra list",
        lambda s: s["executor"].__setitem__("extra", {"constraint": ["a100", "h100"]}),
        "executor.extra: constraint: a list is not an sbatch value",
    ),
    (
        "extra false",
        lambda s: s["executor"].__setitem__("extra", {"requeue": False}),
        "executor.extra: requeue: false is not an sbatch value",
    ),
    (
        "extra long string",
        lambda s: s["executor"].__setitem__("extra", {"comment": "x" * 300}),
        "executor.extra: comment: a string of 300 characters is longer than 256",
    ),
    (
        "extra bad key",
        lambda s: s["executor"].__setitem__("extra", {"--uid": 0}),
        "executor.extra: '--uid' is not an sbatch option name",
    ),
    (
        "extra too many",
        lambda s: s["executor"].__setitem__("extra", {f"k{i}": 1 for i in range(40)}),
        "executor.extra: 40 options; at most 32",
    ),
    (
        "output_dir unknown user",
        lambda s: s.__setitem__("output_dir", "~no_such_user_tp/runs"),
        "output_dir: cannot expand '~no_such_user_tp'",
    ),
    ("output_dir empty", lambda s: s.__setitem__("output_dir", ""), "output_dir: '' is not a usable folder"),
]


@pytest.mark.parametrize("label,mutate,needle", SPEC_BAD, ids=[b[0] for b in SPEC_BAD])
def test_bad_spec_field(label, mutate, needle):
    spec = tiny_spec("bad")
    mutate(spec)
    _refused(spec, needle)


def test_grid_cap_is_checked_before_anything_expands():
    spec = tiny_spec("huge")
    for key in (
        "optimizer.lr",
        "optimizer.momentum",
        "optimizer.weight_decay",
        "schedule.gamma",
        "schedule.peak_epoch",
        "prune.erk_power_scale",
    ):  # 4 x 100**6 points
        spec["grid"][key] = [0.001 * (k + 1) for k in range(100)]
    start = time.perf_counter()
    _refused(spec, "more than max_grid_points 10,000")
    assert time.perf_counter() - start < 1.0


# ---- YAML files -------------------------------------------------------------------------------
_OK_HEAD = """name: y
trainer:
  config: digits_mlp
  overrides:
    schedule.epochs: 1
grid:
  method: [dense]
"""
_BOMB = "  extra:\n    a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"    {c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)

YAML_BAD = [
    (
        "duplicate key",
        _OK_HEAD.replace("    schedule.epochs: 1\n", "    optimizer.lr: 0.1\n    optimizer.lr: 0.2\n"),
        "found duplicate key 'optimizer.lr' (first at line 5)",
    ),
    ("duplicate top-level key", _OK_HEAD + "name: z\n", "found duplicate key 'name' (first at line 1)"),
    ("alias bomb in executor.extra", _OK_HEAD + "executor:\n" + _BOMB, "more than 50 alias uses"),
    (
        "wide alias expansion",
        _OK_HEAD
        + "executor:\n  extra:\n    a: &a ["
        + ",".join(["x"] * 2000)
        + "]\n"
        + "".join(f"    k{i}: *a\n" for i in range(50)),
        "aliases expand this document to more than 100,000",
    ),
    ("recursive alias", _OK_HEAD + "db: &d [*d]\n", "recursive"),
    ("not a mapping", "- 1\n- 2\n", "a sweep spec must be a YAML mapping"),
    (
        "epochs as words",
        _OK_HEAD.replace("schedule.epochs: 1", "schedule.epochs: three"),
        "trainer.overrides: schedule.epochs: 'three' is not an integer",
    ),
]


@pytest.mark.parametrize("label,text,needle", YAML_BAD, ids=[b[0] for b in YAML_BAD])
def test_bad_yaml_file(tmp_path, label, text, needle):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert time.perf_counter() - start < 1.0
    assert str(info.value).startswith(f"{path}: ") and needle in str(info.value), str(info.value)


def test_huge_and_binary_files_are_refused_unread(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text(_OK_HEAD + "# " + "x" * (2 << 20) + "\n")
    with pytest.raises(SpecError, match="larger than 1024 KiB"):
        load_spec(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(SpecError, match="not UTF-8 text"):
        load_spec(binary)


def test_loader_keeps_merge_keys_and_floats():
    doc = load_yaml("base: &b {p: 1, q: 2}\nother:\n  <<: *b\n  p: 3\nwd: 5e-4\n")
    assert doc == {"base": {"p": 1, "q": 2}, "other": {"p": 3, "q": 2}, "wd": 5e-4}


# ---- --where ----------------------------------------------------------------------------------
ROW = {
    "sweep": "s",
    "method": "imp",
    "sparsity": 0.5,
    "seed": 0,
    "run_id": "r1",
    "level": 1,
    "test_acc": None,
    "state": "RUNNING",
}

WHERE_BAD = [
    ("1/0 == 1", "ZeroDivisionError"),
    ("[0]*100000000000", "repeating a list or string with * is not allowed"),
    ("[0]*10**11", "repeating a list or string with * is not allowed"),
    ("'a' * 100000000000 == 'x'", "repeating a list or string with * is not allowed"),
    ("method * 100000000000 == 'x'", "* takes two numbers"),
    ("sparsity ** 2 > 0", "Pow is not allowed"),
    ("10**1000 > 0", "Pow is not allowed"),
    ("99999999999999999999999999 * 99999999999999999999 ** 99 > 1", "Pow is not allowed"),
    ("9" * 400 + " / 1 > 0", "OverflowError"),
    ("method > 3", "TypeError"),
    ("-method == 1", "unary - takes a number"),
    ("__import__('os').system('true')", "Call is not allowed"),
    ("seed.real == 0", "Attribute is not allowed"),
    ("(lambda: 1)() == 1", "not allowed"),
    ("b'x' == 1", "a bytes constant is not allowed"),
    ("nosuchfield == 1", "unknown field(s) nosuchfield"),
    ("sparsity > 0.5 and " * 40 + "True", "characters; at most 500"),
    ("-(" * 40 + "1" + ")" * 40 + " == 1", "nested more than 32 deep"),
    ("method ==", "cannot parse"),
    ("\x00", "cannot parse"),
]


@pytest.mark.parametrize("expr,needle", WHERE_BAD, ids=[w[0][:30] for w in WHERE_BAD])
def test_bad_where(expr, needle):
    with pytest.raises(QueryError) as info:
        compile_where(expr)(ROW)
    assert str(info.value).startswith("--where: ") and needle in str(info.value), str(info.value)


def test_where_treats_missing_results_like_sql_null():
    done = dict(ROW, test_acc=0.95)
    for expr, on_missing, on_done in [
        ("test_acc > 0.9", False, True),
        ("test_acc * 100 >= 90", False, True),  # None * 100 is None, not a TypeError
        ("test_acc is None", True, False),
        ("test_acc == None", True, False),
        ("method in ('imp', 'snip') and sparsity >= 0.5", True, True),
        ("(test_acc or 0) >= 0", True, True),
    ]:
        match = compile_where(expr)
        assert (match(ROW), match(done)) == (on_missing, on_done), expr


# ---- good inputs still pass -------------------------------------------------------------------
@pytest.mark.parametrize("name", trainer_config.available_configs())
def test_shipped_trainer_configs_validate(name):
    validate_config(trainer_config.load_config(name))


@pytest.mark.parametrize("path", sorted(glob.glob(str(REPO / "sweeps" / "*.yaml"))), ids=lambda p: Path(p).name)
def test_shipped_sweeps_load(path):
    assert load_spec(path).name == Path(path).stem


def test_good_spec_variants(tmp_path):
    spec = tiny_spec("good")
    spec["grid"]["optimizer.lr"] = [0.1, 0.2]
    spec["output_dir"] = "~/tp-runs-test"
    spec["executor"]["extra"] = {"account": "lab", "qos": "high", "exclusive": True, "nice": 10}
    spec["max_grid_points"] = 20
    parsed = parse_spec(spec)
    assert parsed.output_dir == str(Path.home() / "tp-runs-test")
    path = tmp_path / "good.yaml"
    path.write_text(
        _OK_HEAD.replace(
            "    schedule.epochs: 1\n",
            "    optimizer.weight_decay: 5e-4\n    data: {name: digits, batch_size: 32}\n",
        )
    )
    assert load_spec(path).trainer.overrides["optimizer.weight_decay"] == pytest.approx(5e-4)


def test_validate_config_accepts_optional_keys_left_out():
    cfg = trainer_config.load_config("digits_mlp")
    cfg["data"] = {"name": "cifar10", "batch_size": 40, "train_path": "/x", "val_path": "/y"}
    cfg["model"] = {"name": "lenet"}
    del cfg["prune"]["landing"], cfg["train"]["precision"]
    validate_config(cfg)
    del cfg["prune"]["rate"]
    with pytest.raises(ConfigError, match=r"prune.rate: missing \(required\)"):
        validate_config(cfg)


def test_load_config_gives_each_caller_its_own_copy():
    # load_config caches a preset's composition per process: a caller editing its config (as
    # validate_config's callers and the planner's overrides do) must not change the next caller's.
    first = trainer_config.load_config("digits_mlp", {"model": "mlp"})
    first["schedule"]["epochs"] = -7
    first["model"]["extra"] = "edited"
    del first["prune"]
    second = trainer_config.load_config("digits_mlp", {"model": "mlp"})
    assert second == trainer_config._compose("digits_mlp", {"model": "mlp"})  # composed afresh


def test_schema_modules_do_not_import_torch():
    code = (
        "import sys, orchestrator.plan.spec, core.schema, db.queries; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_schema_registers_as_a_hydra_structured_config():
    pytest.importorskip("hydra")
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="tp_schema_test", node=TrainerConfig)
    for name in trainer_config.available_configs():
        merged = OmegaConf.merge(
            OmegaConf.structured(TrainerConfig), OmegaConf.create(trainer_config.load_config(name))
        )
        assert OmegaConf.to_container(merged)["optimizer"]["lr"] > 0


def test_fixed_choices_match_the_torch_registries():
    from trainer.optim import OPTIMIZERS, SCHEDULES

    assert set(OPTIMIZER_NAMES) == set(OPTIMIZERS)
    assert set(SCHEDULE_NAMES) == set(SCHEDULES)


def test_preflight_refuses_a_model_option_its_builder_does_not_take():
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.preflight import PreflightError, check_plan

    spec = tiny_spec("opts")
    spec["trainer"]["overrides"]["model.name"] = "lenet"  # digits_mlp's model.hidden stays
    with pytest.raises(
        PreflightError,
        match="model.hidden: model 'lenet' does not take it; "
        r"its options: none \(remove the key\)",
    ):
        check_plan(plan_sweep(parse_spec(spec)))
    spec["trainer"]["overrides"]["model.name"] = "mlp"
    check_plan(plan_sweep(parse_spec(spec)))


# ---- files and secrets ------------------------------------------------------------------------
class _Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_checkpoints_cannot_run_code_and_damage_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "checkpoint.pt"
    with open(evil, "wb") as f:
        pickle.dump({"step": 0, "model": _Boom()}, f)
    with pytest.raises(ckpt.CheckpointError, match="checkpoint.pt is corrupt or unreadable"):
        ckpt.load_checkpoint(evil)
    torch.save({"model": {"w": torch.zeros(2)}, "extra": _Boom()}, tmp_path / "init.pt")
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_weights(tmp_path / "init.pt")
    assert not (tmp_path / "PWNED").exists()
    torch.save({"model": {"w": "not a tensor"}}, tmp_path / "odd.pt")
    with pytest.raises(ckpt.CheckpointError, match="not a turboprune"):
        ckpt.load_weights(tmp_path / "odd.pt")
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "ok.pt")
    ok = tmp_path / "ok.pt"
    ok.write_bytes(ok.read_bytes()[: ok.stat().st_size // 2])
    with pytest.raises(ckpt.CheckpointError, match="ok.pt is corrupt"):
        ckpt.load_weights(ok)


def test_the_password_is_nowhere_but_the_url_file(tmp_path, secret_pg):
    spec = tiny_spec("secret")  # one job: level 0, then imp's trunk levels 1 and 2
    spec["db"] = secret_pg  # in the spec too: the stored spec must lose it
    path = write_spec(tmp_path, spec)
    proc = subprocess.Popen(
        [*TP, "launch", str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO), "TP_DB_URL": secret_pg},
    )
    seen_running = False
    try:
        while proc.poll() is None:
            ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            assert SECRET not in ps, "the password shows in ps"
            seen_running |= "trainer.job" in ps
            time.sleep(0.5)
        out = proc.stdout.read()
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert seen_running and SECRET not in out
    url_files = grep_tree(tmp_path / "tp-runs", SECRET.encode())
    secrets_dir = tmp_path / "tp-runs" / "_jobs" / "secrets"
    assert url_files and all(p.startswith(str(secrets_dir)) for p in url_files), url_files
    for p in url_files:
        assert os.stat(p).st_mode & 0o077 == 0  # readable by its owner alone
    assert os.stat(secrets_dir).st_mode & 0o077 == 0
    st = tp("status", "secret", "--format", "json", "--db", secret_pg, cwd=tmp_path, check=True)
    assert SECRET not in st.stdout + st.stderr
    assert json.loads(st.stdout)["counts"] == {"COMPLETED": 2}
    eng = sa.create_engine(secret_pg.replace("postgresql://", "postgresql+psycopg://"))
    with eng.connect() as c:
        stored = json.dumps(c.execute(sa.text("select spec from sweeps")).scalar())
        dump = " ".join(
            str(r) for t in ("events", "jobs", "attempts") for r in c.execute(sa.text(f"select * from {t}")).all()
        )
    eng.dispose()
    assert SECRET not in stored and "***" in stored and SECRET not in dump


@pytest.mark.parametrize(
    "label, mutate, needle",
    [
        ("unreachable store", lambda s: s.__setitem__("db", "postgresql://u:p@127.0.0.1:1/x"), "127.0.0.1"),
        ("output_dir under a file", lambda s: s.__setitem__("output_dir", "spec.yaml/runs"), "cannot write there"),
        (
            "--supervise with another executor",
            lambda s: s.__setitem__("supervisor", {}),
            "--supervise with --executor debug",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_a_launch_that_exits_2_leaves_the_working_folder_as_it_was(tmp_path, label, mutate, needle):
    """A spec whose db: was unreachable exited 2 and left an empty tp-runs/ behind: every exit 2
    of launch is decided before a folder or a file is made (the output folder, the store)."""
    spec = tiny_spec("nothing_left")
    mutate(spec)
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    args = ["--executor", "debug"] if label.startswith("--supervise") else []
    proc = tp("launch", "spec.yaml", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_db_import_of_a_folder_that_is_no_output_folder_creates_no_store(tmp_path):
    proc = tp("db", "import", "nowhere", cwd=tmp_path)
    assert proc.returncode == 2 and "not a turboprune output folder" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []
