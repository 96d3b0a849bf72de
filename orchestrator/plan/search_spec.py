"""The `search:` block of a sweep spec: an Optuna search run in every grid cell.

    search:
      params:                          # dotted trainer keys -> distributions
        optimizer.lr: {type: log_float, low: 0.01, high: 0.5}
        optimizer.weight_decay: {type: float, low: 0.0, high: 0.001}
        model.hidden: {type: categorical, choices: [[64], [128]]}
      n_trials: 8                      # per cell
      sampler: {name: tpe, seed: 0}    # tpe | random | grid
      direction: maximize              # maximize | minimize
      metric: test_acc                 # of the level that serves the cell's target
      pruner: {name: median, n_startup_trials: 2, n_warmup_steps: 1}   # optional
      max_retries: 2                   # a FAILED or LOST trial is retried this often

Validated here, before anything is recorded: every distribution is well formed, every key is a
real trainer key and not a grid axis, and every value a distribution can produce passes the
trainer schema (its bounds and, for categorical, every choice).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

METRICS = ("test_acc", "best_test_acc", "test_top5", "test_loss")
MAX_TRIALS = 10_000
MAX_CHOICES = 256


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Strict):
    type: Literal["float", "log_float", "int", "log_int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _well_formed(self) -> Distribution:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty list of choices")
            if len(self.choices) > MAX_CHOICES:
                raise ValueError(f"{len(self.choices)} choices; at most {MAX_CHOICES}")
            if self.low is not None or self.high is not None or self.step is not None:
                raise ValueError("categorical takes choices, not low/high/step")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low and high, not choices")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs low and high")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        if self.type.startswith("log") and self.low <= 0:
            raise ValueError(f"{self.type} needs low > 0, got {self.low}")
        if self.type.endswith("int") and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"{self.type} needs integer low and high")
        if self.step is not None:
            if self.type.startswith("log"):
                raise ValueError(f"{self.type} takes no step")
            if not (math.isfinite(self.step) and self.step > 0):
                raise ValueError(f"step must be positive, got {self.step}")
        return self

    @property
    def ends(self) -> tuple[float, float]:
        """(low, high) of a numeric distribution, which the validator made sure it has."""
        assert self.low is not None and self.high is not None, f"{self.type} has no low and high"
        return self.low, self.high

    def examples(self) -> list[Any]:
        """Values to check against the trainer schema: the ends, and every choice."""
        if self.type == "categorical":
            return list(self.choices or [])
        low, high = self.ends
        if self.type.endswith("int"):
            return [int(low), int(high)]
        return [float(low), float(high)]

    def grid_values(self) -> list[Any] | None:
        """The finite set a grid sampler walks, or None when the distribution is continuous."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "int":
            low, high = self.ends
            step = int(self.step or 1)
            return list(range(int(low), int(high) + 1, step))
        if self.type == "float" and self.step:
            low, high = self.ends
            n = int(math.floor((high - low) / self.step + 1e-9))
            return [round(low + i * self.step, 12) for i in range(n + 1)]
        return None

    def describe(self) -> str:
        if self.type == "categorical":
            return f"categorical {self.choices}"
        step = f" step {self.step:g}" if self.step else ""
        return f"{self.type} [{self.low:g}, {self.high:g}]{step}"


class SamplerSpec(_Strict):
    name: Literal["tpe", "random", "grid"] = "tpe"
    seed: int = Field(0, ge=0, lt=2**32)


class PrunerSpec(_Strict):
    name: Literal["none", "median"] = "median"
    n_startup_trials: int = Field(2, ge=0, le=MAX_TRIALS)
    n_warmup_steps: int = Field(0, ge=0)


class SearchSpec(_Strict):
    params: dict[str, Distribution]
    n_trials: int = Field(ge=1, le=MAX_TRIALS)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    direction: Literal["maximize", "minimize"] = "maximize"
    metric: Literal["test_acc", "best_test_acc", "test_top5", "test_loss"] = "test_acc"
    pruner: PrunerSpec | None = None
    max_retries: int = Field(2, ge=0, le=20)

    @field_validator("params")
    @classmethod
    def _not_empty(cls, params: dict[str, Distribution]) -> dict[str, Distribution]:
        if not params:
            raise ValueError("the search space is empty: give at least one parameter")
        for key in params:
            if key in ("method", "seed", "sparsity"):
                raise ValueError(f"{key}: a grid axis, not a search parameter")
        return params

    @model_validator(mode="after")
    def _grid_is_finite(self) -> SearchSpec:
        if self.sampler.name == "grid":
            for key, dist in self.params.items():
                if dist.grid_values() is None:
                    raise ValueError(
                        f"sampler grid: params.{key} is continuous ({dist.describe()}); give it a step or choices"
                    )
        return self

    def grid_size(self) -> int | None:
        if self.sampler.name != "grid":
            return None
        return math.prod(len(d.grid_values() or []) for d in self.params.values())

    def trials_per_cell(self) -> int:
        size = self.grid_size()
        return self.n_trials if size is None else min(self.n_trials, size)
