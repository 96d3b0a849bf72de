"""One error root (core/errors.py): every error class of the project derives from TurboPruneError,
as bad input (exit 2) or as a failure (exit 1), and `tp-sweep` maps them to exit codes in one
place. A class that keeps its builtin base is still caught as one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from core.errors import CheckFailed, ConfigError, Failure, NotFound, OutageError, TurboPruneError, UserError
from tests.sweeputil import REPO

PACKAGES = ("core", "db", "trainer", "slurm", "orchestrator", "cli", "turboprune")
NOT_ERRORS = {
    "Stopped",  # trainer.level_trainer: a stop signal's control flow, not an error
}
ERRORISH = re.compile(r"(Error|Exception|Failed|Failure|NotFound|Refused|BadInput|BadFile|BadLevel)$")


def _error_classes() -> list[tuple[str, str]]:
    """(module, class) of every class whose name, or a base's, says it is an error."""
    out = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "migrations" in path.parts or path == REPO / "core" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.name not in NOT_ERRORS:
                    names = [node.name, *(ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases)]
                    if any(ERRORISH.search(n) for n in names):
                        module = ".".join(Path(path).relative_to(REPO).with_suffix("").parts)
                        out.append((module.removesuffix(".__init__"), node.name))
    return out


def test_the_kinds_and_their_exit_codes():
    assert UserError.exit_code == 2 and Failure.exit_code == 1
    assert issubclass(CheckFailed, Failure) and issubclass(OutageError, Failure)
    assert issubclass(NotFound, LookupError) and issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("module, name", [pytest.param(m, n, id=f"{m}.{n}") for m, n in _error_classes()])
def test_every_error_class_has_the_one_root(module, name):
    if module.startswith("trainer"):
        pytest.importorskip("torch")
    cls = getattr(__import__(module, fromlist=[name]), name)
    assert issubclass(cls, TurboPruneError), f"{module}.{name} is not a TurboPruneError"
    assert issubclass(cls, (UserError, Failure)), f"{module}.{name}: say whether it is bad input or a failure"


def test_main_maps_an_error_of_ours_to_its_exit_code(monkeypatch, capsys):
    import cli.tp_sweep as tp

    def boom(_a):
        raise CheckFailed("a checked file is damaged")

    monkeypatch.setattr(tp, "cmd_cancel", boom)
    assert tp.main(["cancel", "x"]) == 1
    assert "error: a checked file is damaged" in capsys.readouterr().err
