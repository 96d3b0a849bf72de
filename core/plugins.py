"""Bring your own: a lab's model, data set or pruning function, named by import path.

A *ref* is `package.module:callable` (the form of an entry point's value): `model.name:
"mylab.models:TinyNet"`, `data.name: "mylab.data:make_datasets"`, a declared method's `score:` or
`masks:` (core/method_decl.py). Stdlib only, so the planner, the preflight and the trainer share
it: the planner never imports a lab's module (it finds its files: `locate`), the launch imports it
once to check it (`load`, `check_call`), and the trainer imports it to run it.

A lab's code counts in the identity of the levels that use it (core/code.py), found without
importing it:

- local or editable (a folder on the import path, or `pip install -e`): the module's file, the
  modules it imports from its own top-level package (transitively), and the `__init__.py` of each
  package on the way, each hashed as the trainer's files are (syntax trees without docstrings);
- installed from a wheel (in site-packages): its distribution's name and version.

A launch copies a local or editable lab package into its code snapshot under its top-level name,
so a queued job runs the lab code that was launched (core/code.py, `snapshot`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
REF = re.compile(rf"{_IDENT}(?:\.{_IDENT})*:{_IDENT}(?:\.{_IDENT})*")
# Top-level names a lab package may not take: the snapshot holds these (and the manifest).
RESERVED_TOPS = frozenset({"core", "trainer", "slurm", "db", "orchestrator", "cli", "turboprune"})


class PluginError(UserError, ValueError):
    """A lab's plugin that cannot be used: the message names the plugin, its file and the problem."""


def is_ref(name: Any) -> bool:
    """Whether `name` is an import path `module:callable` (a built-in name never holds a colon)."""
    return isinstance(name, str) and REF.fullmatch(name) is not None


def split_ref(ref: str) -> tuple[str, str]:
    if not is_ref(ref):
        raise PluginError(f"{ref!r} is not an import path of the form package.module:callable")
    module, _, attr = ref.partition(":")
    return module, attr


def top_of(ref: str) -> str:
    return split_ref(ref)[0].split(".")[0]


# ---- finding a lab's files without importing it --------------------------------------------------
def _installed_dirs() -> list[Path]:
    """Where wheels install (site-packages, the user site): code there is a distribution's."""
    out = set()
    for key in ("purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            out.add(Path(p).resolve())
    try:
        out.update(Path(p).resolve() for p in site.getsitepackages())
    except AttributeError:  # a virtualenv's old site module
        pass
    user = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if isinstance(user, str):
        out.add(Path(user).resolve())
    return sorted(out)


@dataclass(frozen=True)
class Located:
    """Where a lab's top-level package (or module) is: `path` (a package's folder, or a module's
    file), and the distribution that installed it when it comes from site-packages (None: local
    or editable, its files are its identity)."""

    top: str
    path: Path
    distribution: tuple[str, str] | None = None  # (name, version)

    @property
    def is_package(self) -> bool:
        return self.path.is_dir()


_LOCATED: dict[tuple[str, str], Located] = {}


def locate(top: str, root: str | os.PathLike | None = None) -> Located:
    """The lab's top-level package `top`: under `root` first (a code snapshot holds copies of the
    lab packages its jobs import), else where the import system would find it (importlib's
    finders: an editable install's too), without importing it."""
    key = (top, str(root))
    if key in _LOCATED:
        return _LOCATED[key]
    if top in RESERVED_TOPS:
        raise PluginError(f"{top!r} is turboprune's own package name; a lab package needs another")
    found: Path | None = None
    if root is not None:
        for cand in (Path(root) / top, Path(root) / f"{top}.py"):
            if (cand / "__init__.py").is_file() if cand.is_dir() else cand.is_file():
                found = cand
                break
    if found is None:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError) as exc:
            raise PluginError(f"cannot find package {top!r}: {exc}") from None
        if spec is None:
            raise PluginError(f"no package {top!r} on the import path (install it, e.g. pip install -e)")
        if spec.submodule_search_locations:
            locs = list(spec.submodule_search_locations)
            if not locs:
                raise PluginError(f"package {top!r} has no folder (a namespace package is not supported)")
            found = Path(locs[0])
        elif spec.origin and spec.origin.endswith(".py"):
            found = Path(spec.origin)
        else:
            raise PluginError(f"package {top!r} is not Python source ({spec.origin}); it cannot be hashed")
    found = found.resolve()
    dist = None
    if any(found.is_relative_to(d) for d in _installed_dirs()):
        dist = _distribution(top)
    _LOCATED[key] = Located(top, found, dist)
    return _LOCATED[key]


def _distribution(top: str) -> tuple[str, str] | None:
    from importlib import metadata  # importlib.metadata (0.025 s): only for a lab's installed package

    names = metadata.packages_distributions().get(top) or []
    for name in names:
        try:
            return (name, metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
    return None


def module_file(located: Located, module: str) -> Path | None:
    """The file of `module` (dotted, starting with the top name) in a located lab package."""
    parts = module.split(".")
    if parts[0] != located.top:
        return None
    if not located.is_package:
        return located.path if len(parts) == 1 else None
    base = located.path.joinpath(*parts[1:])
    for cand in (base.with_suffix(".py") if len(parts) > 1 else None, base / "__init__.py"):
        if cand is not None and cand.is_file():
            return cand
    return None


# ---- importing and checking (launch and trainer only) ----------------------------------------
def source_of(obj: Any, module: str | None = None) -> str:
    """The file a plugin comes from, for messages."""
    try:
        f = inspect.getsourcefile(obj)
        if f:
            return f
    except TypeError:
        pass
    mod = sys.modules.get(module or "")
    return str(getattr(mod, "__file__", None) or module or "?")


def load(ref: str, what: str) -> Any:
    """Import the callable `ref` names (a PluginError naming `what`, the ref, the file and the
    problem, in one line, when it cannot be had)."""
    module, attr = split_ref(ref)
    try:
        obj: Any = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any error of the lab's module is the lab's to fix
        where = _where_module(module)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise PluginError(
            f"{what} {ref!r}: importing {module} ({where}) failed: {type(exc).__name__}: {first}"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{what} {ref!r}: {module} ({source_of(obj, module)}) has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PluginError(f"{what} {ref!r} ({source_of(obj, module)}): {attr} is not callable")
    return obj


def _where_module(module: str) -> str:
    try:
        located = locate(module.split(".")[0])
        f = module_file(located, module)
        return str(f or located.path)
    except PluginError:
        return "not found"


def check_call(fn: Any, ref: str, what: str, args: tuple, kwargs: dict[str, Any], expected: str) -> None:
    """`fn` takes these arguments (inspect.signature), or a PluginError saying how it is called."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: the call tells
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise PluginError(
            f"{what} {ref!r} ({source_of(fn, split_ref(ref)[0])}): its signature {sig} does not take "
            f"{expected} ({exc})"
        ) from None
