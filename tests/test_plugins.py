"""Bring your own (docs/extending.md): a lab's pruning method (declared in a spec or published by an
installed package), model and data set by import path; their code in the identity of the levels
that use them and in the launch's snapshot; and every bad plugin failing early, with one line
naming the plugin, its file and the problem. The example plugin (examples/tp_example) is installed
in the test environment by scripts/bootstrap.sh."""

from __future__ import annotations

import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch
from torch import nn

from core import code as code_mod
from core import plugins as plugins_mod
from core.code import code_identity, lab_code, lab_packages, snapshot, snapshot_problem
from core.levels import plan_levels
from core.method_lookup import get_method
from orchestrator.plan.grid import plan_sweep
from orchestrator.plan.spec import SpecError, parse_spec
from tests.inprocess import dry_run_json, launch_here, level_ids, query_rows, status_json
from tests.sweeputil import REPO, launch_on_one_cpu, tiny_spec, tp, write_spec

EXAMPLE = REPO / "examples" / "tp_example"
MODEL = "tp_example.models:TinyCNN"
DATA = "tp_example.data:digits"


def example_spec(name: str, methods: list[str], **over) -> dict:
    """The example plugin's model and data set, one short epoch per level."""
    spec = tiny_spec(name, **over)
    spec["trainer"]["overrides"] = {
        "model": {"name": MODEL, "width": 4},
        "data": {"name": DATA, "batch_size": 128, "shift": 1},
        "optimizer.lr": 0.05,
        "schedule.epochs": 1,
        "prune.rate": 0.5,
    }
    spec["grid"] = {"method": methods, "sparsity": [0.5, 0.75], "seed": [0]}
    return spec


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    """Each test finds lab packages afresh, with its own analysis cache."""
    monkeypatch.setattr(code_mod, "CACHE_DIR", tmp_path / "code-cache")
    plugins_mod._LOCATED.clear()
    yield
    plugins_mod._LOCATED.clear()
    for name in [m for m in sys.modules if m.split(".")[0] in ("badlab", "goodlab")]:
        del sys.modules[name]


BADLAB = {
    "__init__.py": "",
    "broken.py": "import no_such_module_anywhere  # noqa\n\ndef score(model, ctx):\n    return {}\n",
    "crit.py": textwrap.dedent(
        """
        import torch

        def one_arg(model):
            return {}

        def wrong_shape(model, ctx):
            return {n: torch.zeros(3) for n in ctx.mask}

        def nan_scores(model, ctx):
            return {n: torch.full(m.shape, float("nan")) for n, m in ctx.mask.items()}

        def off_target(model, ctx):
            return {n: m.clone() for n, m in ctx.mask.items()}

        def exact(model, ctx):
            flat = torch.cat([m.reshape(-1) for m in ctx.mask.values()])
            keep = torch.zeros_like(flat)
            keep[flat.nonzero().squeeze(1)[: ctx.keep]] = True
            out, i = {}, 0
            for n, m in ctx.mask.items():
                out[n] = keep[i : i + m.numel()].view_as(m)
                i += m.numel()
            return out
        """
    ),
    "models.py": "from torch import nn\n\ndef Net(num_classes):\n    return nn.Linear(4, num_classes)\n",
}


def _lab(tmp_path: Path, monkeypatch, files: dict[str, str] = BADLAB, name: str = "badlab") -> Path:
    """A local lab package (on the import path, no distribution) in tmp_path/lab."""
    root = tmp_path / "lab"
    for rel, text in files.items():
        (root / name / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / name / rel).write_text(text)
    monkeypatch.syspath_prepend(str(root))
    return root


def _declared(name: str, **decl) -> dict:
    return {name: {"schedule": "iterative", **decl}}


