"""What every `tp-sweep` command shares: the consoles, bad input (exit 2), opening the store."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape  # loaded by rich.console already

from db import requested_url
from db.probe import missing_target

console = Console()
err = Console(stderr=True)


class BadInput(Exception):
    """Reported as `error: ...` with exit status 2."""


def error(msg: str) -> None:
    # soft_wrap: the terminal wraps a long message, rich inserts no newlines of its own, so a
    # path or a name in it stays whole for whoever greps the log.
    err.print(f"[red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)


def open_store(url: str | None, spec_url: str | None = None, *, target: str | None = None, runs: bool = False):
    """The store at --db, TP_DB_URL, the spec's db: or the default. With `target`, the sweep (or,
    with `runs`, run-id prefix) the command is about: a SQLite store that certainly lacks it is an
    error before SQLAlchemy is even imported (db/probe.py)."""
    if target is not None:
        missing = missing_target(requested_url(url, spec_url), target, runs)
        if missing:
            raise BadInput(missing)
    from db.engine import StoreError, resolve_url  # SQLAlchemy: a quarter of a second
    from db.store import Store  # SQLAlchemy, 0.3 s

    try:
        return Store(resolve_url(url, spec_url))
    except StoreError as exc:
        raise BadInput(str(exc)) from None


def report_bad_levels(bad: dict[str, str], what: str) -> None:
    """Name every level folder that failed its checks, and why (stderr; the caller exits 1)."""
    if not bad:
        return
    error(
        f"{len(bad)} level folder(s) failed their checks and were {what}; look at them, move "
        "them aside, and launch again to train them afresh:"
    )
    for where, why in sorted(bad.items()):
        print(f"  {where}: {why}", file=sys.stderr)
