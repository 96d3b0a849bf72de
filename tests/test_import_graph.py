"""The house has no circles, not even through an import inside a function, and every import that
is deferred into a function says on its line why (docs/architecture.md). import-linter holds the
layers; these two hold what it does not see: a loop between two modules of one package, and an
import inside a function that nobody explained."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.sweeputil import REPO

PACKAGES = ("core", "db", "trainer", "slurm", "orchestrator", "cli", "turboprune")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            out[name] = path
    return out


def _under_type_checking(tree: ast.AST) -> set[int]:
    """Line numbers of imports under `if TYPE_CHECKING:`: for the type checker, never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for inner in ast.walk(sub):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        lines.add(inner.lineno)
    return lines


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules an import statement loads (the deepest known name of each)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".")
            parent = parts if is_package else parts[:-1]
            parent = parent[: len(parent) - (node.level - 1)]
            base = ".".join([*parent, *([base] if base else [])])
        names = [f"{base}.{a.name}" for a in node.names] + [base]
    out = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _under_type_checking(tree)
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in skip:
                for target in _imported(node, module, is_package, known):
                    # A package and its own modules: the package's __init__ loads its registry's
                    # members, and they take its shared names; that is how a registry fills.
                    related = target.startswith(module + ".") or module.startswith(target + ".")
                    if target != module and not related:
                        graph[module].add(target)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_through_others():
    assert _circles(_graph()) == []


def test_the_search_finds_a_circle():
    """The check itself can fail: a made-up loop through a deferred import is found."""
    graph = _graph()
    graph["core.errors"].add("core.methods")  # as if core/errors.py imported the registry
    graph["core.methods"].add("core.errors")
    assert ["core.errors", "core.methods"] in _circles(graph)


def _unexplained(path: Path) -> list[str]:
    """Imports inside a function whose line carries no comment saying why they are deferred."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    skip = _under_type_checking(tree)
    out = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in skip:
                if "#" not in lines[node.lineno - 1]:
                    out.append(f"{path.relative_to(REPO)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return out


def test_every_deferred_import_says_why():
    unexplained = [line for path in _modules().values() for line in _unexplained(path)]
    assert unexplained == [], "imports inside functions without a reason on their line:\n" + "\n".join(unexplained)
