"""Typed schema of the trainer config (core/conf/*.yaml after overrides), and its validator.

One stdlib dataclass per section, with plain field types (int, float, str, bool, Optional, list,
nested dataclasses) so the same classes can be registered as hydra structured configs. Ranges and
choices live in `field(metadata=...)`, which hydra ignores and `validate_config` reads:

    ge / gt / le / lt   numeric bounds (for a list: of every element)
    range               (lo, hi), both inclusive
    choices             the allowed values
    min_len / max_len   list length

A field without a default must be present. A field with a default may be omitted: the default is
what the trainer uses when the key is absent (`cfg.get(key, default)`), so a key the trainer
passes to int() is typed int and an explicit null is refused; Optional fields are those where
the trainer reads null as "not set". Sections differ per data set (digits has no train_path,
imagenet has resolution...), so the data section lists every key any loader reads.

Torch-free on purpose: `--dry-run` validates every run's config and must answer in about a
second. Names from torch-side registries (model.name, data.name) stay plain strings here;
orchestrator/plan/preflight.py checks them at launch. Optimizer and schedule names are fixed lists
(tests/test_bad_input.py checks them against trainer.optim).

Hydra note: these classes are not the configs' hydra schema. Used as one (a `defaults` entry, or
OmegaConf.structured merged under the YAML), they would materialise every default into the composed
config, which would change run ids and hand model options to builders that do not take them.
`python -m trainer` (cli/hydra_app.py) checks hydra's composition with `validate_config`
instead, the check a sweep gets, and registers the classes in hydra's ConfigStore only as group
`tp_schema`, for code that builds on them.
"""

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from core.errors import ConfigError
from core.methods import METHODS
from core.plugins import is_ref

OPTIMIZER_NAMES = ("sgd", "adamw")  # trainer.optim.OPTIMIZERS
SCHEDULE_NAMES = ("constant", "cosine", "multistep", "onecycle")  # trainer.optim.SCHEDULES
SEED_LIMIT = 2**63  # torch.manual_seed and the seed hashes take 64-bit seeds; keep them signed
MAX_BATCH = 2**20
MAX_STR = 4096  # paths and names; anything longer is a paste accident
MAX_PX = 4096
DEVICE_LOADER_SETS = ("cifar10", "cifar100")  # data.loader: device


