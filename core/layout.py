"""A level's folder on disk, the record of what it computed. Torch-free: the store imports results
from here (`tp-sweep db import`, launch, status) without loading any weights.

    LEVELS/<level id>/
        level.json           what the level computes (written at plan time; its hash is the id)
        init.pt              root levels: the seed's initial weights
        rewind_step<k>.pt    level 0: weights and optimizer at step k (imp_wr rewinds here)
        mask.pt              the mask this level trains under (pruning levels)
        checkpoint.pt        while training: the last epoch end or stop point
        final.pt             trained weights and mask
        metrics.json         written last: the level is finished when it exists
        .lock                held by the one process training the level
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from core.atomic import write_json_atomic
from core.errors import CheckFailed
from core.levels import MAX_LEVELS_PER_RUN, LevelSpec, LineageError
from core.methods import CRITERIA, METHODS
from core.plugins import is_ref

RESULT_FILE = "metrics.json"
LEVEL_ID = re.compile(r"[0-9a-f]{16}")  # content_hash's 16 hex digits: never a path
KINDS = ("dense", "oneshot", "trunk", "branch", "control")
REWINDS = ("init", "step", "none", "reinit")

# What is read from an output folder is bounded before it is parsed (docs/levels.md, "What a
# folder may hold"): a file larger than its limit, or anything but a regular file, is refused.
LEVEL_JSON_MAX_BYTES = 1 << 20  # a level's description: its trainer config, a few kB
METRICS_MAX_BYTES = 4 << 20  # a level's results: about 300 bytes an epoch, 100,000 epochs at most
SWEEP_RECORD_MAX_BYTES = 64 << 20  # a sweep as planned: about 2 kB a run, some 30,000 runs
PROVENANCE_MAX_CHARS = 64 << 10  # a level's provenance as JSON: about 400 characters an attempt
SPEC_MAX_CHARS = 1 << 20  # a sweep's stored spec as JSON (a spec file is at most a megabyte)
CONFIG_MAX_CHARS = 64 << 10  # a run's trainer config as JSON
AXES_MAX_CHARS = 4096  # a run's or grid point's axes as JSON
STRING_MAX_CHARS = 4096  # any other string (a path)
MAX_EPOCHS = 100_000  # core/schema.py: schedule.epochs
MAX_INT = 2**31 - 1  # an Integer column of every store (PostgreSQL's int4)
MAX_NUMBER = 2**63  # a count or float column's magnitude (BigInteger; SQLite binds ints up to it)
SEED_LIMIT = 2**63  # core/schema.py
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # a sweep's name (orchestrator/plan/spec.py)
RUN_ID = re.compile(r"[0-9a-f]{16,32}")
CODE_ID = re.compile(r"[0-9a-f]{1,40}")
SHA256 = re.compile(r"[0-9a-f]{64}")
P = ParamSpec("P")
R = TypeVar("R")
DIGEST_KEY = "final_sha256"  # metrics.json: the SHA-256 of the final.pt written beside it

# metrics.json: fractions that must lie in [0, 1] when present (None: not measured)
_FRACTIONS = (
    "achieved_sparsity",
    "network_sparsity",
    "test_acc",
    "test_top5",
    "best_test_acc",
    "train_acc",
    "density",
)
_NUMBERS = ("test_loss", "train_loss", "seconds", "params", "nonzero_params", "flops_dense", "flops")
# one epoch of metrics.json's history: what the store's epochs table holds (None: not measured)
_EPOCH_FRACTIONS = ("train_acc", "test_acc", "test_top5")
_EPOCH_NUMBERS = ("train_loss", "test_loss", "lr", "seconds", "images_per_s")
_EPOCH_REQUIRED = ("train_loss", "train_acc", "lr", "steps", "seconds", "images_per_s")  # NOT NULL


def is_level_id(value: Any) -> bool:
    return isinstance(value, str) and LEVEL_ID.fullmatch(value) is not None


class BadFile(CheckFailed, ValueError):
    """A file of an output folder that must not be used; the message says why (not where)."""


class BadLevel(BadFile):
    """A level folder that must not be used: renamed, edited, truncated. The message says why."""


class BadRecord(BadFile):
    """A sweep record (OUTPUT/sweeps/<name>.json) that must not be used. The message says why."""


def open_regular(path: str | os.PathLike[str], what: str) -> int:
    """A read-only descriptor of `path`, a regular file: never a symlink (O_NOFOLLOW), and never
    blocks (O_NONBLOCK: a FIFO opens at once, then fstat refuses it). FileNotFoundError when it
    is not there; BadFile when it is something else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:  # ELOOP: a symlink; EACCES; ENXIO: a socket
        kind = "a symlink" if os.path.islink(path) else f"unreadable ({exc.strerror})"
        raise BadFile(f"{what} is {kind}, not a regular file") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BadFile(f"{what} is not a regular file (a FIFO, device or folder)")
    return fd


