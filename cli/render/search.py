"""What a search will do (`launch --dry-run`) and where it stands (`status`), for the terminal."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def search_plan(spec: Any, plan: Any) -> dict[str, Any]:
    """The search's plan: cells, trials, the space, and the most level trainings it can need."""
    s = spec.search
    per_cell = s.trials_per_cell()
    levels_per_trial = max((p.naive_levels for p in plan.points), default=1)
    return {
        "cells": len(plan.points),
        "trials_per_cell": per_cell,
        "trials": per_cell * len(plan.points),
        "in_flight": spec.executor.array_parallelism,
        "params": {k: d.describe() for k, d in s.params.items()},
        "sampler": s.sampler.name,
        "sampler_seed": s.sampler.seed,
        "direction": s.direction,
        "metric": s.metric,
        "pruner": s.pruner.name if s.pruner else "none",
        "max_retries": s.max_retries,
        # Trials share levels (level 0 across learning rates cannot be shared, but repeats can):
        # this is the bound with no sharing at all.
        "level_trainings_at_most": per_cell * sum(p.naive_levels for p in plan.points),
        "levels_per_trial_at_most": levels_per_trial,
    }


def print_search_plan(console: Any, info: dict[str, Any], kind: str) -> None:
    console.print(
        f"search: {info['cells']} cells x {info['trials_per_cell']} trials = "
        f"{info['trials']} trials, {info['in_flight']} in flight ({kind}); sampler "
        f"{info['sampler']} (seed {info['sampler_seed']}), {info['direction']} "
        f"{info['metric']} of the level serving each cell's target; pruner {info['pruner']}; "
        f"failed trials retried up to {info['max_retries']} times; at most "
        f"{info['level_trainings_at_most']} level trainings. Nothing submitted."
    )
    t = Table(title="search space", title_justify="left")
    t.add_column("parameter", no_wrap=True)
    t.add_column("distribution", overflow="fold")
    for k, d in info["params"].items():
        t.add_row(k, d)
    console.print(t)


def search_table(sweep: str, rows: list[dict[str, Any]]) -> Table:
    t = Table(
        title=f"{sweep}: search, trials per cell: done/running/failed/pruned, and the best", title_justify="left"
    )
    t.add_column("method", no_wrap=True)
    t.add_column("sparsity", justify="right", no_wrap=True)
    t.add_column("seed", justify="right", no_wrap=True)
    t.add_column("trials", justify="right", no_wrap=True)
    t.add_column("best", justify="right", no_wrap=True)
    t.add_column("best params", overflow="fold", min_width=24)
    for r in rows:
        best = r.get("best_value")
        in_flight = r.get("running", 0) + r.get("waiting", 0)
        trials = f"{r.get('complete', 0)}/{in_flight}/{r.get('fail', 0)}/{r.get('pruned', 0)}"
        params = ", ".join(f"{k}={_short(v)}" for k, v in (r.get("best_params") or {}).items())
        t.add_row(
            r["method"],
            f"{r['sparsity']:g}",
            str(r["seed"]),
            trials,
            "-" if best is None else f"{best:.4g}",
            params or "-",
        )
    return t


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
