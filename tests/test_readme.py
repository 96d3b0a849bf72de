"""The examples of the README and of the docs (README.md, CONTRIBUTING.md, docs/*.md) do what they
say: every spec in them (a fenced yaml block with `name:` and `grid:`) plans with `launch
--dry-run`, a spec named like a shipped sweep is that sweep, and every `tp-sweep` command in their
fenced blocks parses (the search example's, copied and pasted, also runs its dry run). Planning
only, in this process: no training, a few seconds."""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml

from cli.tp_sweep import build_parser, main
from tests.sweeputil import REPO

DOCS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCKS = [b for doc in DOCS for b in re.findall(r"^```(\w*)\n(.*?)^```", doc.read_text(), re.S | re.M)]
SPECS = [
    data
    for lang, body in BLOCKS
    if lang == "yaml" and isinstance(data := yaml.safe_load(body), dict) and "name" in data and "grid" in data
]
COMMANDS = [
    line.split("#", 1)[0].strip()
    for _, body in BLOCKS
    for line in body.splitlines()
    if line.startswith("tp-sweep ")
]


def test_the_docs_have_their_examples():
    assert {s["name"] for s in SPECS} >= {"digits_example", "c10_groups", "digits_lr_search", "digits_wandb"}
    assert any(c.startswith("tp-sweep launch search.yaml") for c in COMMANDS)


def _tp(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["name"])
def test_every_spec_in_the_docs_plans(spec, tmp_path, monkeypatch, capsys):
    shipped = REPO / "sweeps" / f"{spec['name']}.yaml"
    if shipped.exists():  # the README's digits_lth trained another network than sweeps/digits_lth.yaml
        assert spec == yaml.safe_load(shipped.read_text()), f"the docs' {spec['name']} is not {shipped}"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    db = f"sqlite:///{tmp_path / 'tp-results.db'}"
    code, out, err = _tp(capsys, "launch", "spec.yaml", "--dry-run", "--format", "json", "--db", db)
    assert code == 0, err
    assert json.loads(out)["sweep"] == spec["name"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # a dry run creates nothing


@pytest.mark.parametrize("command", COMMANDS)
def test_every_tp_sweep_command_in_the_docs_parses(command):
    args = shlex.split(command)[1:]
    assert args[0] not in ("data", "cluster"), "parse these with their own modules' parsers"
    build_parser().parse_args(args)  # a bad flag or a missing argument exits 2


def test_the_search_example_copied_and_pasted_runs_its_dry_run(tmp_path, monkeypatch, capsys):
    (spec,) = (s for s in SPECS if "search" in s)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(spec))
    (command,) = (c for c in COMMANDS if c.startswith("tp-sweep launch search.yaml --dry-run"))
    code, out, err = _tp(capsys, *shlex.split(command)[1:], "--format", "json")
    assert code == 0, err
    assert json.loads(out)["search"]["cells"] == 1
