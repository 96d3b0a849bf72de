"""The identity of the code a level runs, and the code snapshots cluster jobs import.

Code identity. A level's numbers depend on its config (hashed into its id), on the libraries
(torch, CUDA: recorded in its provenance) and on this project's code that runs while it trains.
That code is split in two, by what a change there can alter:

    training   every .py file of trainer/ (models, data, the loop, the levels loop, rewinding...),
               less EXCLUDED: what cannot change a level's numbers (W&B logging, provenance,
               hydra's entry point). core/ computes ids, folders, configs and schema checks:
               a change there changes ids or fails, it never changes numbers silently, so only
               its pruning modules count
    pruning    the pruners and what they use: trainer/pruning/{methods,synflow,registry}.py,
               core/{density,methods}.py, each criterion the files it runs (CRITERION_FILES)

A level that prunes by criterion c has code hash(training, the files of c); level 0 (dense
training, no pruning) has hash(training). So fixing SynFlow's pruner changes the code of SynFlow's
levels only, fixing the data loader that of every level, and editing the planner, the CLI, the
store, the scheduler side or the docs that of none. Comments and blank lines do not count
(every other line does, docstrings included), so a file's identity does not move with its
comments, and does not depend on the Python version that reads it.

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

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from core.atomic import file_lock

ROOT = Path(__file__).resolve().parent.parent  # the folder holding core/, trainer/, ...

# Never part of a level's code: they cannot change what a level computes.
EXCLUDED = frozenset(
    {
        "trainer/__main__.py",  # hydra's entry point (cli/)
        "trainer/wandb_recorder.py",  # where metrics go besides the store
        "trainer/provenance.py",  # what is recorded about a level, not how it is computed
    }
)
PRUNING_FILES = (
    "core/density.py",
    "core/methods.py",
    "trainer/pruning/methods.py",
    "trainer/pruning/registry.py",
    "trainer/pruning/synflow.py",
)
_COMMON_PRUNING = ("core/methods.py", "trainer/pruning/registry.py", "trainer/pruning/methods.py")
CRITERION_FILES: dict[str, tuple[str, ...]] = {
    "magnitude": (*_COMMON_PRUNING, "core/density.py"),
    "snip": (*_COMMON_PRUNING, "core/density.py"),
    "synflow": (*_COMMON_PRUNING, "trainer/pruning/synflow.py"),
    "random_erk": (*_COMMON_PRUNING, "core/density.py"),
    "random_balanced": (*_COMMON_PRUNING, "core/density.py"),
    "random_uniform": (*_COMMON_PRUNING, "core/density.py"),
    "reinit": _COMMON_PRUNING,
    "random_layerwise": _COMMON_PRUNING,
}
# What a job imports: the trainer, its store recorder, the job wrapper, the core (and their data
# files: presets, migrations). The planner and the CLI stay out.
SNAPSHOT_PACKAGES = ("core", "trainer", "slurm", "db")
_DATA_SUFFIXES = (".py", ".yaml", ".ini", ".mako", ".sh", ".tmpl")
MANIFEST = "MANIFEST.json"
# A snapshot's modes, whatever the umask: only its owner may write it (under umask 002 the files
# were group-writable, so anyone of the group could change the code every later job runs).
FILE_MODE, DIR_MODE = 0o644, 0o755


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def normalized(source: bytes) -> bytes:
    """A file's source without blank lines, comment-only lines and trailing blanks."""
    lines = []
    for line in source.decode("utf-8", "replace").splitlines():
        line = line.rstrip()
        if line and not line.lstrip().startswith("#"):
            lines.append(line)
    return "\n".join(lines).encode()


@dataclass(frozen=True)
class CodeIdentity:
    """The project's code at `root`, file by file (normalised hashes), and the codes of levels."""

    root: str
    files: dict[str, str] = field(repr=False)  # relative path -> hash of its normalised source

    def _group(self, paths: list[str] | tuple[str, ...]) -> str:
        return _short("\n".join(f"{p} {self.files.get(p, '-')}" for p in sorted(paths)))

    @cached_property
    def training(self) -> str:
        """The code every level runs."""
        return self._group([p for p in self.files if p not in PRUNING_FILES])

    @cached_property
    def _by_criterion(self) -> dict[str, str]:
        # Computed once per criterion: a 10,000-point plan asks for 32,000 levels' codes, and
        # hashing the 60 files' names each time was a fifth of plan_sweep.
        return {}

    def for_step(self, step: dict[str, Any] | None) -> str:
        """The code of a level with this pruning step (None: dense training from init)."""
        if not step:
            return self.training
        criterion = str(step.get("criterion"))
        if criterion not in self._by_criterion:
            files = CRITERION_FILES.get(criterion, PRUNING_FILES)
            self._by_criterion[criterion] = _short(f"{self.training} {self._group(files)}")
        return self._by_criterion[criterion]

    @property
    def sources(self) -> str:
        """All of it: the identity of the whole tree the levels' codes come from."""
        return self._group(list(self.files))


_CACHE: dict[str, CodeIdentity] = {}


def code_identity(root: str | os.PathLike | None = None) -> CodeIdentity:
    """The identity of the code under `root` (default: where this module was imported from, which
    for a job is its snapshot). Read once per process: about 60 files, a few milliseconds."""
    base = Path(root or ROOT).resolve()
    if str(base) not in _CACHE:
        files = {}
        for pkg in ("core", "trainer"):
            for path in sorted((base / pkg).rglob("*.py")):
                rel = path.relative_to(base).as_posix()
                if "__pycache__" in rel or rel in EXCLUDED or (pkg == "core" and rel not in PRUNING_FILES):
                    continue
                files[rel] = hashlib.sha256(normalized(path.read_bytes())).hexdigest()[:16]
        _CACHE[str(base)] = CodeIdentity(str(base), files)
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
def _snapshot_files(base: Path) -> list[Path]:
    out = []
    for pkg in SNAPSHOT_PACKAGES:
        for path in sorted((base / pkg).rglob("*")):
            if path.is_file() and path.suffix in _DATA_SUFFIXES and "__pycache__" not in path.parts:
                out.append(path)
    return out


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


def snapshot(output_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """OUTPUT/_code/<hash>/: the packages jobs import, as they are now, named by the hash of their
    bytes. Written into a temporary folder and renamed into place whole (a job, or a requeue,
    never sees half of one); an existing snapshot of the same bytes is reused, and a folder of
    that name that does not hold them (edited after the fact) is replaced."""
    base = Path(root or ROOT).resolve()
    if (base / MANIFEST).exists():  # already running from a snapshot: that one
        return base
    # Each file read once: its name, its copy and its manifest entry all come from the same bytes,
    # so a checkout edited while a launch copies it gives a snapshot true to its name (the
    # controller then sees that the code differs from the one it planned for).
    blobs = {path.relative_to(base).as_posix(): path.read_bytes() for path in _snapshot_files(base)}
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
    files = [p.relative_to(path).as_posix() for p in _snapshot_files(path)]
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


class SnapshotRefused(RuntimeError):
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
    from core import version

    return version()
