"""Sweep specs: the YAML a researcher writes, validated into typed objects.

Everything a spec can get wrong is caught here, before anything is planned, recorded or
submitted, and reported as `field: problem` so the user knows which line to fix.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainer import config as trainer_config
from trainer.pruning.registry import METHODS

RESERVED_AXES = ("method", "sparsity", "seed")


class SpecError(ValueError):
    """A sweep spec that cannot be used; the message names the offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainerSpec(_Strict):
    config: str
    overrides: dict[str, Any] = Field(default_factory=dict)


class ExecutorSpec(_Strict):
    kind: Literal["slurm", "local", "debug"] = "local"
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    procs_per_node: int = Field(1, ge=1)
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: float = Field(4.0, gt=0)
    timeout_min: int = Field(60, ge=1)
    partition: str | None = None
    array_parallelism: int = Field(16, ge=1)
    signal_delay_s: int = Field(120, ge=0)
    max_requeues: int = Field(3, ge=0)
    extra: dict[str, Any] = Field(default_factory=dict)


class SweepSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=128)
    trainer: TrainerSpec
    grid: dict[str, list[Any]]
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    db: str | None = None
    output_dir: str = "tp-runs"

    @field_validator("grid")
    @classmethod
    def _grid_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"axis {key!r} has no values")
        methods = grid.get("method")
        if not methods:
            raise ValueError("grid.method is required (a list of pruning methods)")
        for m in methods:
            if m not in METHODS:
                raise ValueError(f"unknown method {m!r}; known: {', '.join(sorted(METHODS))}")
        needs_sparsity = any(METHODS[m].schedule != "dense" for m in methods)
        if needs_sparsity and not grid.get("sparsity"):
            raise ValueError("grid.sparsity is required for pruning methods")
        for s in grid.get("sparsity", []):
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
                raise ValueError(f"sparsity {s!r} is not a number")
            if not 0.0 <= float(s) < 1.0:
                raise ValueError(f"sparsity {s} is outside [0, 1)")
        for s in grid.get("seed", [0]):
            if isinstance(s, bool) or not isinstance(s, int):
                raise ValueError(f"seed {s!r} is not an integer")
        return grid

    @model_validator(mode="after")
    def _trainer_keys_resolve(self) -> "SweepSpec":
        # Resolving one representative config checks the config name and every dotted key
        # (overrides and extra grid axes) against the trainer's real config.
        extra_axes = {k: v[0] for k, v in self.grid.items() if k not in RESERVED_AXES}
        try:
            trainer_config.resolve(self.trainer.config, {**self.trainer.overrides, **extra_axes})
        except trainer_config.ConfigError as exc:
            raise ValueError(f"trainer: {exc}") from None
        return self

    @property
    def axes(self) -> list[str]:
        return list(self.grid)


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "spec"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
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
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec: {exc.strerror or exc}") from None
    try:
        data = trainer_config.load_yaml(text)
    except Exception as exc:  # yaml raises several error types; all mean "not YAML"
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(data, str(path))
