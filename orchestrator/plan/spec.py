"""Sweep specs: the YAML a researcher writes, validated into typed objects.

Everything a spec can get wrong is caught here, before anything is planned, recorded or
submitted, and reported as `field: problem` so the user knows which line to fix. That includes
every trainer config a run can get (core/schema.py), and bounds on everything that grows:
the file, the grid, sbatch's extra options, and every number of the executor, retry and supervisor
blocks (strict types and an upper bound each: a huge value overflows the supervisor's arithmetic,
and an infinite lease can never be taken over).
"""

from __future__ import annotations

import itertools
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core import config as trainer_config
from core.errors import UserError
from core.method_lookup import get_method
from core.methods import METHODS
from core.schema import SEED_LIMIT, validate_config
from orchestrator.plan.search_spec import SearchSpec

RESERVED_AXES = ("method", "sparsity", "seed")
DEFAULT_MAX_GRID_POINTS = 10_000
MAX_SPEC_BYTES = 1 << 20  # a spec is a page of YAML; a megabyte is a mistake or an attack
MAX_EXTRA_KEYS = 32
MAX_EXTRA_CHARS = 256
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # one path component, never . or .. or -x
_SBATCH_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SpecError(UserError, ValueError):
    """A sweep spec that cannot be used; the message names the offending field."""


# Upper bounds of the executor, retry and supervisor numbers (README.md, "Sweep spec"; docs/unattended.md).
MAX_NODES = 10_000
MAX_GPUS_PER_NODE = 64
MAX_PROCS_PER_NODE = 1024
MAX_CPUS = 4096  # cores of one node, hyperthreads included
MAX_MEM_GB = 65_536.0  # 64 TiB, more than any node has
MAX_TIMEOUT_MIN = 365 * 24 * 60  # a year
MAX_SIGNAL_DELAY_S = 65_535  # sbatch --signal's own limit
MAX_ARRAY_PARALLELISM = 100_000
MAX_REQUEUES = 1000
MAX_RENDEZVOUS_S = 86_400  # a day: past that, the job's time limit is the better bound
MAX_PACK = 48  # CUDA MPS serves at most 48 client processes a GPU (Volta and later)
DAY_S = 24 * 3600.0


class _Strict(BaseModel):
    # strict: YAML's "5" or true is not a number here (bool is an int to Python); no inf or nan
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class TrainerSpec(_Strict):
    config: str
    overrides: dict[str, Any] = Field(default_factory=dict)


def _sbatch_value_problem(value: Any) -> str | None:
    """Why `value` cannot be one `#SBATCH --key=value` line (submitit writes str(value))."""
    if value is True:
        return None  # submitit writes a bare flag: `#SBATCH --exclusive`
    if value is False or value is None:
        return f"{'false' if value is False else 'null'} is not an sbatch value (leave the key out)"
    if isinstance(value, int):
        return None if abs(value) < 2**63 else f"{value} is too large"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    if isinstance(value, str):
        if len(value) > MAX_EXTRA_CHARS:
            return f"a string of {len(value)} characters is longer than {MAX_EXTRA_CHARS}"
        if _CONTROL.search(value):
            return "control characters (a newline would end the #SBATCH line)"
        return None
    if isinstance(value, list):
        return "a list is not an sbatch value (submitit would write its Python repr); write one string, e.g. 'a,b'"
    return f"a {type(value).__name__} is not an sbatch value (a string, number or true)"


# The sbatch options tp-sweep (slurm/executors.py, slurm/supervisor_job.py) and submitit set
# themselves, with the executor field that sets each. `extra` is written after them and would
# replace them silently: `signal: KILL@1` drops the USR2 warning that saves and requeues a job,
# `output` moves the logs tp-sweep reads, `mem` undoes an OOM retry's memory.
_SET_BY_TP: dict[str, str | None] = {
    "signal": "signal_delay_s",
    "time": "timeout_min",
    "partition": "partition",
    "nodes": "nodes",
    "ntasks-per-node": "procs_per_node",
    "cpus-per-task": "cpus_per_task",
    "gpus-per-node": "gpus_per_node",
    "mem": "mem_gb",
    "array": "array_parallelism",
    "requeue": "max_requeues",
    "no-requeue": "max_requeues",
    "job-name": None,
    "output": None,
    "error": None,
    "open-mode": None,
    "dependency": None,
    "wrap": None,
}
_SET_BY_SUPERVISOR = {
    **dict.fromkeys(_SET_BY_TP),
    **{k: _SET_BY_TP[k] for k in ("signal", "time", "partition", "mem")},
    "cpus-per-task": "cpus",
}
# Options of their own that begin like one of those (sbatch reads any other unambiguous
# beginning, `--sig=KILL@1`, as the whole option).
_OWN_OPTIONS = {"gpus", "ntasks"}


