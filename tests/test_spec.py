"""Bad specs exit 2 with a message naming the field, and leave the store untouched."""

from __future__ import annotations

import json

import pytest

from orchestrator.plan.spec import SpecError, load_spec, parse_spec
from tests.sweeputil import tiny_spec, tp, write_spec

BAD = [
    ("missing name", lambda s: s.pop("name"), "name"),
    ("unknown method", lambda s: s["grid"].__setitem__("method", ["imp", "magic"]), "unknown method 'magic'"),
    ("sparsity 1.2", lambda s: s["grid"].__setitem__("sparsity", [0.5, 1.2]), "sparsity 1.2 is outside [0, 1)"),
    ("sparsity 1.0", lambda s: s["grid"].__setitem__("sparsity", [1.0]), "outside [0, 1)"),
    (
        "unknown trainer config",
        lambda s: s["trainer"].__setitem__("config", "nope"),
        "unknown trainer config 'nope'",
    ),
    ("unknown override", lambda s: s["trainer"]["overrides"].__setitem__("optimizer.lrr", 1), "optimizer.lrr"),
    ("unknown grid axis", lambda s: s["grid"].__setitem__("model.depth", [1, 2]), "model.depth"),
    ("bad executor", lambda s: s["executor"].__setitem__("kind", "k8s"), "executor.kind"),
    ("bad name", lambda s: s.__setitem__("name", "a b"), "name"),
    ("seed not int", lambda s: s["grid"].__setitem__("seed", [0.5]), "seed 0.5 is not an integer"),
    ("unknown top-level key", lambda s: s.__setitem__("grdi", {}), "grdi"),
    (
        "unknown model",
        lambda s: s["trainer"]["overrides"].__setitem__("model.name", "resnet7"),
        "model.name: unknown model 'resnet7'",
    ),
    (
        "unknown data set",
        lambda s: s["trainer"]["overrides"].__setitem__("data.name", "mnist"),
        "data.name: unknown data set 'mnist'",
    ),
    (
        "snip without data",
        lambda s: (
            s["grid"].__setitem__("method", ["snip"]),
            s["trainer"]["overrides"].__setitem__("prune.snip_batches", 0),
        ),
        "prune.snip_batches: 0 is below the minimum 1",
    ),
    (
        "imp_wr rewinds past the end",
        lambda s: s["grid"].__setitem__("method", ["imp_wr"]),
        "is not less than schedule.epochs",
    ),
    (
        "unreachable schedule",
        lambda s: s["trainer"]["overrides"].__setitem__("prune.rate", 0.0),
        "prune.rate: 0.0 is outside [0.01, 0.9]",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("label,mutate,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_exits_2_and_writes_nothing(tmp_path, label, mutate, needle):
    spec = tiny_spec("bad")
    mutate(spec)
    path = write_spec(tmp_path, spec)
    db = tmp_path / "store.db"
    proc = tp("launch", str(path), "--db", f"sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr.replace("\n", " ") or needle in " ".join(proc.stderr.split()), proc.stderr
    assert not db.exists(), "a bad spec must not create or touch the store"
    assert not (tmp_path / "tp-runs").exists()


def test_unreadable_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ngrid: [unclosed\n")
    proc = tp("launch", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "not valid YAML" in proc.stderr
    assert not (tmp_path / "tp-results.db").exists()


def test_missing_file(tmp_path):
    proc = tp("launch", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert proc.returncode == 2 and "cannot read spec" in proc.stderr


def test_scientific_floats_and_defaults(tmp_path):
    spec = tiny_spec("ok")
    spec["trainer"]["overrides"]["optimizer.weight_decay"] = "5e-4"  # as a YAML author writes it
    path = tmp_path / "ok.yaml"
    import yaml

    path.write_text(yaml.safe_dump(spec).replace("'5e-4'", "5e-4"))
    parsed = load_spec(path)
    assert parsed.trainer.overrides["optimizer.weight_decay"] == pytest.approx(5e-4)
    assert parsed.executor.kind == "local" and parsed.db is None


def test_dense_only_needs_no_sparsity():
    spec = tiny_spec("dense_only")
    spec["grid"] = {"method": ["dense"], "seed": [0, 1]}
    assert parse_spec(spec).grid["method"] == ["dense"]
    spec["grid"] = {"method": ["imp"], "seed": [0]}
    with pytest.raises(SpecError, match="grid.sparsity is required"):
        parse_spec(spec)


def test_dry_run_json(tmp_path):
    path = write_spec(tmp_path, tiny_spec("dry"))
    proc = tp("launch", str(path), "--dry-run", "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    # dense: 1 run (sparsity ignored); imp at rate 0.5: trunk levels 1 (0.5) and 2 (0.75) on top of
    # level 0, which it shares with dense -> 3 level trainings, in 1 job (one chain).
    assert {
        k: out[k]
        for k in (
            "sweep",
            "grid_points",
            "runs",
            "level_trainings",
            "levels_done",
            "levels_to_train",
            "naive_level_trainings",
            "epochs",
            "naive_epochs",
            "jobs",
        )
    } == {
        "sweep": "dry",
        "grid_points": 3,
        "runs": 2,
        "level_trainings": 3,
        "levels_done": 0,
        "levels_to_train": 3,
        "naive_level_trainings": 1 + 2 + 3,
        "epochs": 3,
        "naive_epochs": 6,
        "jobs": 1,
    }
    assert out["branches"].startswith("inline")
    assert not (tmp_path / "tp-results.db").exists()
