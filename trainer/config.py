"""Trainer configs: YAML files under trainer/conf/, resolved with dotted overrides.

Torch-free on purpose: the orchestrator resolves every run's config at plan time (and hashes it)
without paying for a torch import. The same files are hydra's config directory for
`python -m trainer key=value`.
"""
from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).resolve().parent / "conf"


class ConfigError(ValueError):
    """A trainer config or override that cannot be resolved."""


MAX_ALIASES = 50          # alias uses per document: plenty for reuse, too few for a bomb
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
                    None, None, f"more than {MAX_ALIASES} alias uses (*name) in one document",
                    event.start_mark)
        return super().compose_node(parent, index)

    def compose_document(self) -> Any:
        node = super().compose_document()
        if self._aliases and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"aliases expand this document to more than {MAX_EXPANDED_NODES:,} "
                "nodes", node.start_mark)
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
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: Any, memo: dict[int, int | None]) -> int:
    """Nodes in the document with every alias expanded, counted over the shared graph."""
    key = id(node)
    if key in memo:
        size = memo[key]
        if size is None:  # still being counted: the node contains an alias to itself
            raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains "
                                              "it (a recursive structure)", node.start_mark)
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


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONF_DIR.glob("*.yaml"))


def load_config(name: str) -> dict[str, Any]:
    path = CONF_DIR / f"{name}.yaml"
    # A name, not a path: `../../elsewhere` must not read YAML from outside trainer/conf/.
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or not path.is_file():
        raise ConfigError(
            f"unknown trainer config {name!r}; known: {', '.join(available_configs())}"
        )
    cfg = _parsed(str(path), path.stat().st_mtime_ns)
    if not isinstance(cfg, dict):
        raise ConfigError(f"trainer config {path} is not a mapping")
    return copy.deepcopy(cfg)


@functools.lru_cache(maxsize=64)
def _parsed(path: str, mtime_ns: int) -> Any:
    """A config file parsed once per version: the planner resolves one config per run, and
    parsing the YAML each time made planning 10,000 grid points take half a minute."""
    return load_yaml(Path(path))


def set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in place. The key must already exist: a typo in a sweep axis is an error,
    not a silently ignored setting (hydra's `key=value` without `+` behaves the same way)."""
    parts = key.split(".")
    node: Any = cfg
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"unknown trainer key {'.'.join(parts[: i + 1])!r} (in {key!r})")
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        raise ConfigError(f"unknown trainer key {key!r}")
    node[parts[-1]] = copy.deepcopy(value)


def get_dotted(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def resolve(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The named config with every dotted override applied."""
    cfg = load_config(name)
    for key, value in (overrides or {}).items():
        set_dotted(cfg, key, value)
    return cfg
