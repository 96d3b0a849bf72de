"""Results as pandas DataFrames, for notebooks: `import turboprune as tp; tp.grid_points(url, SWEEP)`.

Each function takes a store (a URL: `sqlite:///path.db` or `postgresql://...`; a path to a SQLite
file; or an open db.store.Store) and a sweep name, and returns a DataFrame whose columns are the
fields of `tp-sweep query --format json` (docs/json.md), so a notebook and the CLI agree:

    grid_points  one row per grid point (method x sparsity x seed x other axes), the level serving it
    levels       one row per level of every run (`query --levels`): trunk and branches
    epochs       one row per recorded epoch of every level of every run (a level shared by several
                 runs, such as level 0, appears under each), with the epoch's losses, accuracies,
                 lr, steps, seconds and images_per_s

Accuracies and sparsities are fractions; other grid axes are columns named by their dotted key.
pandas is imported here only (`pip install 'turboprune[notebook]'`): the rest of the tool does
not need it. Reading only: a SQLite file that does not exist is an error, never created.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

GRID_COLUMNS = (
    "sweep",
    "method",
    "sparsity",
    "seed",
    "run_id",
    "level",
    "level_id",
    "level_kind",
    "achieved_sparsity",
    "test_acc",
    "test_top5",
    "best_test_acc",
    "epochs",
    "state",
)
EPOCH_COLUMNS = (
    "sweep",
    "method",
    "seed",
    "run_id",
    "level",
    "level_id",
    "level_kind",
    "sparsity",
    "epoch",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "test_top5",
    "lr",
    "steps",
    "seconds",
    "images_per_s",
)


def store_url(source: str | os.PathLike) -> str:
    """A store URL from a URL or a SQLite file path (relative paths and ~ resolved)."""
    text = os.fspath(source)
    if "://" not in text:
        text = "sqlite:///" + os.path.abspath(os.path.expanduser(text))
    from db.engine import resolve_url  # SQLAlchemy (0.3 s)

    return resolve_url(text)


@contextmanager
def opened(source: Any) -> Iterator[Any]:
    """An open Store for `source` (closed afterwards unless the caller passed one in)."""
    from db.store import Store  # the ORM (SQLAlchemy, 0.4 s)

    if isinstance(source, Store):
        yield source
        return
    from db.engine import display_url, store_may_exist  # SQLAlchemy (0.3 s)

    url = store_url(source)
    if not store_may_exist(url):
        raise FileNotFoundError(f"no results store at {display_url(url)}")
    store = Store(url)
    try:
        yield store
    finally:
        store.close()


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]):
    import pandas as pd  # pandas (a second)

    cols = list(columns) + [k for k in (rows[0] if rows else {}) if k not in columns]
    return pd.DataFrame.from_records(rows, columns=cols)


def grid_points(source: Any, sweep: str):
    """One row per grid point: `tp-sweep query SWEEP --format json` as a DataFrame."""
    from db.queries import grid_results  # SQLAlchemy (0.3 s)

    with opened(source) as store:
        return _frame(grid_results(store, sweep), GRID_COLUMNS)


def levels(source: Any, sweep: str):
    """One row per level of every run: `tp-sweep query SWEEP --levels --format json`."""
    from db.queries import grid_results  # SQLAlchemy (0.3 s)

    with opened(source) as store:
        return _frame(grid_results(store, sweep, levels=True), GRID_COLUMNS)


def epochs(source: Any, sweep: str):
    """One row per recorded epoch of every level of every run of the sweep."""
    from db.queries import epoch_results  # SQLAlchemy (0.3 s)

    with opened(source) as store:
        return _frame(epoch_results(store, sweep), EPOCH_COLUMNS)


def sweeps(source: Any) -> list[str]:
    """The names of the store's sweeps, oldest first."""
    with opened(source) as store:
        return store.sweep_names()
