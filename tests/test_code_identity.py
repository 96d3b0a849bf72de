"""Code identity, rule by rule (core/code.py, docs/levels.md "Reuse and code"): every test edits a
copy of core/ and trainer/ the way one rule says and checks which levels' codes move. Each fails
if its rule is broken, both ways: what a level runs counts, what cannot change its weights does
not."""

from __future__ import annotations

import ast
import shutil
import tempfile
from pathlib import Path

import pytest

from core import code as code_mod
from core.code import CodeIdentity, code_hash, code_identity

REPO = Path(__file__).resolve().parents[1]
SNIP = {"criterion": "snip", "density": 0.5}
SYNFLOW = {"criterion": "synflow", "density": 0.5}
RANDOM = {"criterion": "random_uniform", "density": 0.5}
# (step, model) of the levels each test looks at
LEVELS = {
    "dense_mlp": (None, "mlp"),
    "snip_mlp": (SNIP, "mlp"),
    "synflow_mlp": (SYNFLOW, "mlp"),
    "random_mlp": (RANDOM, "mlp"),
    "dense_resnet20": (None, "resnet20"),
    "snip_resnet50": (SNIP, "resnet50"),
    "dense_vit": (None, "deit_tiny"),
    "snip_vit": (SNIP, "deit_tiny"),
}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(code_mod, "CACHE_DIR", tmp_path / "cache")


def _codes(root: Path) -> dict[str, str]:
    code_mod._CACHE.pop(str(root.resolve()), None)
    ident = code_identity(root)
    return {name: ident.for_step(step, model) for name, (step, model) in LEVELS.items()}