def _f(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A field with validation metadata; lists get a default_factory (dataclasses require it)."""
    if isinstance(default, list):
        items = tuple(default)
        return field(default_factory=lambda: list(items), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    name: str = _f()
    # Options of some builders only (mlp, deit_*): orchestrator/plan/preflight.py checks which model
    # takes which against the builders' signatures.
    hidden: list[int] = _f([128, 128], ge=1, le=MAX_BATCH, max_len=64)
    patch_size: Optional[int] = _f(None, ge=1, le=MAX_PX)
    batch_norm: bool = _f(False)  # mlp: BatchNorm1d after each hidden Linear


@dataclass
class DataConfig:
    name: str = _f()
    batch_size: int = _f(ge=1, le=MAX_BATCH)
    test_batch_size: Optional[int] = _f(None, ge=1, le=MAX_BATCH)  # null: batch_size
    num_workers: int = _f(0, ge=0, le=1024)  # absent: the loader's default (FFCV: 0 = CPUs)
    subset: Optional[int] = _f(None, ge=1)
    # in-memory data sets (digits, synthetic)
    normalize: bool = _f(True)
    data_seed: int = _f(0, ge=0, lt=SEED_LIMIT)
    shape: list[int] = _f([3, 8, 8], ge=1, le=MAX_PX, min_len=3, max_len=3)
    classes: int = _f(10, ge=2, le=1_000_000)
    size: int = _f(1024, ge=1, le=10_000_000)  # generated in memory: bound it
    test_size: int = _f(256, ge=1, le=10_000_000)
    noise: float = _f(1.0, ge=0)
    # FFCV betons and image folders
    train_path: Optional[str] = _f(None)
    val_path: Optional[str] = _f(None)
    root: Optional[str] = _f(None)
    os_cache: bool = _f(True)
    batches_ahead: int = _f(3, ge=1, le=64)
    resolution: int = _f(224, ge=1, le=MAX_PX)
    val_resolution: Optional[int] = _f(None, ge=1, le=MAX_PX)  # null: resolution
    min_res: Optional[int] = _f(None, ge=1, le=MAX_PX)  # set: progressive resizing
    max_res: Optional[int] = _f(None, ge=1, le=MAX_PX)  # null: resolution
    end_ramp: int = _f(0, ge=0)
    start_ramp: int = _f(0, ge=0)
    mean: Optional[list[float]] = _f(None, range=(0, 255), min_len=3, max_len=3)  # 0..255 scale
    std: Optional[list[float]] = _f(None, gt=0, le=255, min_len=3, max_len=3)
    num_classes: Optional[int] = _f(None, ge=2, le=1_000_000)
    recipe: Optional[str] = _f(None, choices=("cifar", "imagenet"))
    # cifar10/cifar100: null or ffcv, FFCV's loader (what every config without the key computes,
    # hashed as if absent); device, the device-resident one (other batches: its own ids)
    loader: Optional[str] = _f(None, choices=("ffcv", "device"))


@dataclass
class OptimizerConfig:
    name: str = _f(choices=OPTIMIZER_NAMES)
    lr: float = _f(gt=0)
    momentum: float = _f(0.0, ge=0, lt=1)
    nesterov: bool = _f(False)
    weight_decay: float = _f(0.0, ge=0)  # absent: torch's default (sgd 0, adamw 0.01)
    betas: list[float] = _f([0.9, 0.999], ge=0, lt=1, min_len=2, max_len=2)  # adamw; torch's range


@dataclass
class ScheduleConfig:
    name: str = _f(choices=SCHEDULE_NAMES)
    epochs: int = _f(ge=1, le=100_000)
    warmup_epochs: float = _f(0.0, ge=0)
    milestones: list[int] = _f([], ge=1, max_len=1000)  # multistep: lr *= gamma at each
    gamma: float = _f(0.1, gt=0, le=1)
    peak_epoch: float = _f(1.0, ge=0)  # onecycle


@dataclass
class PruneConfig:
    # Below 0.01 a sparsity of 0.99 takes over 450 levels per run; above 0.9 a level removes
    # nearly everything that is left.
    rate: float = _f(range=(0.01, 0.9))
    landing: str = _f("branch", choices=("branch", "trunk"))
    scope: str = _f("global", choices=("global", "layerwise"))
    keep_first_last_dense: bool = _f(False)
    # Weights kept dense: parameter or module names, fnmatch globs of them, <first>, <last>.
    # Unset (not in the presets): every level keeps its id; set, the pruning levels get new ones.
    layers_to_ignore: list[str] = _f([], max_len=256)
    rewind_epochs: float = _f(0.0, ge=0)
    rewind_iterations: Optional[int] = _f(None, ge=0)  # null: rewind_epochs decides
    rewind_optimizer: bool = _f(False)
    snip_batches: int = _f(1, ge=1, le=1024)  # kept in memory while scoring: bound them
    synflow_rounds: int = _f(100, ge=1, le=10_000)
    erk_power_scale: float = _f(1.0, ge=0)
    prune_batches: int = _f(1, ge=1, le=1024)


@dataclass
class TrainConfig:
    label_smoothing: float = _f(0.0, ge=0, lt=1)
    precision: str = _f("auto", choices=("auto", "fp32", "bf16"))
    channels_last: Union[bool, str] = _f("auto", choices=(True, False, "auto"))
    compile: bool = _f(False)
    deterministic: bool = _f(False)
    eval_every: int = _f(1, ge=1)


@dataclass
class WandbConfig:
    project: str = _f()
    entity: Optional[str] = _f(None)
    # auto: online when a W&B API key is set (WANDB_API_KEY or a login), offline otherwise
    mode: str = _f("auto", choices=("auto", "online", "offline", "disabled"))
    dir: Optional[str] = _f(None)  # where W&B writes its files; default: OUTPUT_DIR/wandb
    tags: list[str] = _f([], max_len=64)


@dataclass
class LoggingConfig:
    wandb: Optional[WandbConfig] = _f(None)  # null: W&B off (and never imported)


@dataclass
class TrainerConfig:
    # the built-in methods and any a spec or an installed package declared (core/method_decl.py)
    method: str = _f(choices=lambda: tuple(sorted(METHODS)))
    seed: int = _f(ge=0, lt=SEED_LIMIT)
    model: ModelConfig = _f()
    data: DataConfig = _f()
    optimizer: OptimizerConfig = _f()
    schedule: ScheduleConfig = _f()
    prune: PruneConfig = _f()
    train: TrainConfig = _f()
    logging: Optional[LoggingConfig] = _f(None)  # where metrics go besides the store; no effect on results


def known_key(dotted: str) -> bool:
    """Whether `a.b.c` names a field of the trainer config's schema."""
    cls: Any = TrainerConfig
    for part in dotted.split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            return False
        cls = _rules(cls)[part].tp
    return True


# ---- validation ------------------------------------------------------------------------------
class _Rule(typing.NamedTuple):
    """One field, read from its type and metadata once (validation runs per grid combination)."""

    name: str
    kind: str  # "section" | "choices" | "list" | "scalar"
    tp: Any  # the section's class, the list's element type, or the scalar type
    nullable: bool
    required: bool
    meta: dict[str, Any]


_RULES: dict[type, dict[str, _Rule]] = {}


def _rules(cls: type) -> dict[str, _Rule]:
    if cls not in _RULES:
        hints = typing.get_type_hints(cls)
        rules = {}
        for f in dataclasses.fields(cls):
            tp, nullable = hints[f.name], False
            args = typing.get_args(tp)
            if typing.get_origin(tp) is Union and type(None) in args:
                nullable = True
                (tp,) = [a for a in args if a is not type(None)]
            meta = dict(f.metadata)
            if dataclasses.is_dataclass(tp):
                kind = "section"
            elif "choices" in meta:
                kind = "choices"
            elif typing.get_origin(tp) is list:
                kind, (tp,) = "list", typing.get_args(tp)
            else:
                kind = "scalar"
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            rules[f.name] = _Rule(f.name, kind, tp, nullable, required, meta)
        _RULES[cls] = rules
    return _RULES[cls]


def _show(value: Any) -> str:
    """A value as the user wrote it, cut short (an error must not print a pasted megabyte)."""
    if value is True or value is False:
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _show_limit(x: float) -> str:
    if isinstance(x, int) and x >= 2**16 and x & (x - 1) == 0:
        return f"2**{x.bit_length() - 1}"
    return str(x)


_NOUN = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_NOUNS = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}


