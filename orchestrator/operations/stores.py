"""Opening the results store for an operation: the one place a URL becomes a store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import UserError
from db import requested_url
from db.probe import missing_target

if TYPE_CHECKING:
    from db.reader import StoreReader
    from db.store import Store


class StoreNotOpened(UserError):
    """The store named by --db, TP_DB_URL or the spec would not open, or certainly lacks what the
    command is about: bad input, exit 2."""


def _check_target(url: str | None, spec_url: str | None, target: str | None, runs: bool) -> None:
    # A SQLite store that certainly lacks the sweep is an error before SQLAlchemy is even imported
    # (db/probe.py): `status nosuch` answers in a tenth of a second.
    if target is not None:
        missing = missing_target(requested_url(url, spec_url), target, runs)
        if missing:
            raise StoreNotOpened(missing)


def open_store(
    url: str | None, spec_url: str | None = None, *, target: str | None = None, runs: bool = False
) -> Store:
    """The store at `url` (--db), TP_DB_URL, the spec's db: or the default, with its writes.
    `target`: the sweep (or, with `runs`, run-id prefix) the operation is about."""
    _check_target(url, spec_url, target, runs)
    from db.engine import StoreError, resolve_url  # SQLAlchemy: a quarter of a second
    from db.store import Store  # the ORM, 0.1 s more: only an operation that writes needs it

    try:
        return Store(resolve_url(url, spec_url))
    except StoreError as exc:  # a store that will not open is bad input; an outage mid-way is not
        raise StoreNotOpened(str(exc)) from None


def open_reader(
    url: str | None, spec_url: str | None = None, *, target: str | None = None, runs: bool = False
) -> StoreReader:
    """As `open_store`, for an operation that only reads (status, query, plot): a StoreReader,
    which imports no ORM until it has something to write."""
    _check_target(url, spec_url, target, runs)
    from db.engine import StoreError, resolve_url  # SQLAlchemy: a quarter of a second
    from db.reader import StoreReader  # SQLAlchemy (0.3 s), not for --help or a missing sweep

    try:
        return StoreReader(resolve_url(url, spec_url))
    except StoreError as exc:
        raise StoreNotOpened(str(exc)) from None
