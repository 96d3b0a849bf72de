"""What a search will do (`launch --dry-run`) and where it stands (`status`), for the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from cli.render.tables import PERCENT, number

if TYPE_CHECKING:
    from orchestrator.plan.grid import SweepPlan  # types only
    from orchestrator.plan.spec import SweepSpec  # types only


def search_plan(spec: SweepSpec, plan: SweepPlan) -> dict[str, Any]:
    """The search's plan: cells, trials, the space, and the most level trainings it can need."""
    s = spec.search
    assert s is not None, "search_plan: a sweep without search:"  # callers check spec.search first
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


def _best(value: float | None, metric: str) -> str:
    """The best value as the other tables show the metric: an accuracy in percent."""
    if value is None:
        return "-"
    return f"{value * 100:.2f}" if metric in PERCENT else f"{value:.4g}"


def _unit(metric: str) -> str:
    return " (%)" if metric in PERCENT else ""


def search_table(sweep: str, rows: list[dict[str, Any]], metric: str = "test_acc") -> Table:
    t = Table(
        title=f"{sweep}: search, trials per cell: done/running/failed/pruned, and the best",
        title_justify="left",
    )
    t.add_column("method", no_wrap=True)
    t.add_column("sparsity", justify="right", no_wrap=True)
    t.add_column("seed", justify="right", no_wrap=True)
    t.add_column("trials", justify="right", no_wrap=True)
    t.add_column(f"best{_unit(metric)}", justify="right", no_wrap=True)
    t.add_column("best params", overflow="fold", min_width=24)
    for r in rows:
        in_flight = r.get("running", 0) + r.get("waiting", 0)
        trials = f"{r.get('complete', 0)}/{in_flight}/{r.get('fail', 0)}/{r.get('pruned', 0)}"
        params = ", ".join(f"{k}={number(v)}" for k, v in (r.get("best_params") or {}).items())
        t.add_row(
            r["method"],
            f"{r['sparsity']:g}",
            str(r["seed"]),
            trials,
            _best(r.get("best_value"), metric),
            params or "-",
        )
    return t


def best_renderables(sweep: str, rows: list[dict[str, Any]], metric: str) -> list[Any]:
    """`query SWEEP --best` for the terminal: each cell's best trial as keys and values, a line
    each, so that its value and every searched parameter show whole at any width (as the
    columns of one table they were dropped below 200 columns). The keys are the JSON's."""
    from rich.text import Text  # rich (0.025 s): not for JSON or --help

    if not rows:
        return [Text(f"{sweep}: no search cells yet")]
    direction = rows[0].get("direction", "")
    out: list[Any] = [Text(f"{sweep}: the best trial per cell ({direction} {metric})".replace("( ", "("))]
    for r in rows:
        axes = "".join(f"  {k} {number(v)}" for k, v in (r.get("axes") or {}).items())
        out.append(Text(f"{r['method']}  sparsity {r['sparsity']:g}  seed {r['seed']}{axes}", style="bold"))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        in_flight = r.get("running", 0) + r.get("waiting", 0)
        grid.add_row(
            "  trials",
            f"{r.get('trials', 0)}: {r.get('complete', 0)} complete, {in_flight} running, "
            f"{r.get('fail', 0)} failed, {r.get('pruned', 0)} pruned",
        )
        grid.add_row(f"  best_value{_unit(metric)}", _best(r.get("best_value"), metric))
        params = r.get("best_params") or {}
        grid.add_row("  best_params", "" if params else "-")
        for k, v in params.items():
            grid.add_row(f"    {k}", number(v))
        grid.add_row("  best_trial", "-" if r.get("best_trial") is None else str(r["best_trial"]))
        grid.add_row("  best_run_id", str(r.get("best_run_id") or "-")[:8])
        out.append(grid)
    out.append(
        Text(
            "(--format csv or json: every field, "
            + ("the value a fraction, not percent)" if metric in PERCENT else "the value in full)"),
            style="dim",
        )
    )
    return out