def read_bounded(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of the regular file `path`, refused (BadFile) beyond `limit` bytes without
    reading more than that."""
    fd = open_regular(path, what)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if size > limit:
            raise BadFile(f"{what} is {size:,} bytes, more than its limit of {limit:,}")
        data = f.read(limit + 1)
    if len(data) > limit:  # grew while we read
        raise BadFile(f"{what} is more than its limit of {limit:,} bytes")
    return data


def read_json_bounded(path: str | os.PathLike[str], limit: int, what: str) -> Any:
    """JSON from a regular file of at most `limit` bytes; BadFile when it is not that."""
    data = read_bounded(path, limit, what)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested ten thousand deep
        raise BadFile(f"{what} cannot be read ({type(exc).__name__}: not JSON, truncated or edited)") from None


def file_sha256(path: str | os.PathLike[str], what: str) -> str:
    """The SHA-256 of a regular file (open_regular's rules), in hex."""
    fd = open_regular(path, what)
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _number(v: Any, what: str, lo: float = 0.0, hi: float = MAX_NUMBER, integer: bool = False) -> None:
    """`v` is a finite number (an int when `integer`) in [lo, hi]; BadFile names `what` if not."""
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise BadFile(f"{what} {_short(v)} is not {'an integer' if integer else 'a number'}")
    if isinstance(v, int) and not -MAX_NUMBER < v < MAX_NUMBER:
        raise BadFile(f"{what} {_short(v)} is out of range")
    if not math.isfinite(v) or not lo <= v <= hi:
        raise BadFile(f"{what} {_short(v)} is not in [{lo:g}, {hi:g}]")


def _text(v: Any, what: str, pattern: re.Pattern[str] | None = None, limit: int = STRING_MAX_CHARS) -> str:
    if not isinstance(v, str) or len(v) > limit or (pattern is not None and not pattern.fullmatch(v)):
        raise BadFile(f"{what} {_short(v)} is not {'a name' if pattern is not None else 'a short string'}")
    if pattern is None and any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise BadFile(f"{what} {_short(v)} holds control characters")
    return v


def _json_within(v: Any, what: str, limit: int, kind: type = dict) -> None:
    """`v` is a `kind` (dict or list) whose JSON is at most `limit` characters."""
    if not isinstance(v, kind):
        raise BadFile(f"{what} is not a JSON {'object' if kind is dict else 'list'}")
    try:
        size = len(json.dumps(v))
    except (ValueError, TypeError, RecursionError):
        raise BadFile(f"{what} cannot be written as JSON") from None
    if size > limit:
        raise BadFile(f"{what} is {size:,} characters as JSON, more than its limit of {limit:,}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_bad_level(check: Callable[P, R]) -> Callable[P, R]:
    """`check`, with every BadFile it raises as a BadLevel (the folder is what must not be used)."""

    @functools.wraps(check)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return check(*args, **kwargs)
        except BadLevel:
            raise
        except BadFile as exc:
            raise BadLevel(str(exc)) from None

    return checked


@_as_bad_level
def check_description(data: Any, folder_name: str) -> LevelSpec:
    """LEVEL_DIR/level.json as a LevelSpec, or BadLevel: the folder is named after the id it
    holds, that id is the hash of the content, every id in it is an id (never a path), and every
    field the store records is of its type and range."""
    if not isinstance(data, dict):
        raise BadLevel("level.json is not a JSON object")
    lid = data.get("level_id")
    if lid != folder_name:
        raise BadLevel(
            f"folder name {folder_name!r} differs from the level_id {_short(lid)} in level.json "
            "(renamed or copied folder)"
        )
    if not is_level_id(lid):
        raise BadLevel(f"level_id {_short(lid)} is not a level id")
    parent, root = data.get("parent"), data.get("root")
    if parent is not None and not is_level_id(parent):
        raise BadLevel(f"parent {_short(parent)} is not a level id")
    if not is_level_id(root):
        raise BadLevel(f"root {_short(root)} is not a level id")
    if data.get("kind") not in KINDS:
        raise BadLevel(f"kind {_short(data.get('kind'))} is not one of {', '.join(KINDS)}")
    _number(data.get("depth"), "depth", 0, MAX_LEVELS_PER_RUN, integer=True)
    depth = data["depth"]
    if parent is None and (root != lid or depth != 0):
        raise BadLevel("a level without a parent is its own root at depth 0")
    if parent is not None and depth == 0:
        raise BadLevel("a level with a parent has depth 1 or more")
    _number(data.get("density"), "density", 0, 1)
    if data.get("code") is not None:
        _text(data["code"], "code", CODE_ID)
    step = data.get("step")
    if not isinstance(data.get("train"), dict) or not isinstance(step, (dict, type(None))):
        raise BadLevel("level.json lacks its train or step section")
    if step is not None:
        plugin = step.get("plugin")
        if plugin is not None:  # a lab's criterion: described by the step itself
            if (
                not isinstance(plugin, dict)
                or not is_ref(plugin.get("fn"))
                or plugin.get("returns")
                not in (
                    "scores",
                    "masks",
                )
            ):
                raise BadLevel("step: its plugin block does not name a function and what it returns")
            if not isinstance(step.get("criterion"), str) or step["criterion"] in CRITERIA:
                raise BadLevel(f"step: criterion {_short(step.get('criterion'))} is not a lab's criterion name")
        elif step.get("criterion") not in CRITERIA:
            raise BadLevel(f"step: criterion {_short(step.get('criterion'))} is not a pruning criterion")
        _number(step.get("density"), "step: density", 0, 1)
        if step.get("rewind") is not None and step["rewind"] not in REWINDS:
            raise BadLevel(f"step: rewind {_short(step.get('rewind'))} is not one of {', '.join(REWINDS)}")
    try:
        return LevelSpec.from_dict(data)
    except (LineageError, KeyError, TypeError, ValueError) as exc:
        raise BadLevel(str(exc).replace(f"level {lid}: ", "")) from None


@_as_bad_level
def check_result(data: Any, folder_name: str) -> dict[str, Any]:
    """metrics.json, well-formed: an object naming its level, fractions in [0, 1], finite numbers
    within the store's ranges, a history of its epochs (each with what the store's epochs table
    requires), a bounded provenance, and the final.pt digest when it has one. Returns it;
    BadLevel says what is wrong."""
    if not isinstance(data, dict):
        raise BadLevel("metrics.json is not a JSON object")
    if data.get("level_id") != folder_name:
        raise BadLevel(f"metrics.json names level {_short(data.get('level_id'))}, not {folder_name!r}")
    for key in (*_FRACTIONS, *_NUMBERS):
        if data.get(key) is not None:
            _number(data[key], f"metrics.json: {key}", 0, 1 if key in _FRACTIONS else MAX_NUMBER)
    if data.get("resolution") is not None:  # the training input's height the cost was counted at
        _number(data["resolution"], "metrics.json: resolution", 1, MAX_INT, integer=True)
    epochs = data.get("epochs")
    _number(epochs, "metrics.json: epochs", 0, MAX_EPOCHS, integer=True)
    history = data.get("history")
    if not isinstance(history, list) or len(history) != epochs:
        raise BadLevel("metrics.json: history is not a list of its epochs")
    last = -1
    for i, h in enumerate(history):
        if not isinstance(h, dict):
            raise BadLevel(f"metrics.json: history[{i}] is not an object")
        _number(h.get("epoch"), f"metrics.json: history[{i}].epoch", last + 1, MAX_EPOCHS, integer=True)
        last = h["epoch"]
        for key in _EPOCH_REQUIRED:
            if h.get(key) is None:
                raise BadLevel(f"metrics.json: history[{i}] lacks {key}")
        for key in (*_EPOCH_FRACTIONS, *_EPOCH_NUMBERS):
            if h.get(key) is not None:
                _number(
                    h[key], f"metrics.json: history[{i}].{key}", 0, 1 if key in _EPOCH_FRACTIONS else MAX_NUMBER
                )
        _number(h["steps"], f"metrics.json: history[{i}].steps", 0, MAX_INT, integer=True)
    prov = data.get("provenance")
    if prov is not None:
        _json_within(prov, "metrics.json: provenance", PROVENANCE_MAX_CHARS)
        for key in ("code", "sources"):
            if prov.get(key) is not None:
                _text(prov[key], f"metrics.json: provenance.{key}", CODE_ID)
        codes = prov.get("codes")
        if codes is not None and not (isinstance(codes, list) and all(isinstance(c, str) for c in codes)):
            raise BadLevel("metrics.json: provenance.codes is not a list of codes")
        for c in codes or ():
            _text(c, "metrics.json: provenance.codes[]", CODE_ID)
    if data.get(DIGEST_KEY) is not None:
        _text(data[DIGEST_KEY], f"metrics.json: {DIGEST_KEY}", SHA256)
    return data


def check_sweep_record(data: Any, file_stem: str) -> dict[str, Any]:
    """OUTPUT/sweeps/<name>.json, well-formed, or BadRecord: named after the sweep it holds (a
    name by the spec's rule, never a path), a bounded spec of that name, and runs and grid points
    whose every field is of its type and range (known methods, level and run ids, seeds, depths
    and counts an integer column holds, finite sparsities in [0, 1)), every point served by a
    run of the record. What `db import` and `launch` trust before anything of it is used; the
    spec itself is parsed by the caller (orchestrator/plan/spec.py), the trainer configs here."""
    from core.schema import ConfigError, validate_config  # the config schema and YAML, 0.05 s

    try:
        if not isinstance(data, dict):
            raise BadRecord("not a JSON object")
        name = _text(data.get("name"), "name", NAME)
        if name != file_stem:
            raise BadRecord(f"holds sweep {name!r}, but its file is named {file_stem!r}")
        _json_within(data.get("spec"), "spec", SPEC_MAX_CHARS)
        if data["spec"].get("name") != name:
            raise BadRecord(f"spec: name {_short(data['spec'].get('name'))} is not {name!r}")
        if data["spec"].get("methods"):  # its lab methods, known before its runs name them
            from core.method_decl import register_declared, spec_methods  # pydantic

            try:
                register_declared(spec_methods(data["spec"]["methods"]))
            except ValueError as exc:
                raise BadRecord(f"spec: {exc}") from None
        if data.get("levels_dir") is not None:
            _text(data["levels_dir"], "levels_dir")
        runs, points = data.get("runs"), data.get("points")
        if not isinstance(runs, list) or not isinstance(points, list):
            raise BadRecord("runs or points is not a list")
        run_ids = set()
        for i, r in enumerate(runs):
            where = f"runs[{i}]"
            if not isinstance(r, dict):
                raise BadRecord(f"{where} is not an object")
            run_ids.add(_text(r.get("run_id"), f"{where}.run_id", RUN_ID))
            _method(r.get("method"), where)
            _number(r.get("seed"), f"{where}.seed", 0, SEED_LIMIT - 1, integer=True)
            _json_within(r.get("axes"), f"{where}.axes", AXES_MAX_CHARS)
            _json_within(r.get("config"), f"{where}.config", CONFIG_MAX_CHARS)
            if r["config"].get("method") != r["method"] or r["config"].get("seed") != r["seed"]:
                raise BadRecord(f"{where}: its config's method and seed are not the run's")
            try:
                validate_config(r["config"])
            except ConfigError as exc:
                raise BadRecord(f"{where}.config: {str(exc)[:300]}") from None
            levels = r.get("levels")
            if not isinstance(levels, list) or not levels or len(levels) > MAX_LEVELS_PER_RUN:
                raise BadRecord(f"{where}.levels is not a list of 1 to {MAX_LEVELS_PER_RUN} levels")
            for lid in levels:
                if not is_level_id(lid):
                    raise BadRecord(f"{where}.levels: {_short(lid)} is not a level id")
        for i, pt in enumerate(points):
            where = f"points[{i}]"
            if not isinstance(pt, dict):
                raise BadRecord(f"{where} is not an object")
            _method(pt.get("method"), where)
            _number(pt.get("sparsity"), f"{where}.sparsity", 0, 1)
            if pt["sparsity"] == 1:
                raise BadRecord(f"{where}.sparsity 1 is not a target")
            _number(pt.get("seed"), f"{where}.seed", 0, SEED_LIMIT - 1, integer=True)
            _json_within(pt.get("axes"), f"{where}.axes", AXES_MAX_CHARS)
            if pt.get("run_id") not in run_ids:
                raise BadRecord(f"{where}.run_id {_short(pt.get('run_id'))} is no run of the record")
            if not is_level_id(pt.get("level_id")):
                raise BadRecord(f"{where}.level_id {_short(pt.get('level_id'))} is not a level id")
            _number(pt.get("depth"), f"{where}.depth", 0, MAX_LEVELS_PER_RUN, integer=True)
            _number(pt.get("naive_levels"), f"{where}.naive_levels", 0, MAX_INT, integer=True)
    except BadRecord:
        raise
    except BadFile as exc:
        raise BadRecord(str(exc)) from None
    return data


def _method(v: Any, where: str) -> None:
    if not isinstance(v, str) or v not in METHODS:
        raise BadRecord(f"{where}.method {_short(v)} is not a pruning method")


def read_sweep_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """OUTPUT/sweeps/<name>.json, read within its limit and checked (check_sweep_record)."""
    try:
        data = read_json_bounded(path, SWEEP_RECORD_MAX_BYTES, "the sweep record")
    except BadFile as exc:
        raise BadRecord(str(exc)) from None
    return check_sweep_record(data, Path(path).stem)


@dataclass(frozen=True)
class LevelCheck:
    """What a level folder holds: its description, its result (None: not finished), or why it
    must not be used (`problem`; then neither is given)."""

    spec: LevelSpec | None = None
    result: dict[str, Any] | None = None
    problem: str | None = None


def job_description(
    job_id: str,
    levels_dir: str,
    levels: list[str],
    snapshots: dict[str, list[dict[str, Any]]],
    runs: dict[str, Any],
    reuse: str = "any",
    code_dir: str | None = None,
) -> dict[str, Any]:
    """JOB_FILE, what `python -m trainer.job JOB_FILE` trains: its levels (in order, under
    levels_dir), the imp_wr rewind points its root levels write, the runs its levels serve
    (for recorders that report per run, such as W&B), the reuse policy it was planned under
    (same-code: a checkpoint started by other code is not continued), and the code snapshot
    its scheduler jobs import (core/code.py; None: the environment's)."""
    return {
        "job_id": job_id,
        "levels_dir": levels_dir,
        "levels": levels,
        "snapshots": snapshots,
        "runs": runs,
        "reuse": reuse,
        "code_dir": code_dir,
    }


def status_path(job_file: str | Path) -> Path:
    """Where a job's rank 0 leaves its outcome for the scheduler-side wrapper (slurm/job.py)."""
    p = Path(job_file)
    return p.with_name(p.stem + ".status.json")


class LevelDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def description(self) -> Path:
        return self.path / "level.json"

    @property
    def init(self) -> Path:
        return self.path / "init.pt"

    @property
    def mask(self) -> Path:
        return self.path / "mask.pt"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def final(self) -> Path:
        return self.path / "final.pt"

    @property
    def metrics(self) -> Path:
        return self.path / RESULT_FILE

    def snapshot(self, step: int) -> Path:
        return self.path / f"rewind_step{int(step)}.pt"

    def result(self) -> dict[str, Any] | None:
        """The finished level's metrics (with its per-epoch history), or None if not finished or
        not to be used (`inspect` says why)."""
        return self.inspect().result

    def write_result(self, result: dict[str, Any]) -> None:
        write_json_atomic(self.metrics, result)

    def final_digest(self) -> str:
        """The SHA-256 of final.pt, which metrics.json records as `final_sha256` (the binding
        of the weights to their level)."""
        return file_sha256(self.final, "final.pt")

    def read_spec(self) -> LevelSpec:
        """level.json, checked (check_description); BadLevel when it must not be used."""
        self._check_folder()
        try:
            data = read_json_bounded(self.description, LEVEL_JSON_MAX_BYTES, "level.json")
        except FileNotFoundError:
            raise BadLevel("no level.json") from None
        except BadFile as exc:
            raise BadLevel(str(exc)) from None
        except OSError as exc:
            raise BadLevel(f"level.json cannot be read ({type(exc).__name__})") from None
        return check_description(data, self.path.name)

    def _check_folder(self) -> None:
        """The level's folder is a folder of its own, not a symlink to one elsewhere."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            raise BadLevel("no level.json (no such folder)") from None
        if stat.S_ISLNK(st.st_mode):
            raise BadLevel("the level folder is a symlink (levels are read from their own folders only)")
        if not stat.S_ISDIR(st.st_mode):
            raise BadLevel("the level folder is not a folder")

    def inspect(self) -> LevelCheck:
        """Everything a reuse needs checked before it trusts the folder: the folder itself (no
        symlink), level.json (name, hash, ids, types), and once finished, metrics.json
        well-formed beside a regular final.pt whose SHA-256 is the one metrics.json records
        (levels written before digests were recorded have none: accepted without it). Reads
        final.pt's bytes once to hash them; never loads weights."""
        try:
            spec = self.read_spec()
            try:
                data = read_json_bounded(self.metrics, METRICS_MAX_BYTES, RESULT_FILE)
            except FileNotFoundError:  # written last: not finished (or finishing right now)
                return LevelCheck(spec)
            except BadFile as exc:
                raise BadLevel(str(exc)) from None
            except OSError as exc:
                raise BadLevel(
                    f"metrics.json cannot be read ({type(exc).__name__}: truncated or edited)"
                ) from None
            result = check_result(data, self.path.name)
            try:
                digest = self.final_digest()
            except FileNotFoundError:
                raise BadLevel("metrics.json without final.pt (the trained weights are gone)") from None
            except BadFile as exc:
                raise BadLevel(str(exc)) from None
            if result.get(DIGEST_KEY) is not None and digest != result[DIGEST_KEY]:
                raise BadLevel(
                    f"final.pt is not the file its metrics.json was written beside (SHA-256 "
                    f"{digest[:16]}..., metrics.json records {result[DIGEST_KEY][:16]}...): "
                    "swapped, copied or edited weights"
                )
            code = (result.get("provenance") or {}).get("code")
            named = getattr(spec, "code", None)
            if named is not None and code != named:
                raise BadLevel(f"trained by code {code}, but its id names code {named}")
            return LevelCheck(spec, result)
        except BadLevel as exc:
            return LevelCheck(problem=str(exc))


class LevelLock:
    """One trainer per level at a time, across jobs, sweeps and stores that share the folder.

    Rank 0 holds an exclusive flock on LEVEL_DIR/.lock; `agree` makes every rank follow rank 0's
    answer (under DDP all ranks must decide alike). While another process holds it we wait,
    calling `on_wait` now and then (a heartbeat), and the caller re-checks whether the level got
    finished meanwhile. The lock goes with the process, so a killed trainer never leaves it held.
    """

    def __init__(
        self,
        d: LevelDir,
        is_main: bool,
        agree: Callable[[bool], bool],
        on_wait: Callable[[], None] | None = None,
        poll_s: float = 2.0,
    ) -> None:
        self.d, self.is_main, self.agree, self.on_wait, self.poll_s = d, is_main, agree, on_wait, poll_s
        self._fd: int | None = None

    def _try(self) -> bool:
        if not self.is_main:
            return True
        self.d.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.d.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def __enter__(self) -> LevelLock:
        last_beat = time.monotonic()
        while not self.agree(self._try()):
            if self._fd is not None:  # rank 0 got it but the ranks disagreed: cannot happen, but be tidy
                self._release()
            if self.on_wait and time.monotonic() - last_beat > 60:
                self.on_wait()
                last_beat = time.monotonic()
            time.sleep(self.poll_s)
        return self

    def _release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __exit__(self, *exc: object) -> None:
        self._release()
