"""Trainer configs: YAML files under trainer/conf/, resolved with dotted overrides.

Torch-free on purpose: the orchestrator resolves every run's config at plan time (and hashes it)
without paying for a torch import. The same files are hydra's config directory for
`python -m trainer key=value`.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).resolve().parent / "conf"


class ConfigError(ValueError):
    """A trainer config or override that cannot be resolved."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `5e-4` as a float (YAML 1.1 would make it a string)."""


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
    if not path.is_file():
        raise ConfigError(
            f"unknown trainer config {name!r}; known: {', '.join(available_configs())}"
        )
    cfg = load_yaml(path)
    if not isinstance(cfg, dict):
        raise ConfigError(f"trainer config {path} is not a mapping")
    return cfg


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