def _sbatch_options(extra: dict[str, Any], set_by_tp: dict[str, str | None]) -> dict[str, Any]:
    if len(extra) > MAX_EXTRA_KEYS:
        raise ValueError(f"{len(extra)} options; at most {MAX_EXTRA_KEYS}")
    taken: list[str] = []  # keys that would replace an option tp-sweep sets
    instead: set[str] = set()  # the fields that set those options
    for key, value in extra.items():
        if not _SBATCH_KEY.fullmatch(key):
            raise ValueError(f"{key[:40]!r} is not an sbatch option name (a letter, then letters, digits, - or _)")
        problem = _sbatch_value_problem(value)
        if problem:
            raise ValueError(f"{key}: {problem}")
        option = key.replace("_", "-")  # submitit writes open_mode as --open-mode
        names = [] if option in _OWN_OPTIONS else [n for n in set_by_tp if n.startswith(option)]
        if names:
            taken.append(key if names == [option] else f"{key} (read as --{' or --'.join(names)})")
            instead |= {f"{field} instead of {key}" for n in names if (field := set_by_tp[n])}
    if taken:
        raise ValueError(
            f"{', '.join(taken)}: tp-sweep sets {'this' if len(taken) == 1 else 'these'} itself"
            + (f"; set {', '.join(sorted(instead))}" if instead else "")
        )
    return extra


