"""`tp-sweep query` and what `plot` draws: a sweep's results as rows, filtered and grouped, or a
search's best trial per cell. The drawing and the tables stay in cli/render/."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from orchestrator.operations.status import search_metric, search_rows

if TYPE_CHECKING:
    from db.reader import StoreReader

# What `query --best` keeps of a search's cell, in this order.
BEST_COLUMNS = (
    "method",
    "sparsity",
    "seed",
    "axes",
    "trials",
    "complete",
    "running",
    "fail",
    "pruned",
    "best_value",
    "best_params",
    "best_trial",
    "best_run_id",
)


class NothingToShow(UserError):
    """The sweep has none of what was asked for (no search for --best, no finished metric to plot)."""


@dataclass(frozen=True)
class QueryRequest:
    """`query SWEEP`: `where` filters rows (db.queries' --where language), `group_by` gives the
    mean/std/n over the rest, `levels` a row per level of every run instead of per grid point."""

    sweep: str
    where: str | None = None
    group_by: tuple[str, ...] = ()
    levels: bool = False


@dataclass(frozen=True)
class QueryResult:
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class BestTrials:
    """`query --best`: a row per cell (BEST_COLUMNS), the cells whole, and the search's metric."""

    rows: list[dict[str, Any]]
    cells: list[dict[str, Any]]
    metric: str


def query(
    store: StoreReader, request: QueryRequest, on_warning: Callable[[str], None] | None = None
) -> QueryResult:
    """The sweep's results, one row per grid point (or level, or group). `on_warning` hears about
    a --where that is valid but most likely not what was meant, before it is applied."""
    from db.queries import grid_results, group, grouped_results  # SQLAlchemy (0.3 s): not for --help
    from db.where import compile_where, where_warnings  # SQLAlchemy (0.3 s), through db.reader

    by = list(request.group_by)
    if by and not request.where and not request.levels:
        fast = grouped_results(store, request.sweep, by)  # reads only what the groups need
        if fast is not None:
            return QueryResult(fast)
    rows = grid_results(store, request.sweep, levels=request.levels)
    if request.where:
        match = compile_where(request.where)
        for text in where_warnings(request.where):
            if on_warning is not None:
                on_warning(text)
        rows = [r for r in rows if match(r)]
    if by:
        rows = group(rows, by)
    return QueryResult(rows)


def best_trials(store: StoreReader, sweep: str) -> BestTrials:
    """The best trial of each cell of a sweep with a search."""
    cells = search_rows(store, sweep)
    if cells is None:
        raise NothingToShow(f"sweep {sweep!r} has no search (--best is for sweeps with a search: block)")
    rows = [{k: r.get(k) for k in BEST_COLUMNS} for r in cells]
    return BestTrials(rows, cells, search_metric(store, sweep))


def plot_rows(store: StoreReader, sweep: str, metric: str) -> list[dict[str, Any]]:
    """The grid points a plot of `metric` draws; an error when none has finished with it."""
    rows = query(store, QueryRequest(sweep)).rows
    if not any(r.get(metric) is not None for r in rows):
        raise NothingToShow(f"sweep {sweep!r} has no finished {metric} yet")
    return rows
