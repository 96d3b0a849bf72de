"""The identity of the code a level runs, and the code snapshots cluster jobs import.

Code identity. A level's numbers depend on its config (hashed into its id), on the libraries and
its data (recorded in its provenance, core/inputs.py) and on this project's code that runs while
it trains: what the trainer's entry point (trainer/job.py) imports, transitively, less what
cannot change a number (EXCLUDED: W&B logging, provenance, the cost metrics computed after
training, and the core's file layout, atomic writes and this module). Of the core, only the
definitions the trainer reaches count (code_free_id, which seeds every random mask, and
level_id, canonical... under it; get_criterion; the density functions the pruners call), never
the planner beside them. That code is split by what a change there can alter:

    training   what every level runs: the levels loop, the epoch loop, the data loaders, the
               optimizer, masks, checkpoints, the model registry, and the core definitions
               they reach
    pruning    each criterion's pruning files (CRITERION_FILES) and what only they reach
               (core/density.py's functions through trainer/pruning/methods.py)
    model      the model family file that builds the level's model (MODEL_FAMILIES) and what
               only it reaches: a ResNet level does not count models/vit.py

A level has code hash(training, its criterion's pruning groups, its model family's group);
level 0 has no pruning part. So fixing SynFlow's pruner changes the code of SynFlow's levels only,
fixing the data loader that of every level, editing vit.py that of ViT levels, and editing the
planner, the CLI, the store, the scheduler side, the beton writer or the docs that of none.

What a file counts is its code, not its text: the hash is of its syntax tree (ast) with every
docstring and bare string statement left out, dumped field by field without positions and without
empty fields (stable across Python patch versions, and across minor versions whose syntax trees
agree), so comments, blank lines, formatting and docstrings never count. Parsing costs about
0.1 s for the whole tree, so each file's analysis is cached by the hash of its bytes
(CACHE_DIR); the identity is then read in a few milliseconds.

Under `reuse: same-code` (docs/levels.md) the code is part of a level's id, so a level trained by
other code is never reused; under `reuse: any` it is recorded (provenance) and reported, not hashed.

Snapshots. A launch copies the packages its jobs import (SNAPSHOT_PACKAGES) into
OUTPUT/_code/<hash of their bytes>/, written whole into a temporary folder and renamed into place,
so a job never sees half a snapshot and launches of the same code share one; only its owner may
write it. Trainers of jobs, requeues and resumes put that folder first on their import path:
editing the checkout after a launch changes nothing for what it queued. Before that, the job
wrapper, running from the code that submitted it, checks the snapshot against its name
(check_snapshot: every file there hashed, anything else refused). Torch-free: the planner computes
ids from here.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from core.atomic import file_lock
from core.errors import CheckFailed
from core.plugins import PluginError, is_ref, locate, module_file, split_ref, top_of

ROOT = Path(__file__).resolve().parent.parent  # the folder holding core/, trainer/, ...

# Where a level's computation starts: the job's trainer process (torchrun runs this module).
ENTRY = "trainer/job.py"
# Never part of a level's code, nor followed for what they import: they cannot change a level's
# weights. What is recorded about a level, not how it is computed (provenance, W&B, hydra's entry
# point), the cost metrics computed on the final weights after they are saved (a fix there leaves
# the costs of levels trained before as they were recorded), and the core's file layout and
# checks, atomic writes and code identity (a bug there fails or loses a file, it never changes a
# number).
EXCLUDED = frozenset(
    {
        "trainer/__main__.py",
        "trainer/wandb_recorder.py",
        "trainer/provenance.py",
        "trainer/pruning/cost.py",
        "core/atomic.py",
        "core/code.py",
        "core/inputs.py",
        "core/layout.py",
    }
)
_COMMON_PRUNING = ("trainer/pruning/methods.py", "trainer/pruning/registry.py")
CRITERION_FILES: dict[str, tuple[str, ...]] = {
    "magnitude": _COMMON_PRUNING,
    "snip": _COMMON_PRUNING,
    "synflow": (*_COMMON_PRUNING, "trainer/pruning/synflow.py"),
    "random_erk": _COMMON_PRUNING,
    "random_balanced": _COMMON_PRUNING,
    "random_uniform": _COMMON_PRUNING,
    "reinit": _COMMON_PRUNING,
    "random_layerwise": _COMMON_PRUNING,
}
# A lab's criterion (a step with a `plugin` block, core/method_decl.py): the pruning files that run
# it, and the lab's own code (lab_code).
PLUGIN_CRITERION_FILES = (*_COMMON_PRUNING, "trainer/pruning/plugin.py")
PRUNING_FILES = tuple(sorted({f for files in (*CRITERION_FILES.values(), PLUGIN_CRITERION_FILES) for f in files}))
# Which file builds each model (its @register names; tests/test_code_identity.py checks this
# against trainer.models.MODELS). A model named nowhere here counts every family file.
MODEL_FAMILIES: dict[str, tuple[str, ...]] = {
    "trainer/models/small.py": ("mlp", "lenet"),
    "trainer/models/cifar_resnet.py": ("resnet20", "resnet32", "resnet56"),
    "trainer/models/torchvision_models.py": ("resnet18", "resnet50"),
    "trainer/models/vgg.py": ("vgg11_bn", "vgg16_bn", "vgg19_bn"),
    "trainer/models/vit.py": ("deit_tiny", "deit_small"),
}
FAMILY_OF = {name: path for path, names in MODEL_FAMILIES.items() for name in names}
# Files whose code joins a level's only when its step or model names them: the groups.
GROUP_FILES = (*PRUNING_FILES, *MODEL_FAMILIES)
_PACKAGES = ("core", "trainer")
# Each file's analysis, by the hash of its bytes and the Python that parsed it.
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "turboprune" / "code"
# Keyed by this module's bytes too: a change in how files are analysed never reads old analyses.
_ANALYSER = "py{}{}-{}".format(*sys.version_info[:2], hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12])
# What a snapshot of the packages jobs import holds: the trainer, its store recorder, the job
# wrapper, the core (and their data files: presets, migrations). The planner and the CLI stay out.
SNAPSHOT_PACKAGES = ("core", "trainer", "slurm", "db")
_DATA_SUFFIXES = (".py", ".yaml", ".ini", ".mako", ".sh", ".tmpl")
MANIFEST = "MANIFEST.json"
# A snapshot's modes, whatever the umask: only its owner may write it (under umask 002 the files
# were group-writable, so anyone of the group could change the code every later job runs).
FILE_MODE, DIR_MODE = 0o644, 0o755


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- code, not text --------------------------------------------------------------------------
def _is_doc(node: ast.AST) -> bool:
    """A docstring, or any other bare string statement: it computes nothing."""
    return isinstance(node, ast.Expr) and isinstance(getattr(node.value, "value", None), str)


def _dump(node: Any, out: list[str]) -> None:
    """The tree, field by field: no positions, no empty fields (None, []), no string statements.
    Python versions that add a field (type_params in 3.12) leave it empty for the same code, so
    the dump stays the same."""
    if isinstance(node, ast.AST):
        out.append(type(node).__name__ + "(")
        for name in node._fields:
            value = getattr(node, name, None)
            if value is None or (isinstance(value, list) and not value) or name == "kind":
                continue  # kind: the u of u"...": the same string
            out.append(name + "=")
            _dump(value, out)
            out.append(",")
        out.append(")")
    elif isinstance(node, list):
        out.append("[")
        for item in node:
            if not _is_doc(item):
                _dump(item, out)
                out.append(",")
        out.append("]")
    else:
        out.append(repr(node))


def code_hash(node: ast.AST | list[ast.stmt]) -> str:
    """The hash of code as Python reads it: comments, formatting and docstrings do not count."""
    out: list[str] = []
    _dump(node, out)
    return _short("".join(out))


def _binds(stmt: ast.stmt) -> list[str]:
    """The module-level names a statement defines."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in stmt.names]
    targets: list[ast.expr] = []
    if isinstance(stmt, ast.Assign):
        targets = list(stmt.targets)
    elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        targets = [stmt.target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[list[Any]]:
    """[module, names] of every import in `tree` (inside functions too), relative ones resolved;
    names is [] for `import module`."""
    out: list[list[Any]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend([a.name, []] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join([*parts[:keep], *([base] if base else [])])
            if base != "__future__":
                out.append([base, [a.name for a in node.names]])
    return out


def analyse(rel: str, source: bytes) -> dict[str, Any]:
    """A file's code hash, its imports, and (for the core) each top-level statement's names,
    hash, the module-level names it reads and its imports. JSON, so it can be cached."""
    tree = ast.parse(source)
    module = rel[: -len(".py")].replace("/", ".")
    is_package = module.endswith(".__init__")
    module = module.removesuffix(".__init__")
    out: dict[str, Any] = {"hash": code_hash(tree.body), "imports": _imports(tree, module, is_package)}
    if rel.startswith("core/"):
        stmts = []
        for stmt in tree.body:
            if _is_doc(stmt) or (isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"):
                continue
            reads = sorted({n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)})
            stmts.append(
                {
                    "names": _binds(stmt),
                    "hash": code_hash(stmt),
                    "reads": reads,
                    "imports": _imports(stmt, module, is_package),
                }
            )
        out["stmts"] = stmts
    return out


def _analysed(rel: str, source: bytes) -> dict[str, Any]:
    """analyse(), through the cache (a file's analysis is a function of its bytes and of the
    Python that parses it); a cache that cannot be read or written is passed by."""
    key = hashlib.sha256(rel.encode() + b"\0" + source).hexdigest()
    path = CACHE_DIR / _ANALYSER / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    out = analyse(rel, source)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(out))
        os.replace(tmp, path)
    except OSError:
        pass
    return out


def _core_units(rel: str, info: dict[str, Any], names: Iterable[str] | None) -> list[str]:
    """The units of core file `rel` that define `names` (None: all of it, a whole-module
    import). A unit is `path:name[,name...]` (one top-level statement), `path:*` for the
    statements that define nothing (they run on import)."""
    out = []
    wanted = None if names is None else set(names)
    for stmt in info["stmts"]:
        if not stmt["names"]:
            out.append(f"{rel}:*")
        elif wanted is None or wanted & set(stmt["names"]):
            out.append(f"{rel}:{','.join(stmt['names'])}")
    return out


def _graph(base: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Every unit a level's computation may run (from ENTRY, through every import, less
    EXCLUDED) with its hash, and the edges: what each unit imports or reads."""
    sources: dict[str, dict[str, Any]] = {}

    def info(rel: str) -> dict[str, Any] | None:
        if rel not in sources:
            path = base / rel
            sources[rel] = _analysed(rel, path.read_bytes()) if path.is_file() else {}
        return sources[rel] or None

    def module_file(module: str) -> str | None:
        if module.split(".")[0] not in _PACKAGES:
            return None
        for rel in (module.replace(".", "/") + ".py", module.replace(".", "/") + "/__init__.py"):
            if info(rel) is not None:
                return rel
        return None

    def targets(imports: list[list[Any]]) -> set[str]:
        """The units these imports run: trainer files whole, the core's named definitions."""
        out: set[str] = set()
        for module, names in imports:
            parts = module.split(".")
            for i in range(1, len(parts)):  # a submodule's packages run first
                pkg = module_file(".".join(parts[:i]))
                if pkg is not None and pkg.startswith("trainer/"):
                    out.add(pkg)
            rel = module_file(module)
            if rel is None:
                continue
            subs = [n for n in names if module_file(f"{module}.{n}") is not None]
            if rel.startswith("trainer/"):
                out.add(rel)
            else:
                own = [n for n in names if n not in subs]
                out.update(_core_units(rel, sources[rel], own if names else None))
            for n in subs:
                sub = module_file(f"{module}.{n}")
                assert sub is not None
                out.update([sub] if sub.startswith("trainer/") else _core_units(sub, sources[sub], None))
        return {u for u in out if u.split(":")[0] not in EXCLUDED}

    files: dict[str, str] = {}
    edges: dict[str, set[str]] = {}
    todo = [ENTRY]
    while todo:
        unit = todo.pop()
        if unit in files:
            continue
        rel, _, names = unit.partition(":")
        data = info(rel)
        if data is None:
            continue
        if not names:  # a trainer file
            files[unit], edges[unit] = data["hash"], targets(data["imports"])
        else:  # a core statement: what it imports, and the module's definitions it reads
            stmts = [s for s in data["stmts"] if (",".join(s["names"]) or "*") == names]
            files[unit] = _short(" ".join(s["hash"] for s in stmts))
            reads = {r for s in stmts for r in s["reads"]}
            local = {u for u in _core_units(rel, data, reads) if not u.endswith(":*")}
            edges[unit] = (local | targets([i for s in stmts for i in s["imports"]])) - {unit}
        todo.extend(sorted(edges[unit] - files.keys()))
    return files, edges


def _reach(roots: Iterable[str], edges: dict[str, set[str]], stop: Iterable[str]) -> set[str]:
    """The units reachable from `roots`, not entering `stop`."""
    stop = set(stop)
    seen: set[str] = set()
    todo = [r for r in roots if r in edges]
    while todo:
        unit = todo.pop()
        if unit in seen:
            continue
        seen.add(unit)
        todo.extend(u for u in edges.get(unit, ()) if u not in seen and u not in stop)
    return seen


@dataclass(frozen=True)
class CodeIdentity:
    """The project's code at `root`, unit by unit (code hashes: a trainer file, or one top-level
    definition of the core), grouped by what a level needs, and the codes of levels."""

    root: str
    files: dict[str, str] = field(repr=False)  # unit -> hash of its code
    # "training" -> its units; a group file (GROUP_FILES) -> its units. None (a made-up identity):
    # every file in files that is no group file is training, and each group file its own group.
    groups: dict[str, tuple[str, ...]] | None = field(default=None, repr=False, compare=False)

    def _group(self, paths: Iterable[str]) -> str:
        return _short("\n".join(f"{p} {self.files.get(p, '-')}" for p in sorted(paths)))

    @cached_property
    def _members(self) -> dict[str, tuple[str, ...]]:
        if self.groups is not None:
            return self.groups
        members: dict[str, tuple[str, ...]] = {f: (f,) for f in GROUP_FILES if f in self.files}
        members["training"] = tuple(p for p in self.files if p not in GROUP_FILES)
        return members

    @cached_property
    def training(self) -> str:
        """The code every level runs."""
        return self._group(self._members["training"])

    @cached_property
    def _by_step(self) -> dict[tuple[str | None, ...], str]:
        # Computed once per criterion and model: a 10,000-point plan asks for 32,000 levels'
        # codes, and hashing the units' names each time was a fifth of plan_sweep.
        return {}

    def for_step(self, step: dict[str, Any] | None, model: str | None, data: str | None = None) -> str:
        """The code of a level with this pruning step (None: dense training from init), model
        (the config's model.name; a name no family lists counts every family file) and data set
        (data.name). A lab's criterion, model or data set (an import path) counts its own code
        (lab_code) and no model family file."""
        criterion = str(step.get("criterion")) if step else None
        block = step.get("plugin") if step else None
        fn = str(block.get("fn")) if isinstance(block, dict) else None
        key = (criterion, model, data, fn)
        if key not in self._by_step:
            if fn is not None:
                groups = list(PLUGIN_CRITERION_FILES)
            else:
                groups = list(CRITERION_FILES.get(criterion, PRUNING_FILES)) if criterion else []
            if not is_ref(model):  # a lab's model is built by its own code alone
                groups += [FAMILY_OF[model]] if model in FAMILY_OF else list(MODEL_FAMILIES)
            units = {u for g in groups for u in self._members.get(g, ())}
            code = _short(f"{self.training} {self._group(units)}")
            labs = sorted({self.lab(r) for r in (fn, model, data) if r is not None and is_ref(r)})
            self._by_step[key] = _short(f"{code} lab {' '.join(labs)}") if labs else code
        return self._by_step[key]

    def lab(self, ref: str) -> str:
        """The identity of a lab's code behind `ref` (core/plugins.py): looked for under this
        identity's root first (a snapshot's copy), else on the import path."""
        return lab_code(ref, self.root)

    @property
    def sources(self) -> str:
        """All of it: the identity of the whole tree the levels' codes come from."""
        return self._group(list(self.files))


def lab_code(ref: str, root: str | os.PathLike | None = None) -> str:
    """The code a lab's callable `ref` runs, without importing it: for a local or editable
    package, the hash of its module's file, the modules it imports from its own top-level package
    (transitively, inside functions too) and the `__init__.py` of every package on the way, each
    file by its syntax tree as the trainer's files are (`analyse`), by path relative to the
    package's parent (so a snapshot's copy has the identity of its source); for a package
    installed from a wheel, its distribution's name and version. A PluginError when the
    package cannot be found."""
    located = locate(top_of(ref), root)
    if located.distribution is not None:
        name, version = located.distribution
        return f"{name}=={version}"
    base = located.path.parent
    hashes: dict[str, str] = {}
    todo = [split_ref(ref)[0]]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # its packages run first
            path = module_file(located, ".".join(parts[:i]))
            if path is None:
                if i == len(parts) and module == split_ref(ref)[0]:
                    raise PluginError(f"{ref!r}: no module {module} in {located.path}")
                continue
            rel = path.relative_to(base).as_posix()
            if rel in hashes:
                continue
            info = _analysed(rel, path.read_bytes())  # never core/: a lab package has another name
            hashes[rel] = info["hash"]
            for target, names in info["imports"]:
                if target.split(".")[0] != located.top:
                    continue
                todo.append(target)
                todo.extend(f"{target}.{n}" for n in names if module_file(located, f"{target}.{n}") is not None)
    return _short("\n".join(f"{rel} {h}" for rel, h in sorted(hashes.items())))


_CACHE: dict[str, CodeIdentity] = {}


def code_identity(root: str | os.PathLike | None = None) -> CodeIdentity:
    """The identity of the code under `root` (default: where this module was imported from, which
    for a job is its snapshot). Read once per process: the files a level runs, a few milliseconds
    (their analyses cached by content; about 0.1 s to parse them all when none is)."""
    base = Path(root or ROOT).resolve()
    if str(base) not in _CACHE:
        files, edges = _graph(base)
        training = _reach([ENTRY], edges, GROUP_FILES)
        groups = {"training": tuple(sorted(training))}
        for path in GROUP_FILES:
            groups[path] = tuple(sorted(_reach([path], edges, set(GROUP_FILES) - {path}) - training))
        _CACHE[str(base)] = CodeIdentity(str(base), files, groups)
    return _CACHE[str(base)]


# ---- where the code came from ----------------------------------------------------------------
def git_info(root: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """{commit, diff}: the checkout's commit and a hash of its uncommitted changes to the
    snapshot's packages (tracked edits and untracked files; None when clean). None outside a
    git checkout, or where git is missing. A snapshot answers from its manifest."""
    base = Path(root or ROOT).resolve()
    manifest = base / MANIFEST
    if manifest.exists():
        try:
            return json.loads(manifest.read_text()).get("git")
        except (OSError, ValueError):
            return None
    if not (base / ".git").exists():
        return None
    try:

        def git(*args: str) -> bytes:
            return subprocess.run(
                ["git", "-C", str(base), *args], capture_output=True, check=True, timeout=30
            ).stdout

        commit = git("rev-parse", "HEAD").decode().strip()
        diff = git("diff", "HEAD", "--", *SNAPSHOT_PACKAGES)
        untracked = git("ls-files", "--others", "--exclude-standard", "--", *SNAPSHOT_PACKAGES).split()
        h = hashlib.sha256(diff)
        for name in sorted(untracked):
            p = base / name.decode()
            if p.is_file():
                h.update(name + b"\0" + p.read_bytes())
        dirty = bool(diff.strip() or untracked)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "diff": h.hexdigest()[:16] if dirty else None}


# ---- snapshots ---------------------------------------------------------------------------------
def _package_files(folder: Path, prefix: str) -> list[tuple[str, Path]]:
    return [
        (f"{prefix}/{path.relative_to(folder).as_posix()}", path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix in _DATA_SUFFIXES and "__pycache__" not in path.parts
    ]


def _snapshot_files(base: Path, labs: Iterable[Path] = ()) -> list[tuple[str, Path]]:
    """(name in the snapshot, file) of everything a snapshot of `base` holds: the packages jobs
    import, then each lab package (a folder, or a top-level module's file) under its own name."""
    out = [item for pkg in SNAPSHOT_PACKAGES for item in _package_files(base / pkg, pkg)]
    for lab in sorted(labs, key=lambda p: p.stem):
        out += _package_files(lab, lab.name) if lab.is_dir() else [(lab.name, lab)]
    return out


def lab_packages(refs: Iterable[str], root: str | os.PathLike | None = None) -> list[Path]:
    """The local or editable lab packages (folders, or top-level modules' files) that `refs`
    come from: what a snapshot copies. Packages installed from wheels are named by their version
    in the code identity and stay where they are."""
    out = {}
    for ref in refs:
        located = locate(top_of(ref), root)
        if located.distribution is None:
            out[located.top] = located.path
    return [out[t] for t in sorted(out)]


def _manifest_labs(path: Path) -> list[Path]:
    """The lab packages a snapshot's manifest says it holds (their names are checked: a name
    there that holds files no one hashed fails the snapshot's name, one that is not there fails
    as a folder no snapshot holds)."""
    try:
        labs = json.loads((path / MANIFEST).read_text()).get("labs") or []
    except (OSError, ValueError, AttributeError):
        return []
    out = []
    for name in labs if isinstance(labs, list) else []:
        if not isinstance(name, str) or "/" in name or name.startswith(".") or name.split(".")[0] in _RESERVED:
            raise ValueError(f"its {MANIFEST} names a lab package {name!r} that cannot be one")
        out.append(path / name)
    return out


_RESERVED = (*SNAPSHOT_PACKAGES, "orchestrator", "cli", "turboprune", "MANIFEST")


def _name(blobs: list[tuple[str, bytes]]) -> str:
    """A snapshot's name: the hash of its files' paths and bytes, in _snapshot_files' order."""
    h = hashlib.sha256()
    for rel, data in blobs:
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def _seal(root: Path) -> None:
    """Owner-writable only, explicitly (never the umask's say); a folder not ours is left as it is."""
    for p in [root, *root.rglob("*")]:
        try:
            mode = DIR_MODE if p.is_dir() else FILE_MODE
            if stat.S_IMODE(p.lstat().st_mode) != mode and not p.is_symlink():
                os.chmod(p, mode)
        except OSError:
            pass


def snapshot(
    output_dir: str | os.PathLike, root: str | os.PathLike | None = None, labs: Iterable[Path] = ()
) -> Path:
    """OUTPUT/_code/<hash>/: the packages jobs import, as they are now, named by the hash of their
    bytes, with the local or editable lab packages the sweep uses (`labs`: lab_packages) under
    their top-level names, so the trainer imports the lab code that was launched. Written into a
    temporary folder and renamed into place whole (a job, or a requeue, never sees half of one);
    an existing snapshot of the same bytes is reused, and a folder of that name that does not
    hold them (edited after the fact) is replaced."""
    base = Path(root or ROOT).resolve()
    if (base / MANIFEST).exists():  # already running from a snapshot: that one
        return base
    labs = sorted({Path(p) for p in labs}, key=lambda p: p.stem)
    for lab in labs:
        if lab.name.split(".")[0] in _RESERVED:
            raise PluginError(f"lab package {lab}: its name is turboprune's own; rename it")
    # Each file read once: its name, its copy and its manifest entry all come from the same bytes,
    # so a checkout edited while a launch copies it gives a snapshot true to its name (the
    # controller then sees that the code differs from the one it planned for).
    blobs = {rel: path.read_bytes() for rel, path in _snapshot_files(base, labs)}
    name = _name(list(blobs.items()))
    parent = Path(output_dir).expanduser().resolve() / "_code"
    target = parent / name
    if verify_snapshot(target) == name:
        _seal(target)  # one written before modes were set explicitly
        return target
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    try:
        for rel, data in blobs.items():
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
        code = code_identity(tmp)
        manifest = {
            "snapshot": name,
            "sources": code.sources,
            "training": code.training,
            "version": _version(),
            "git": git_info(base),
            "from": str(base),
            "labs": [lab.name for lab in labs],
            "lab_sources": {lab.name: str(lab) for lab in labs},
            "files": {rel: hashlib.sha256(data).hexdigest() for rel, data in blobs.items()},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        _seal(tmp)
        # Put in place under a lock: launches of the same code race here, and one must not take
        # the snapshot another just installed (and its jobs import) for a damaged one.
        with file_lock(parent / f".{name}.lock"):
            if verify_snapshot(target) == name:
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            if target.exists():  # a damaged or edited one: set aside, never deleted under a job
                target.rename(parent / f".{name}.damaged.{os.getpid()}.{tmp.name}")
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def snapshot_problem(path: str | os.PathLike) -> str | None:
    """Why the folder `path` is not the snapshot its name says, or None when it is. Its name is
    recomputed from every file there (as `snapshot` named it), and anything else is refused: a
    file or folder no snapshot holds (a sitecustomize.py, usercustomize.py or .pth file, a
    __pycache__: a .pyc whose header matches its source's is run instead of the source), or a
    link. The manifest must list exactly those files with their digests. About a megabyte read
    and hashed: a few milliseconds."""
    path = Path(path)
    if not path.is_dir():
        return "it is gone"
    try:
        return _problem(path)
    except (OSError, ValueError) as exc:
        return f"it cannot be read ({exc})"


def _problem(path: Path) -> str | None:
    present: set[str] = set()
    folders: set[str] = set()
    odd: list[str] = []

    def fail(exc: OSError) -> None:
        raise exc  # a folder that cannot be listed hides what it holds

    for dirpath, dirnames, filenames in os.walk(path, onerror=fail):
        for entry in (*dirnames, *filenames):
            p = Path(dirpath, entry)
            rel = p.relative_to(path).as_posix()
            mode = p.lstat().st_mode
            if stat.S_ISDIR(mode):
                folders.add(rel)
            elif stat.S_ISREG(mode):
                present.add(rel)
            else:
                odd.append(rel)  # a link (to code elsewhere), a pipe...
    files = [rel for rel, _ in _snapshot_files(path, _manifest_labs(path))]
    needed = {d.as_posix() for rel in files for d in Path(rel).parents if d.as_posix() != "."}
    unknown = sorted({*odd, *(present - {*files, MANIFEST}), *(folders - needed)})
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        return f"it holds what no snapshot holds: {', '.join(unknown[:5])}{more}"
    blobs = [(rel, (path / rel).read_bytes()) for rel in files]
    name = _name(blobs)
    if name != path.name:
        return f"its files hash to {name}, not to its name"
    manifest = json.loads((path / MANIFEST).read_text())
    digests = {rel: hashlib.sha256(data).hexdigest() for rel, data in blobs}
    if not isinstance(manifest, dict) or manifest.get("snapshot") != name or manifest.get("files") != digests:
        return f"its {MANIFEST} does not list its files"
    return None


def verify_snapshot(path: str | os.PathLike) -> str | None:
    """The snapshot's name when it is the code that name says (snapshot_problem), else None."""
    return None if snapshot_problem(path) else Path(path).name


class SnapshotRefused(CheckFailed, RuntimeError):
    """A job's code snapshot is gone or is not the code its name says: nothing may run from it."""


def check_snapshot(code_dir: str | os.PathLike) -> None:
    """For the job wrapper (slurm/job.py), before any process imports from `code_dir`: raises
    SnapshotRefused unless it is the code its name says. This runs from the code that submitted
    the job, never from the snapshot (a tampered snapshot would check itself). A refused one is set
    aside as <hash>.tampered-<time>, so that the next launch writes a fresh one, and is named in
    the error."""
    path = Path(code_dir)
    why = snapshot_problem(path)
    if why is None:
        return
    if not path.exists():
        raise SnapshotRefused(
            f"code snapshot {path} is gone: launch again to plan this job with the code that is there now"
        )
    aside: Path | None = path.with_name(f"{path.name}.tampered-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    try:
        with file_lock(path.parent / f".{path.name}.lock"):  # the lock `snapshot` installs under
            why = snapshot_problem(path)  # a launch may have just put a fresh one in its place
            if why is None:
                return
            os.rename(path, str(aside))
    except FileNotFoundError:
        aside = None  # another job of the same snapshot set it aside first
    except OSError as exc:
        why, aside = f"{why}; it could not be set aside: {exc}", None
    where = f"set aside as {aside}" if aside else "not in its place any more"
    raise SnapshotRefused(
        f"code snapshot {path} is not the code its name says ({why}); {where}, and nothing ran "
        "from it. Look at it, then launch again: the launch writes a fresh snapshot"
    )


def _version() -> str:
    from core import version  # importlib.metadata (a few ms): only for a snapshot's manifest

    return version()