class ExecutorSpec(_Strict):
    """Where and how jobs run. `profile` names a cluster profile (slurm/profiles.py) whose
    settings this block's own keys override; the spec is stored with the profile resolved."""

    profile: str | None = None
    kind: Literal["slurm", "local", "debug"] = "local"
    nodes: int = Field(1, ge=1, le=MAX_NODES)
    gpus_per_node: int = Field(0, ge=0, le=MAX_GPUS_PER_NODE)
    procs_per_node: int = Field(1, ge=1, le=MAX_PROCS_PER_NODE)
    cpus_per_task: int = Field(1, ge=1, le=MAX_CPUS)
    mem_gb: float = Field(4.0, gt=0, le=MAX_MEM_GB)
    timeout_min: int = Field(60, ge=1, le=MAX_TIMEOUT_MIN)
    partition: str | None = None
    array_parallelism: int = Field(16, ge=1, le=MAX_ARRAY_PARALLELISM)
    signal_delay_s: int = Field(120, ge=0, le=MAX_SIGNAL_DELAY_S)
    max_requeues: int = Field(3, ge=0, le=MAX_REQUEUES)
    # A multi-node job whose nodes have not all joined by then fails as a node failure (slurm/job.py).
    rendezvous_timeout_s: int = Field(300, ge=10, le=MAX_RENDEZVOUS_S)
    # Chains (jobs) per scheduler job, each its own one-process trainer, all on its GPU
    # (slurm/job.py PackedJob); DDP jobs are never packed.
    pack: int = Field(1, ge=1, le=MAX_PACK)
    account: str | None = None  # sbatch --account, --qos, --constraint, --gres
    qos: str | None = None
    constraint: str | None = None
    gres: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _with_profile(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("profile") is not None:
            from slurm.profiles import (  # only for specs that name a cluster profile
                ProfileError,
                clusters_file,
                get_profile,
                merge,
            )  # scontrol and sacctmgr calls: only where a cluster is asked

            if not isinstance(data["profile"], str):
                raise ValueError(f"profile: {_short(data['profile'])} is not a profile name")
            path = clusters_file()
            try:
                profile = get_profile(data["profile"], path)
                check_profile_bounds(path, data["profile"], profile)
                return {**merge(profile, data), "profile": data["profile"]}
            except ProfileError as exc:
                raise ValueError(str(exc)) from None
        return data

    @model_validator(mode="after")
    def _pack_one_process(self) -> ExecutorSpec:
        if self.pack > 1 and (self.procs_per_node > 1 or self.nodes > 1):
            raise ValueError(
                f"pack: {self.pack} runs that many one-process trainers in one job; a DDP job "
                f"(procs_per_node {self.procs_per_node}, nodes {self.nodes}) is never packed: "
                "set pack: 1, or procs_per_node: 1 and nodes: 1"
            )
        return self

    @field_validator("partition", "account", "qos", "constraint", "gres")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        problem = None if value is None else _sbatch_value_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("extra")
    @classmethod
    def _extra_options(cls, extra: dict[str, Any]) -> dict[str, Any]:
        return _sbatch_options(extra, _SET_BY_TP)

    def sbatch_options(self) -> dict[str, Any]:
        """account, qos, constraint and gres as sbatch options, under `extra`'s."""
        named = {
            k: getattr(self, k) for k in ("account", "qos", "constraint", "gres") if getattr(self, k) is not None
        }
        return {**named, **self.extra}

    def resolved(self) -> dict[str, Any]:
        """This block as the store keeps it: the profile's settings written out, so a sweep
        reads the same wherever (and whenever) its spec is read again."""
        return self.model_dump(exclude={"profile"}, exclude_none=True)


def check_profile_bounds(path: str | os.PathLike[str], name: str, profile: dict[str, Any]) -> None:
    """A clusters.yaml profile held to the executor block's types and bounds on its own, so that
    its bad value is blamed on the clusters file and the profile, not on a spec that names it."""
    from slurm.profiles import ProfileError  # scontrol and sacctmgr calls: only where a cluster is asked

    try:
        ExecutorSpec.model_validate(profile)
    except ValidationError as exc:
        raise ProfileError(f"{path}: {_format_validation_error(exc, within=name)}") from None


class RetrySpec(_Strict):
    """The supervisor's failure policy (orchestrator/control/policy.py)."""

    # max_per_job's bound also keeps backoff_s x 2**retries a finite float
    max_per_job: int = Field(5, ge=0, le=100)  # resubmissions of one job
    max_per_sweep: int = Field(100, ge=0, le=100_000)  # resubmissions of all the sweep's jobs together
    backoff_s: float = Field(30.0, ge=0, le=DAY_S)  # wait before a job's first retry; doubles each time
    backoff_max_s: float = Field(1800.0, ge=0, le=7 * DAY_S)
    timeout: bool = True  # resubmit a job that timed out after max_requeues
    exclude_after: int = Field(2, ge=1, le=1000)  # node failures on one node before jobs avoid it
    oom_mem_factor: float = Field(2.0, gt=1, le=16)  # an OOM job is resubmitted once with this x memory
    oom_max_mem_gb: float | None = Field(None, gt=0, le=MAX_MEM_GB)  # capped here (default 4 x executor.mem_gb)
    same_error_limit: int = Field(3, ge=1, le=100)  # the same failure on the same level this often: stop


class SupervisorSpec(_Strict):
    """The sweep's supervisor (`tp-sweep supervise`); the block's presence is `launch --supervise`.
    On Slurm it runs as a small job of its own that requeues itself before its time limit."""

    where: Literal["slurm", "local"] | None = None  # default: slurm for Slurm sweeps
    poll_s: float = Field(30.0, gt=0, le=3600)  # reconcile and act this often
    lease_s: float = Field(300.0, gt=0, le=DAY_S)  # a heartbeat older than this: taken over
    timeout_min: int = Field(240, ge=1, le=MAX_TIMEOUT_MIN)  # the supervisor job's time limit
    signal_delay_s: int = Field(60, ge=0, le=MAX_SIGNAL_DELAY_S)  # USR2 this long before it: requeue
    cpus: int = Field(1, ge=1, le=MAX_CPUS)
    mem_gb: float = Field(1.0, gt=0, le=MAX_MEM_GB)
    partition: str | None = None  # default: the executor's
    extra: dict[str, Any] | None = None  # sbatch options; default: the executor's

    @field_validator("extra")
    @classmethod
    def _extra_options(cls, extra: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if extra is None else _sbatch_options(extra, _SET_BY_SUPERVISOR)

    @model_validator(mode="after")
    def _lease_outlives_polls(self) -> SupervisorSpec:
        if self.lease_s < 3 * self.poll_s:
            raise ValueError(
                f"lease_s {self.lease_s:g} must be at least 3 x poll_s ({3 * self.poll_s:g}): "
                "a live supervisor renews its lease once a poll"
            )
        return self


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a YAML value, to find duplicates among axis values."""
    if isinstance(value, list):
        return ("list", tuple(_frozen(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((k, _frozen(v)) for k, v in value.items()))
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class SweepSpec(_Strict):
    name: str = Field(max_length=128)
    # A lab's pruning methods, {name: declaration} (core/method_decl.py): validated and made known
    # before the grid names them (fields are validated in this order).
    methods: dict[str, Any] = Field(default_factory=dict)
    trainer: TrainerSpec
    grid: dict[str, list[Any]]
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    db: str | None = None
    output_dir: str = "tp-runs"
    max_grid_points: int = Field(DEFAULT_MAX_GRID_POINTS, ge=1, le=1_000_000)
    search: SearchSpec | None = None  # an Optuna search in every grid cell (orchestrator/search/driver.py)
    retry: RetrySpec = Field(default_factory=RetrySpec)  # what the supervisor does on failures
    supervisor: SupervisorSpec | None = None  # present: launch starts the sweep's supervisor
    # same-code: a level trained by other code is not reused (the code is part of its id);
    # any: reused, and launch says from which code (docs/levels.md, "Reuse and code")
    reuse: Literal["same-code", "any"] = "same-code"

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, name: str) -> str:
        # The name becomes a folder (OUTPUT_DIR/_jobs/NAME) and a CLI argument.
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"{_short(name)} must start with a letter, digit or _ and use only letters, digits, _ . and -"
            )
        return name

    @field_validator("methods")
    @classmethod
    def _declared(cls, methods: dict[str, Any]) -> dict[str, Any]:
        from core.method_decl import register_declared, spec_methods  # pydantic only: torch-free

        register_declared(spec_methods(methods))
        return methods

    @field_validator("output_dir")
    @classmethod
    def _expanded(cls, output_dir: str) -> str:
        if not output_dir or _CONTROL.search(output_dir):
            raise ValueError(f"{_short(output_dir)} is not a usable folder name")
        expanded = os.path.expanduser(output_dir)
        if expanded.startswith("~"):
            raise ValueError(f"cannot expand {output_dir.split('/')[0]!r}: no such user")
        return expanded

    @field_validator("grid")
    @classmethod
    def _grid_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid.{key}: has no values")
            seen: set[Any] = set()
            for v in values:
                frozen = _frozen(v)
                try:
                    if frozen in seen:
                        raise ValueError(f"grid.{key}: duplicate value {_short(v)}")
                    seen.add(frozen)
                except TypeError:
                    pass  # an unhashable oddity; the trainer schema refuses it below
        methods = grid.get("method")
        if not methods:
            raise ValueError("grid.method is required (a list of pruning methods)")
        for m in methods:
            if isinstance(m, str) and m not in METHODS:
                try:  # a method an installed package publishes (entry points), read on first use
                    get_method(m)
                except ValueError as exc:
                    if not str(exc).startswith("unknown pruning method"):
                        raise ValueError(f"grid.method: {m}: {exc}") from None
            if not isinstance(m, str) or m not in METHODS:
                raise ValueError(f"grid.method: unknown method {_short(m)}; known: {', '.join(sorted(METHODS))}")
        needs_sparsity = any(METHODS[m].schedule != "dense" for m in methods)
        if needs_sparsity and not grid.get("sparsity"):
            raise ValueError("grid.sparsity is required for pruning methods")
        for s in grid.get("sparsity", []):
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
                raise ValueError(f"grid.sparsity: sparsity {_short(s)} is not a number")
            if not 0.0 <= float(s) < 1.0:
                raise ValueError(f"grid.sparsity: sparsity {s} is outside [0, 1)")
        for s in grid.get("seed", [0]):
            if isinstance(s, bool) or not isinstance(s, int):
                raise ValueError(f"grid.seed: seed {_short(s)} is not an integer")
            if not 0 <= s < SEED_LIMIT:
                raise ValueError(f"grid.seed: seed {s} is outside [0, 2**63)")
        return grid

    @model_validator(mode="after")
    def _bounded_and_valid(self) -> SweepSpec:
        # Multiply the axis lengths before anything expands the product.
        points = math.prod(len(v) for v in self.grid.values())
        if points > self.max_grid_points:
            sizes = " x ".join(f"{len(v)} {k}" for k, v in self.grid.items())
            raise ValueError(
                f"grid: {sizes} is {points:,} grid points, more than "
                f"max_grid_points {self.max_grid_points:,} (raise it if you mean it)"
            )
        _check_trainer_configs(self)
        if self.search is not None:
            _check_search_params(self)
        return self

    @property
    def axes(self) -> list[str]:
        return list(self.grid)


def _with(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with dotted overrides, copying only the dicts on the overridden paths (this runs
    once per grid combination, so no deep copy of the whole config)."""
    cfg = dict(base)
    for key, value in overrides.items():
        node = cfg
        for part in key.split(".")[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                break  # set_dotted below reports the bad key
            node[part] = dict(child)
            node = node[part]
        trainer_config.set_dotted(cfg, key, value)
    return cfg


def _config_with(spec: SweepSpec, base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The config a run with grid values `extra` gets. `base` is the preset with the spec's
    overrides; a value that picks a group option (`model: lenet`) recomposes the preset, as the
    planner does (core.config.resolve: group choices first, then dotted keys)."""
    if any(trainer_config.is_group_choice(k, v) for k, v in extra.items()):
        return trainer_config.resolve(spec.trainer.config, {**spec.trainer.overrides, **extra})
    return _with(base, extra)


def _check_trainer_configs(spec: SweepSpec) -> None:
    """Validate every trainer config a run of this sweep can get, before any run is planned:
    the named config, then with the overrides, then with each grid value and combination."""
    name = spec.trainer.config
    try:
        validate_config(trainer_config.load_config(name))
    except trainer_config.ConfigError as exc:
        raise ValueError(f"core.config: {exc}") from None
    try:
        base = trainer_config.resolve(name, spec.trainer.overrides)
        validate_config(base)
    except trainer_config.ConfigError as exc:
        raise ValueError(f"trainer.overrides: {exc}") from None
    axes = [k for k in spec.grid if k not in RESERVED_AXES]
    for axis in axes:  # one value at a time, so the message can name the axis
        for value in spec.grid[axis]:
            try:
                validate_config(_config_with(spec, base, {axis: value}))
            except trainer_config.ConfigError as exc:
                msg = str(exc)
                named = msg.startswith((f"{axis}:", f"{axis}["))
                raise ValueError(f"grid.{msg}" if named else f"grid.{axis}: {msg}") from None
    if len(axes) > 1:  # rules between two keys (model.hidden and model.name...) need the product
        for values in itertools.product(*(spec.grid[k] for k in axes)):
            try:
                validate_config(_config_with(spec, base, dict(zip(axes, values))))
            except trainer_config.ConfigError as exc:
                combo = ", ".join(f"{k}={_short(v)}" for k, v in zip(axes, values))
                raise ValueError(f"grid: with {combo}: {exc}") from None


def _check_search_params(spec: SweepSpec) -> None:
    """Every search parameter is a trainer key, not a grid axis, and every value its distribution
    can give (the ends; every choice) passes the trainer schema."""
    if spec.search is None:
        return
    base = _with(trainer_config.load_config(spec.trainer.config), spec.trainer.overrides)
    for key, dist in spec.search.params.items():
        if key in spec.grid:
            raise ValueError(f"search.params.{key}: also a grid axis; search it or grid it, not both")
        for value in dist.examples():
            try:
                validate_config(_with(base, {key: value}))
            except trainer_config.ConfigError as exc:
                raise ValueError(f"search.params.{key}: {exc}") from None


def _format_validation_error(exc: ValidationError, within: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (within, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        # Messages that already name their field (grid.sparsity: ...) keep just that name.
        lines.append(msg if not loc or msg.startswith((f"{loc}.", f"{loc}:")) else f"{loc}: {msg}")
    return "; ".join(lines)


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a sweep spec must be a YAML mapping, got {type(data).__name__}")
    if "name" not in data:
        raise SpecError(f"{source}: name: missing (every sweep needs a unique name)")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{source}: {_format_validation_error(exc)}") from None


def load_spec(path: str | Path) -> SweepSpec:
    return parse_spec(read_spec_data(path), str(path))


def read_spec_data(path: str | Path) -> Any:
    """The spec file's YAML, as data (what parse_spec takes); SpecError when it is unreadable."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)  # bounded: the path may be /dev/zero or a huge file
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec: {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: spec is larger than {MAX_SPEC_BYTES // 1024} KiB")
    try:
        data = trainer_config.load_yaml(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except Exception as exc:  # noqa: BLE001 - yaml raises several error types; all mean "not YAML"
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    return data
