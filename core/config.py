"""Trainer configs: presets under core/conf/ composed from config groups, with overrides.

Torch-free on purpose: the orchestrator resolves every run's config at plan time (and hashes it)
without paying for a torch import, or for hydra's. The same folder is hydra's config directory for
`python -m trainer`, and this module composes it the way hydra does (tests/test_hydra.py compares
the two), for the subset of hydra's defaults-list semantics the folder uses:

  - A preset (`conf/NAME.yaml`) may open with `defaults:`, a list whose entries are `GROUP: OPTION`
    (one key, a string value) or `_self_`. GROUP is a folder `conf/GROUP/`; its option
    `conf/GROUP/OPTION.yaml` holds that section's keys directly (hydra's default package for a
    group file is the group's name, so `conf/model/mlp.yaml` lands under `model:`).
  - Entries are merged in order, as OmegaConf merges: mappings key by key, recursively; anything
    else (lists, scalars, null) replaces. `_self_` is the preset's own keys; hydra appends it when
    it is missing, and so do we. Our presets put it last: their own keys override the groups'.
  - A group choice (`model: resnet18` in a spec, `model=resnet18` in hydra) replaces that group's
    entry in the defaults list, so the preset's own keys still apply on top of the new option.
  - Not supported (refused with an error, never silently different from hydra): defaults lists in
    group files, `optional`, `override`, `@package`, nested groups, interpolations (`${...}`), and
    choosing a group the preset's defaults list does not name.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError
from core.schema import known_key

CONF_DIR = Path(__file__).resolve().parent / "conf"


MAX_ALIASES = 50  # alias uses per document: plenty for reuse, too few for a bomb
MAX_EXPANDED_NODES = 100_000  # nodes once aliases are expanded (JSON, the store, sbatch expand them)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `5e-4` as a float (YAML 1.1 would make it a string), refuses
    duplicate keys (YAML keeps the last one silently) and bounds alias expansion (a few hundred
    bytes of nested aliases expand to gigabytes once serialised)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} alias uses (*name) in one document", event.start_mark
                )
        return super().compose_node(parent, index)

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None and self._aliases and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases expand this document to more than {MAX_EXPANDED_NODES:,} nodes",
                node.start_mark,
            )
        self._aliases = 0
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` then a key: overriding a merged key is the point
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key; the base class reports it
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: Any, memo: dict[int, int | None]) -> int:
    """Nodes in the document with every alias expanded, counted over the shared graph."""
    key = id(node)
    if key in memo:
        size = memo[key]
        if size is None:  # still being counted: the node contains an alias to itself
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to a node that contains it (a recursive structure)", node.start_mark
            )
        return size
    memo[key] = None
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(n, memo) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[key] = size
    return size


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_yaml(text_or_path: str | Path) -> Any:
    """Parse YAML text (or a file) with the project's loader."""
    if isinstance(text_or_path, Path):
        text_or_path = text_or_path.read_text()
    return yaml.load(text_or_path, Loader=_Loader)


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a file name, never a path out of conf/


def available_configs() -> list[str]:
    """The presets: `conf/*.yaml` (group options live in sub-folders)."""
    return sorted(p.stem for p in CONF_DIR.glob("*.yaml"))


def groups() -> list[str]:
    """Config groups: the folders of conf/ that hold options."""
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and any(p.glob("*.yaml")))


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def is_group_choice(key: str, value: Any) -> bool:
    """`model: resnet18` picks a group option; `model: {name: ...}` and `model.name: ...` set keys."""
    return isinstance(value, str) and "." not in key and (CONF_DIR / key).is_dir()


@functools.cache
def _parsed(path: Path) -> Any:
    """A conf file, parsed once per process (a grid checks thousands of combinations)."""
    cfg = load_yaml(path)
    if _has_interpolation(cfg):
        raise ConfigError(f"{path}: interpolations (${{...}}) are not supported here (core/config.py)")
    return cfg