# ---- declarations ------------------------------------------------------------------------------
def test_the_example_method_comes_from_its_entry_point():
    info = get_method("taylor")
    assert (info.schedule, info.rewind, info.criterion) == ("iterative", "init", "taylor")
    step = plan_levels("taylor", _config(), [0.5]).levels[1].step
    assert step["criterion"] == "taylor"
    assert step["plugin"]["fn"] == "tp_example.criteria:taylor_score"
    assert step["plugin"]["reads_data"] and step["plugin"]["batches"] == 2


def _config(method: str = "taylor", **prune) -> dict:
    from core.config import resolve

    return resolve("digits_mlp", {"method": method, "seed": 0, "prune.rate": 0.5, **prune})


def test_a_declared_method_shares_level_0_and_its_params_name_its_levels():
    parse_spec({**tiny_spec("decl"), "methods": _declared("mine", score="goodlab.x:f", params={"k": 1})})
    mine, imp = plan_levels("mine", _config("mine"), [0.5]), plan_levels("imp", _config("imp"), [0.5])
    assert mine.levels[0].level_id == imp.levels[0].level_id  # dense training from init: shared
    assert mine.levels[1].level_id != imp.levels[1].level_id
    parse_spec({**tiny_spec("decl"), "methods": _declared("mine", score="goodlab.x:f", params={"k": 2})})
    again = plan_levels("mine", _config("mine"), [0.5])
    assert again.levels[1].level_id != mine.levels[1].level_id  # its params are in its ids
    assert again.levels[1].step["plugin"]["params"] == {"k": 2}


def test_controls_work_on_a_declared_iterative_method():
    spec = {
        **tiny_spec("ctl"),
        "methods": {
            **_declared("mine", score="goodlab.x:f"),
            "mine_reinit": {"schedule": "control", "base": "mine", "control": "reinit"},
            "mine_random": {"schedule": "control", "base": "mine", "control": "layerwise_random"},
        },
    }
    spec["grid"] = {"method": ["mine", "mine_reinit", "mine_random"], "sparsity": [0.5], "seed": [0]}
    plan = plan_sweep(parse_spec(spec), reuse="any")
    by = {r.method: r for r in plan.runs}
    mine_levels = set(by["mine"].levels)
    for control in ("mine_reinit", "mine_random"):
        served = plan.levels[by[control].points[0].level_id]
        assert served.kind == "control" and served.parent in mine_levels
    assert plan.levels[by["mine_reinit"].points[0].level_id].step["rewind"] == "reinit"
    with pytest.raises(SpecError, match="base 'imp_lrr2' is unknown"):
        parse_spec(
            {**tiny_spec("c2"), "methods": {"x": {"schedule": "control", "base": "imp_lrr2", "control": "reinit"}}}
        )


