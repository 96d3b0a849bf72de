"""Does the store hold this sweep (or a run with this id prefix)? For a SQLite store, answered with
the standard library's sqlite3, read-only, before SQLAlchemy is imported.

Every command that names a sweep or run asks this first, so a typo answers in about a tenth of a
second instead of after SQLAlchemy's import (a quarter of a second; psycopg's is longer still, so
PostgreSQL stores go the ordinary way). The answer is only ever "certainly not there" or None,
"cannot tell here" (another backend, a URL with options, tables not created yet, any error); then
the command opens the store as usual and reaches the same verdict itself. Nothing is created: a
typo against a store that does not exist yet leaves no empty database behind.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing

_SQLITE = "sqlite:///"


def sqlite_path(url: str) -> str | None:
    """The file of a plain `sqlite:///PATH` URL (relative to the working directory, `~` expanded),
    or None for anything else (in-memory, URL options, other backends)."""
    if not url.startswith(_SQLITE) or "?" in url:
        return None
    path = url[len(_SQLITE) :]
    if path in ("", ":memory:"):
        return None
    return os.path.abspath(os.path.expanduser(path))


def missing_target(url: str, target: str, runs: bool = False) -> str | None:
    """The error message when the SQLite store at `url` certainly has no sweep named `target`
    (and, with `runs`, no run whose id starts with it); None when it has one or cannot tell."""
    path = sqlite_path(url)
    if path is None:
        return None
    shown = _SQLITE + path
    what = "sweep or run" if runs else "sweep named"
    if not os.path.exists(path):
        return f"no {what} {target!r} in {shown} (it has no store yet)"
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
            if conn.execute("SELECT 1 FROM sweeps WHERE name = ?", (target,)).fetchone():
                return None
            if (
                runs
                and target
                and conn.execute(
                    "SELECT 1 FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 1", (target, target + "\U0010ffff")
                ).fetchone()
            ):
                return None
            names = [n for (n,) in conn.execute("SELECT name FROM sweeps ORDER BY created_at, id")]
    except sqlite3.Error:  # no tables yet, locked past the timeout, not a database: the usual way
        return None
    if runs:
        return f"no sweep or run {target!r} in {shown}" + (f" (sweeps: {', '.join(names)})" if names else "")
    return f"no sweep named {target!r} in {shown}"