def _tree(tmp_path: Path) -> Path:
    root = Path(tempfile.mkdtemp(dir=tmp_path)) / "tree"
    for pkg in ("core", "trainer"):
        shutil.copytree(REPO / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _edit(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text()
    assert old in text, (rel, old)
    path.write_text(text.replace(old, new, 1))


def _moved(tmp_path: Path, rel: str, old: str, new: str) -> set[str]:
    root = _tree(tmp_path)
    before = _codes(root)
    _edit(root, rel, old, new)
    after = _codes(root)
    return {name for name in before if before[name] != after[name]}


ALL = set(LEVELS)


def test_docstrings_comments_and_formatting_do_not_count(tmp_path):
    root = _tree(tmp_path)
    before = _codes(root)
    _edit(root, "trainer/loop.py", '"""', '"""A docstring edit. ')
    _edit(root, "trainer/level_trainer.py", "    def run(self,", "    # a comment\n\n    def run(self,")
    _edit(root, "core/levels.py", '"""The level\'s id with no code', '"""Edited: the level\'s id with no code')
    _edit(root, "trainer/pruning/methods.py", "return mask\n", "return (mask)  # same code\n")
    assert _codes(root) == before


def test_the_training_code_counts_for_every_level(tmp_path):
    assert _moved(tmp_path, "trainer/loop.py", "import time", "import time\n_EDITED = 1") == ALL


def test_code_free_id_counts_for_every_level(tmp_path):
    """It seeds every random mask: reversing it once left a random level's code unchanged."""
    old = "    if level.code is None:\n        return level.level_id"
    assert _moved(tmp_path, "core/levels.py", old, old + "[::-1]") == ALL


def test_what_the_ids_hash_with_counts(tmp_path):
    old = "def canonical(obj: Any) -> Any:\n"
    assert _moved(tmp_path, "core/levels.py", old, old + "    obj = obj\n") == ALL


def test_the_planner_beside_them_does_not_count(tmp_path):
    old = "    info = get_method(method)\n    train = training_config(config)"
    assert _moved(tmp_path, "core/levels.py", old, "    _ = 1\n" + old) == set()


def test_a_new_import_of_the_core_counts_what_it_reaches(tmp_path):
    """Found from the imports, not from a list: the day the trainer calls the planner's
    prune_step, an edit of prune_step moves every level's code."""
    root = _tree(tmp_path)
    _edit(root, "trainer/loop.py", "import time\n", "import time\n\nfrom core.levels import prune_step\n")
    before = _codes(root)
    _edit(
        root,
        "core/levels.py",
        "    info = get_method(method)\n    crit = CRITERIA[info.criterion]\n",
        ("    info = get_method(method)\n    crit = CRITERIA[info.criterion]\n    _ = 1\n"),
    )
    assert {n for n, c in _codes(root).items() if c != before[n]} == ALL


def test_a_model_family_counts_for_its_models_only(tmp_path):
    moved = _moved(tmp_path, "trainer/models/vit.py", "import timm", "import timm  # noqa\n        _ = 1")
    assert moved == {"dense_vit", "snip_vit"}
    assert _moved(tmp_path, "trainer/models/small.py", "import math", "import math\n_ = 1") == {
        "dense_mlp",
        "snip_mlp",
        "synflow_mlp",
        "random_mlp",
    }


def test_shared_model_code_counts_for_every_level(tmp_path):
    assert _moved(tmp_path, "trainer/models/__init__.py", "cfg = dict(cfg)", "cfg = dict(cfg)\n    _ = 1") == ALL


def test_cost_metrics_after_training_do_not_count(tmp_path):
    assert _moved(tmp_path, "trainer/pruning/cost.py", "    total = sum(", "    _ = 1\n    total = sum(") == set()


def test_the_beton_writer_does_not_count(tmp_path):
    assert _moved(tmp_path, "trainer/data/write.py", "import numpy as np", "import numpy as np\n_ = 1") == set()
    assert _moved(tmp_path, "trainer/data/sources.py", "from __future__", "_ = 1\nfrom __future__") == set()


def test_provenance_and_logging_do_not_count(tmp_path):
    assert _moved(tmp_path, "trainer/provenance.py", "import json", "import json\n_ = 1") == set()
    assert _moved(tmp_path, "core/layout.py", "from __future__", "_ = 1\nfrom __future__") == set()


def test_a_criterion_s_files_count_for_its_levels(tmp_path):
    assert _moved(tmp_path, "trainer/pruning/synflow.py", "import copy", "import copy\n_ = 1") == {"synflow_mlp"}
    pruned = ALL - {"dense_mlp", "dense_resnet20", "dense_vit"}
    assert _moved(tmp_path, "trainer/pruning/methods.py", "import torch\n", "import torch\n_ = 1\n") == pruned
    # the density functions the pruners call, through trainer/pruning/methods.py
    assert (
        _moved(
            tmp_path,
            "core/density.py",
            "    return {n: density for n in shapes}",
            "    return {n: 1.0 * density for n in shapes}",
        )
        == pruned
    )
    # a definition nothing reaches does not
    assert (
        _moved(tmp_path, "core/density.py", "def uniform_densities(", "_ = 1\n\n\ndef uniform_densities(") == set()
    )


def test_model_families_name_the_registered_models():
    """MODEL_FAMILIES says which file builds each model: it must agree with the registry."""
    import inspect

    from trainer.models import MODELS

    for name, builder in MODELS.items():
        file = Path(inspect.getsourcefile(builder) or "").resolve().relative_to(REPO).as_posix()
        assert code_mod.FAMILY_OF.get(name) == file, name
    assert set(code_mod.FAMILY_OF) == set(MODELS)


def test_the_dump_is_pinned():
    """The hash of code is the hash of its syntax tree, dumped without positions or empty fields:
    pinned, so a Python release that dumps the same code otherwise fails here, not silently."""
    source = 'def f(x: int = 1, *a, **k) -> int:\n    """doc"""\n    return [x + i for i in a if i][0]\n'
    assert code_hash(ast.parse(source).body) == "fb2cfd53ac52b29c"
    assert code_hash(ast.parse(source.replace('"""doc"""', "# only a comment")).body) == "fb2cfd53ac52b29c"


def test_the_analysis_cache_gives_what_parsing_gives(tmp_path):
    root = _tree(tmp_path)
    first = code_identity(root)
    code_mod._CACHE.clear()
    assert any((tmp_path / "cache").rglob("*.json"))
    second = code_identity(root)
    assert second.files == first.files and second.groups == first.groups


def test_a_made_up_identity_groups_files_by_path():
    files = {
        "trainer/loop.py": "a" * 16,
        "trainer/models/vit.py": "b" * 16,
        "trainer/pruning/synflow.py": "c" * 16,
    }
    ident = CodeIdentity("x", files)
    other = CodeIdentity("x", {**files, "trainer/models/vit.py": "d" * 16})
    assert ident.for_step(None, "mlp") == other.for_step(None, "mlp")
    assert ident.for_step(None, "deit_tiny") != other.for_step(None, "deit_tiny")