def _has_interpolation(node: Any) -> bool:
    if isinstance(node, dict):
        return any(_has_interpolation(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_interpolation(v) for v in node)
    return isinstance(node, str) and "${" in node


def _load_file(path: Path, what: str) -> dict[str, Any]:
    cfg = _parsed(path)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{what} {path} is not a mapping")
    return copy.deepcopy(cfg)


def load_group_option(group: str, option: str) -> dict[str, Any]:
    path = CONF_DIR / group / f"{option}.yaml"
    if not isinstance(option, str) or not _NAME.fullmatch(option) or not path.is_file():
        raise ConfigError(f"{group}: unknown option {option!r}; options: {', '.join(group_options(group))}")
    cfg = _load_file(path, "group option")
    if "defaults" in cfg:
        raise ConfigError(f"{path}: a defaults list in a group option is not supported here")
    return cfg


def merge(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """OmegaConf's merge, in place on `base`: mappings key by key, anything else replaces."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _defaults(name: str, cfg: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The preset's defaults list as (group, option) pairs, ("_self_", None) where its own keys go."""
    entries = cfg.pop("defaults", None) or []
    if not isinstance(entries, list):
        raise ConfigError(f"trainer config {name}: defaults must be a list")
    out: list[tuple[str, str | None]] = []
    for e in entries:
        if e == "_self_":
            out.append(("_self_", None))
        elif (
            isinstance(e, dict)
            and len(e) == 1
            and isinstance(next(iter(e)), str)
            and _NAME.fullmatch(next(iter(e)))
            and isinstance(next(iter(e.values())), str)
        ):
            out.append(next(iter(e.items())))
        else:
            raise ConfigError(
                f"trainer config {name}: defaults entry {e!r} is not `GROUP: OPTION` or "
                "_self_ (the subset of hydra's defaults list supported here)"
            )
    if ("_self_", None) not in out:
        out.append(("_self_", None))  # hydra's rule too (with a warning)
    return out


def load_config(name: str, choices: dict[str, str] | None = None) -> dict[str, Any]:
    """The preset `name` composed from its groups, with `choices` replacing group options: a copy
    of the composition, made once per process for each (name, choices), as the files it reads are
    parsed once (a 10,000-point grid composes the same preset for each of its 2,500 runs)."""
    try:
        key = (str(CONF_DIR), name, tuple(sorted((choices or {}).items())))
        hash(key)
    except TypeError:  # not names: let the composition say what is wrong with them
        return _compose(name, choices)
    return copy.deepcopy(_composed(key))


@functools.cache
def _composed(key: tuple[str, Any, tuple[tuple[str, str], ...]]) -> dict[str, Any]:
    return _compose(key[1], dict(key[2]))  # key[0], the conf folder, is CONF_DIR


def _compose(name: str, choices: dict[str, str] | None) -> dict[str, Any]:
    path = CONF_DIR / f"{name}.yaml"
    # A name, not a path: `../../elsewhere` must not read YAML from outside core/conf/.
    if not isinstance(name, str) or not _NAME.fullmatch(name) or not path.is_file():
        raise ConfigError(f"unknown trainer config {name!r}; known: {', '.join(available_configs())}")
    own = _load_file(path, "trainer config")
    entries = _defaults(name, own)
    listed = {g for g, _ in entries}
    for group in choices or {}:
        if group not in listed:
            raise ConfigError(
                f"{group}: not a config group of {name} (its groups: "
                f"{', '.join(g for g, _ in entries if g != '_self_')})"
            )
    cfg: dict[str, Any] = {}
    for group, option in entries:
        if group == "_self_":
            merge(cfg, own)
        else:
            chosen = (choices or {}).get(group, option)
            assert chosen is not None  # _defaults pairs every group but _self_ with an option
            merge(cfg, {group: load_group_option(group, chosen)})
    return cfg


# Sections that are null while off and come on when a key inside them is set: the dotted path ->
# the group option whose file holds the section's defaults (`logging.wandb.project: x` turns W&B
# on with conf/logging/wandb.yaml's mode, tags, ... for the rest).
ON_DEMAND_SECTIONS = {"logging": ("logging", "none"), "logging.wandb": ("logging", "wandb")}


def _section_defaults(path: str) -> dict[str, Any]:
    group, option = ON_DEMAND_SECTIONS[path]
    data: Any = load_group_option(group, option)
    for part in path.split(".")[1:]:
        data = data.get(part) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}


def set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in place. The key must already exist: a typo in a sweep axis is an error,
    not a silently ignored setting (hydra's `key=value` without `+` behaves the same way).
    A mapping value replaces the whole section (a spec's `data: {name: digits, ...}`). A key
    inside a section that is off (null), such as `logging.wandb.project`, first fills that
    section with its defaults (ON_DEMAND_SECTIONS)."""
    parts = key.split(".")
    node: Any = cfg
    for i, part in enumerate(parts[:-1]):
        path = ".".join(parts[: i + 1])
        if isinstance(node, dict) and node.get(part, "absent") is None and path in ON_DEMAND_SECTIONS:
            node[part] = _section_defaults(path)
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"unknown trainer key {'.'.join(parts[: i + 1])!r} (in {key!r})")
        node = node[part]
    if not isinstance(node, dict) or (parts[-1] not in node and not _schema_knows(key)):
        raise ConfigError(f"unknown trainer key {key!r}")
    node[parts[-1]] = copy.deepcopy(value)


def _schema_knows(key: str) -> bool:
    """A schema option the presets leave unset (docs/levels.md: new options stay out of them,
    so no id changes) may still be set by a spec: `prune.layers_to_ignore`."""
    return known_key(key)


def get_dotted(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def split_overrides(overrides: dict[str, Any] | None) -> tuple[dict[str, str], dict[str, Any]]:
    """(group choices, dotted keys): choices are applied first, so `model: resnet18` with
    `model.width: ...` sets the width of resnet18, whatever order the spec wrote them in."""
    choices: dict[str, str] = {}
    dotted: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        (choices if is_group_choice(key, value) else dotted)[key] = value
    return choices, dotted


def resolve(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The named preset with its group choices, then every dotted override, applied."""
    choices, dotted = split_overrides(overrides)
    cfg = load_config(name, choices)
    for key, value in dotted.items():
        set_dotted(cfg, key, value)
    return cfg