@pytest.mark.parametrize(
    "decl, message",
    [
        (
            {"schedule": "iterative", "score": "a.b:c", "scor": 1},
            "methods.bad: scor: unknown key; known: name, schedule",
        ),
        ({"schedule": "iterative"}, "give exactly one of score"),
        ({"schedule": "iterative", "score": "a.b"}, "is not an import path"),
        ({"schedule": "oneshot", "score": "a.b:c", "rewind": "none"}, "rewind must be init"),
        ({"schedule": "sometimes", "score": "a.b:c"}, "methods.bad: schedule: Input should be"),
        (
            {"schedule": "iterative", "score": "a.b:c", "params": {"x": {"y": 1}}},
            "methods.bad: params: x: {.y.: 1} is not a number",
        ),
    ],
)
def test_a_declaration_with_unknown_keys_or_bad_values_is_refused(decl, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        parse_spec({**tiny_spec("bad"), "methods": {"bad": decl}})


def test_a_declaration_may_not_take_a_built_in_name():
    with pytest.raises(SpecError, match="built-in method or criterion has that name"):
        parse_spec({**tiny_spec("bad"), "methods": _declared("imp", score="a.b:c")})


# ---- code identity -----------------------------------------------------------------------------
def _tree_with_example(tmp_path: Path) -> Path:
    """A copy of core/ and trainer/ with the example plugin's package beside them (a snapshot's
    layout: the identity looks for lab packages under its root first)."""
    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "tree"
    for pkg in ("core", "trainer"):
        shutil.copytree(REPO / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        EXAMPLE / "src" / "tp_example", root / "tp_example", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


def _example_codes(root: Path) -> dict[str, str]:
    """The codes of the example sweep's levels (taylor, imp, random on the lab's model and data)."""
    code_mod._CACHE.pop(str(root.resolve()), None)
    ident = code_identity(root)
    out = {}
    for method in ("taylor", "imp", "random"):
        cfg = _config(method)
        cfg["model"] = {"name": MODEL, "width": 4}
        cfg["data"] = {"name": DATA, "batch_size": 128}
        for lv in plan_levels(method, cfg, [0.5, 0.75], ident).levels:
            out[f"{method} {lv.depth}"] = lv.code
    return out


def _edited(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    assert old in path.read_text(), (rel, old)
    path.write_text(path.read_text().replace(old, new, 1))


def test_editing_the_lab_criterion_moves_exactly_its_levels_code(tmp_path):
    before = _example_codes(_tree_with_example(tmp_path))
    edited = _tree_with_example(tmp_path)
    _edited(edited, "tp_example/criteria.py", ".abs()", ".abs() * 2")
    after = _example_codes(edited)
    moved = {k for k in before if before[k] != after[k]}
    assert moved == {"taylor 1", "taylor 2"}, moved


def test_editing_the_lab_model_or_data_moves_every_level_on_them(tmp_path):
    before = _example_codes(_tree_with_example(tmp_path))
    for rel, old, new in [
        ("tp_example/models.py", "nn.ReLU(),", "nn.ReLU(inplace=False),"),
        ("tp_example/data.py", "% 5 == 4", "% 5 == 3"),
    ]:
        edited = _tree_with_example(tmp_path)
        _edited(edited, rel, old, new)
        after = _example_codes(edited)
        assert all(before[k] != after[k] for k in before), rel


def test_docstrings_of_the_lab_and_turboprunes_vit_move_nothing(tmp_path):
    before = _example_codes(_tree_with_example(tmp_path))
    edited = _tree_with_example(tmp_path)
    _edited(edited, "tp_example/criteria.py", '"""One score per', '"""Edited: one score per')
    _edited(
        edited,
        "trainer/models/vit.py",
        "return",
        "return  # edited\n        return",
    )
    assert _example_codes(edited) == before
    vit = _tree_with_example(tmp_path)
    text = (vit / "trainer/models/vit.py").read_text()
    (vit / "trainer/models/vit.py").write_text(text + "\n\nEDITED = 1\n")
    assert _example_codes(vit) == before  # the lab's model counts no model family file


def test_an_installed_lab_counts_its_distribution_version(tmp_path, monkeypatch):
    lab = _lab(tmp_path, monkeypatch)
    monkeypatch.setattr(plugins_mod, "_installed_dirs", lambda: [lab.resolve()])
    monkeypatch.setattr(plugins_mod, "_distribution", lambda top: ("badlab-dist", "1.2.3"))
    assert lab_code("badlab.crit:exact") == "badlab-dist==1.2.3"
    assert lab_packages(["badlab.crit:exact"]) == []  # stays where it is: not copied


# ---- snapshots ---------------------------------------------------------------------------------
def test_the_snapshot_carries_local_lab_packages_and_checks_them(tmp_path):
    labs = lab_packages([MODEL, "tp_example.criteria:taylor_score"])
    assert [p.name for p in labs] == ["tp_example"]
    snap = snapshot(tmp_path / "out", REPO, labs=labs)
    assert (snap / "tp_example" / "criteria.py").read_bytes() == (labs[0] / "criteria.py").read_bytes()
    assert snapshot_problem(snap) is None
    ident = code_identity(snap)
    assert ident.lab("tp_example.criteria:taylor_score") == lab_code("tp_example.criteria:taylor_score")
    without = snapshot(tmp_path / "out", REPO)
    assert without != snap and not (without / "tp_example").exists()
    target = snap / "tp_example" / "criteria.py"
    target.chmod(0o644)
    target.write_text(target.read_text() + "\nX = 1\n")
    assert "hash to" in str(snapshot_problem(snap))
    (without / "other_lab").mkdir()
    (without / "other_lab" / "__init__.py").write_text("")
    assert "holds what no snapshot holds: other_lab" in str(snapshot_problem(without))


# ---- bad plugins: at launch (exit 2) ---------------------------------------------------------------
def _plan(tmp_path, methods: dict, grid_methods: list[str], model=None, data=None):
    spec = {**tiny_spec("bad"), "methods": methods, "output_dir": str(tmp_path / "runs")}
    spec["grid"] = {"method": grid_methods, "sparsity": [0.5], "seed": [0]}
    if model:
        spec["trainer"]["overrides"]["model"] = model
        del spec["trainer"]["overrides"]["model.hidden"]
    if data:
        spec["trainer"]["overrides"]["data"] = data
        del spec["trainer"]["overrides"]["data.batch_size"]
    return plan_sweep(parse_spec(spec), reuse="any")


@pytest.mark.parametrize(
    "methods, model, data, message",
    [
        (
            _declared("m", score="badlab.broken:score"),
            None,
            None,
            r"pruning method 'm': scores function 'badlab.broken:score': importing badlab.broken "
            r"\(.*badlab/broken.py\) failed: ModuleNotFoundError: No module named 'no_such_module_anywhere'",
        ),
        (
            _declared("m", score="badlab.crit:missing"),
            None,
            None,
            r"pruning method 'm': scores function 'badlab.crit:missing': badlab.crit \(.*badlab/crit.py\) "
            r"has no 'missing'",
        ),
        (
            _declared("m", masks="badlab.crit:one_arg"),
            None,
            None,
            r"pruning method 'm': masks function 'badlab.crit:one_arg' \(.*badlab/crit.py\): its signature "
            r"\(model\) does not take \(model, ctx\)",
        ),
        (
            {},
            {"name": "badlab.models:Net", "width": 3},
            None,
            r"model 'badlab.models:Net' \(.*badlab/models.py\): its signature \(num_classes\) does not take "
            r"keyword arguments num_classes, input_shape, width",
        ),
        (
            {},
            None,
            {"name": "badlab.nothere:make", "batch_size": 8},
            r"data set 'badlab.nothere:make': importing badlab.nothere \(.*badlab\) failed: ModuleNotFoundError",
        ),
    ],
)
def test_bad_plugins_are_named_at_launch(tmp_path, monkeypatch, methods, model, data, message):
    from orchestrator.plan.preflight import plugin_problems

    _lab(tmp_path, monkeypatch)
    plan = _plan(tmp_path, methods, list(methods) or ["dense"], model, data)
    problems = plugin_problems(plan)
    assert len(problems) == 1 and __import__("re").match(message, problems[0]), problems


def test_a_missing_lab_package_stops_even_a_dry_run(tmp_path):
    spec = {**tiny_spec("nolab"), "methods": _declared("m", score="nolab_anywhere.x:f")}
    spec["grid"]["method"] = ["m"]
    proc = tp("launch", str(write_spec(tmp_path, spec)), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no package 'nolab_anywhere' on the import path" in proc.stderr


def test_launch_exits_2_on_a_wrong_signature_before_making_anything(tmp_path, monkeypatch):
    lab = _lab(tmp_path, monkeypatch)
    spec = {**tiny_spec("badsig"), "methods": _declared("m", masks="badlab.crit:one_arg")}
    spec["grid"]["method"] = ["m"]
    env = {"PYTHONPATH": f"{REPO}:{lab}"}
    proc = tp("launch", str(write_spec(tmp_path, spec)), cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "masks function 'badlab.crit:one_arg'" in proc.stderr and "does not take (model, ctx)" in proc.stderr
    assert not (tmp_path / "tp-runs").exists() and not (tmp_path / "tp-results.db").exists()


# ---- bad plugins: in the trainer -----------------------------------------------------------------------
def _prune_with(fn: str, returns: str, density: float = 0.5):
    from trainer.pruning.methods import PruneContext
    from trainer.pruning.plugin import prune_plugin

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if n.endswith("weight")}
    block = {
        "fn": fn,
        "returns": returns,
        "params": {},
        "reads_data": False,
        "reads_weights": True,
        "scope": "global",
    }
    ctx = PruneContext(cfg={"criterion": "m", "plugin": block}, generator=torch.Generator().manual_seed(0))
    return prune_plugin(model, mask, density, ctx)


@pytest.mark.parametrize(
    "fn, returns, message",
    [
        ("badlab.crit:wrong_shape", "scores", r"scores of 0.weight have shape \(3,\), the weight \(6, 4\)"),
        ("badlab.crit:nan_scores", "scores", r"NaN scores for 0.weight"),
        ("badlab.crit:off_target", "masks", r"its mask keeps 42 weights; the target is 21 \(density 0.5\)"),
    ],
)
def test_bad_results_fail_the_level_with_one_line(tmp_path, monkeypatch, fn, returns, message):
    from core.plugins import PluginError

    _lab(tmp_path, monkeypatch)
    with pytest.raises(PluginError) as err:
        _prune_with(fn, returns)
    text = str(err.value)
    assert "\n" not in text and f"pruning method 'm': {returns} function {fn!r}" in text
    assert "badlab/crit.py" in text and __import__("re").search(message, text), text


def test_a_mask_on_target_is_taken(tmp_path, monkeypatch):
    _lab(tmp_path, monkeypatch)
    new = _prune_with("badlab.crit:exact", "masks")
    assert sum(int(m.sum()) for m in new.values()) == 21


@pytest.mark.slow
def test_a_bad_score_fails_its_job_as_an_error_not_retried(tmp_path, monkeypatch):
    """A lab package outside the checkout, carried by the snapshot into the job, whose scores are
    NaN: the job is FAILED, class ERROR (the supervisor does not retry it), with one line naming
    the plugin, its file and the problem."""
    lab = _lab(tmp_path, monkeypatch)
    spec = {**tiny_spec("nan"), "methods": _declared("nanny", score="badlab.crit:nan_scores")}
    spec["grid"] = {"method": ["nanny"], "sparsity": [0.5], "seed": [0]}
    proc = tp("launch", str(write_spec(tmp_path, spec)), cwd=tmp_path, env={"PYTHONPATH": f"{REPO}:{lab}"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert any((p / "badlab" / "crit.py").exists() for p in (tmp_path / "tp-runs" / "_code").iterdir())
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'tp-results.db'}")
    with eng.connect() as c:
        rows = c.execute(sa.text("select state, failure, message from jobs where state = 'FAILED'")).all()
    eng.dispose()
    assert len(rows) == 1 and rows[0].failure == "ERROR", rows
    assert "PluginError: pruning method 'nanny': scores function 'badlab.crit:nan_scores' (" in rows[0].message
    assert "/badlab/crit.py): NaN scores for" in rows[0].message


# ---- data: two ranks see what one does ------------------------------------------------------------
def test_a_lab_data_set_is_split_over_ranks_as_one_rank_reads_it():
    from trainer.data import LoaderContext, build_loaders

    cfg = {"name": DATA, "batch_size": 64, "shift": 1}
    one = build_loaders(cfg, LoaderContext(seed=3))
    two = [build_loaders(cfg, LoaderContext(rank=r, world_size=2, seed=3)) for r in (0, 1)]
    assert (one.num_classes, one.input_shape, one.train_size) == (10, (1, 8, 8), 1438)
    for epoch in (0, 1):
        for loader in (one, *two):
            loader.train.set_epoch(epoch)
        whole = list(one.train)
        parts = list(zip(*(list(t.train) for t in two)))
        assert len(whole) == len(parts) == 1438 // 64
        for (x, y), ((x0, y0), (x1, y1)) in zip(whole, parts):
            assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))
    one.train.set_epoch(0)
    again = next(iter(one.train))[0]
    one.train.set_epoch(1)
    assert not torch.equal(again, next(iter(one.train))[0])  # another order (and shifts) each epoch
    test = torch.cat([x for x, _ in one.test])
    assert test.shape == (359, 1, 8, 8)


# ---- the example, end to end ---------------------------------------------------------------------
@pytest.mark.slow
def test_the_example_plugin_runs_a_sweep_beside_imp(tmp_path):
    spec = example_spec("example", ["taylor", "imp", "random"], output_dir=str(tmp_path / "tp-runs"))
    path = write_spec(tmp_path, spec)
    assert dry_run_json(path, tmp_path)["level_trainings"] == 7  # level 0 shared by the three methods
    launch_here(path, tmp_path)
    status = status_json("example", tmp_path)
    assert status["counts"] == {"COMPLETED": 3}, status
    rows = query_rows("example", tmp_path)
    assert {r["method"] for r in rows} == {"taylor", "imp", "random"}
    assert all(r["test_acc"] is not None for r in rows)
    table = tp("status", "example", cwd=tmp_path, check=True).stdout  # the CLI draws a plugin's method
    assert "taylor" in table
    tp("plot", "example", "--out", str(tmp_path / "p.png"), cwd=tmp_path, check=True)
    tp("report", "example", "--out", str(tmp_path / "r.html"), cwd=tmp_path, check=True)
    assert "taylor" in (tmp_path / "r.html").read_text()
    ids = level_ids("example", tmp_path)
    again = launch_here(path, tmp_path).result  # all done: nothing to train
    assert again is not None and not again.submitted and not again.waiting  # "nothing to submit"
    assert level_ids("example", tmp_path) == ids


@pytest.mark.slurm
def test_the_example_plugin_survives_a_requeue_on_slurm(tmp_path, slurm_cluster):
    """Its criterion, model and data set on the dev cluster, `scontrol requeue` in the middle of
    the Taylor level: the job comes back, resumes from its checkpoint, and ends bit-identical to
    an uninterrupted run on one CPU (the Slurm job's one CPU: thread counts change float sums)."""
    import subprocess

    from tests.sweeputil import first_run_ended, run_progress, same_levels, wait_for
    from tests.test_e2e_slurm import interrupt_held

    spec = example_spec("plugin_requeue", ["taylor"])
    spec["grid"]["sparsity"] = [0.5]  # level 0, then Taylor's level 1
    spec["trainer"]["overrides"].update(
        {"schedule.epochs": 3, "data": {"name": DATA, "batch_size": 16, "shift": 1}}
    )
    ref = tmp_path / "ref"
    ref.mkdir()
    launch_on_one_cpu(ref, spec)
    run = tmp_path / "run"
    run.mkdir()
    slow = {"TP_STEP_SLEEP_S": "0.01"}  # a level outlasts the freeze below; sleeping changes no number
    tp("launch", str(write_spec(run, spec)), "--executor", "slurm", cwd=run, env=slow, check=True)
    job_id = status_json("plugin_requeue", run)["runs"][0]["job_id"]
    wait_for(lambda: run_progress(run) >= (1, 1), 300, "the Taylor level under way under Slurm", poll=0.05)
    interrupt_held(run, lambda: subprocess.run(["scontrol", "requeue", job_id], check=True))
    done = first_run_ended("plugin_requeue", run, 400, "the requeued job to finish")
    assert done["state"] == "COMPLETED" and done["attempts"] == 2, done
    detail = status_json(done["run_id"], run)
    stopped = [e for e in detail["events"] if e["to"] == "PREEMPTED"]
    assert stopped and "trunk 1" in stopped[0]["message"], detail["events"]
    assert same_levels(run / "tp-runs", ref / "tp-runs", level_ids("plugin_requeue", run))