def _scalar_ok(tp: type, value: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def _bounds(key: str, value: Any, meta: dict[str, Any]) -> str | None:
    """The first bound `value` breaks, as a message; None when it keeps them all."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{key}: {_show(value)} is not a finite number"
    if isinstance(value, str):
        if len(value) > MAX_STR:
            return f"{key}: a string of {len(value)} characters is longer than {MAX_STR}"
        return None
    if "range" in meta:
        lo, hi = meta["range"]
        if not lo <= value <= hi:
            return f"{key}: {_show(value)} is outside [{lo}, {hi}]"
    if "ge" in meta and not value >= meta["ge"]:
        return f"{key}: {_show(value)} is below the minimum {_show_limit(meta['ge'])}"
    if "gt" in meta and not value > meta["gt"]:
        return f"{key}: {_show(value)} must be greater than {_show_limit(meta['gt'])}"
    if "le" in meta and not value <= meta["le"]:
        return f"{key}: {_show(value)} is above the maximum {_show_limit(meta['le'])}"
    if "lt" in meta and not value < meta["lt"]:
        return f"{key}: {_show(value)} must be less than {_show_limit(meta['lt'])}"
    return None


def _check_list(key: str, value: Any, rule: _Rule) -> str | None:
    elem = rule.tp
    if not isinstance(value, list):
        return f"{key}: {_show(value)} is not a list of {_NOUNS[elem]}"
    for i, v in enumerate(value):
        if not _scalar_ok(elem, v):
            return f"{key}[{i}]: {_show(v)} is not {_NOUN[elem]}"
    lo, hi = rule.meta.get("min_len", 0), rule.meta.get("max_len", math.inf)
    if not lo <= len(value) <= hi:
        want = f"exactly {lo}" if lo == hi else f"at most {hi}" if lo == 0 else f"{lo} to {hi}"
        return f"{key}: {_show(value)} has {len(value)} values; allowed: {want}"
    for i, v in enumerate(value):
        problem = _bounds(f"{key}[{i}]", v, rule.meta)
        if problem:
            return problem
    return None


def _check(key: str, value: Any, rule: _Rule, out: list[str]) -> None:
    """Append to `out` what is wrong with `value` under `rule`."""
    if value is None and rule.nullable:
        return
    if rule.kind == "section":
        _check_section(key, value, rule.tp, out)
        return
    if rule.kind == "choices":
        # Compared by type too: YAML's `1` must not pass for `true` (1 == True in Python).
        choices = rule.meta["choices"]
        if callable(choices):  # names registered at run time (the methods)
            choices = choices()
        if not any(type(value) is type(c) and value == c for c in choices):
            allowed = ", ".join(c if isinstance(c, str) else _show(c) for c in choices)
            out.append(f"{key}: {_show(value)} is not one of {allowed}")
        return
    if rule.kind == "list":
        problem = _check_list(key, value, rule)
    elif not _scalar_ok(rule.tp, value):
        problem = f"{key}: {_show(value)} is not {_NOUN[rule.tp]}"
    else:
        problem = _bounds(key, value, rule.meta)
    if problem:
        out.append(problem)


def _check_section(prefix: str, section: Any, cls: type, out: list[str]) -> None:
    if not isinstance(section, dict):
        where = f"{prefix}: " if prefix else ""
        out.append(f"{where}{_show(section)} is not a mapping (the {prefix or 'config'} section)")
        return
    rules = _rules(cls)
    lab = cls in (ModelConfig, DataConfig) and is_ref(section.get("name"))
    for key in section:
        if lab and key not in rules:  # a lab's model or data set takes options of its own
            problem = _lab_option(f"{prefix}.{key}", section[key])
            if problem:
                out.append(problem)
        elif key not in rules:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            out.append(f"{dotted}: unknown key; known: {', '.join(rules)}")
    for name, rule in rules.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in section:
            _check(dotted, section[name], rule, out)
        elif rule.required:
            out.append(f"{dotted}: missing (required)")


def _lab_option(key: str, value: Any, depth: int = 0) -> str | None:
    """A lab model's or data set's own option: JSON (numbers, strings, true/false, null, lists and
    mappings of them), bounded; its builder's signature is checked at launch."""
    if value is None or isinstance(value, (bool, int, str)):
        return _bounds(key, value, {}) if isinstance(value, str) else None
    if isinstance(value, float):
        return _bounds(key, value, {})
    if depth < 4 and isinstance(value, list) and len(value) <= 1024:
        return next((p for v in value if (p := _lab_option(key, v, depth + 1))), None)
    if depth < 4 and isinstance(value, dict) and len(value) <= 256:
        return next((p for k, v in value.items() if (p := _lab_option(f"{key}.{k}", v, depth + 1))), None)
    return f"{key}: {_show(value)} is not an option a lab's model or data set can take (JSON values)"


def _cross_checks(cfg: dict[str, Any], out: list[str]) -> None:
    """Rules that involve two keys; run only when every key is individually valid."""
    opt = cfg["optimizer"]
    if opt["name"] == "sgd" and opt.get("nesterov") and not opt.get("momentum"):
        out.append("optimizer.nesterov: sgd's nesterov needs optimizer.momentum > 0")
    sched = cfg["schedule"]
    if sched.get("warmup_epochs", 0) > sched["epochs"]:
        out.append(
            f"schedule.warmup_epochs: {_show(sched['warmup_epochs'])} is past schedule.epochs {sched['epochs']}"
        )
    if sched["name"] == "onecycle" and sched.get("peak_epoch", 1) > sched["epochs"]:
        out.append(
            f"schedule.peak_epoch: {_show(sched['peak_epoch'])} is past schedule.epochs "
            f"{sched['epochs']} (the learning rate would never come down)"
        )
    data = cfg["data"]
    if data.get("loader") == "device" and data["name"] not in DEVICE_LOADER_SETS:
        out.append(
            f"data.loader: device is for {' and '.join(DEVICE_LOADER_SETS)}, not {_show(data['name'])} "
            "(synthetic_gpu is the device-resident set for benchmarks)"
        )
    if data.get("root") is not None and data["name"] in DEVICE_LOADER_SETS and data.get("loader") != "device":
        out.append(f"data.root: read by {data['name']}'s device loader only; set data.loader: device")
    if data.get("min_res") is not None:
        top = data.get("max_res") or data.get("resolution", 224)
        if data["min_res"] > top:
            out.append(f"data.min_res: {data['min_res']} is above data.max_res {top}")


def validate_config(cfg: Any) -> None:
    """Raise ConfigError naming every bad key of a resolved trainer config ("; "-separated)."""
    out: list[str] = []
    _check_section("", cfg, TrainerConfig, out)
    if not out:
        _cross_checks(cfg, out)
    if out:
        raise ConfigError("; ".join(out))
