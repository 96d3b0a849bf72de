"""`tp-sweep db`: upgrade a store's schema, or rebuild a store from an output folder."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.operations.stores import StoreNotOpened, open_store


@dataclass(frozen=True)
class Upgraded:
    """The store's schema revision before (None: an empty store) and after the migrations."""

    display_url: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class Imported:
    """What `db import` recorded (sweeps, runs, levels, finished), and what it left out: level
    folders (`bad`) and sweep records (`refused`) that failed their checks, path -> why."""

    display_url: str
    counts: dict[str, int]
    bad: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


def upgrade(db: str | None) -> Upgraded:
    """Apply the schema migrations to the store at `db` (--db, else TP_DB_URL, else the default),
    creating it if there is none."""
    from db import migrate  # Alembic and SQLAlchemy (0.3 s): not for --help
    from db.engine import StoreError, resolve_url  # SQLAlchemy (0.3 s): not for --help
    from db.store import Store  # the ORM (0.1 s more): not for --help

    try:
        store = Store(resolve_url(db), migrate_schema=False)
        try:
            before, after = migrate.upgrade(store.engine)
        finally:
            store.close()
    except StoreError as exc:  # an outage (exit 1) mid-command; a store that will not open is bad input
        raise StoreNotOpened(str(exc)) from None
    return Upgraded(store.display_url, before, after)


def import_output(db: str | None, output_dir: str) -> Imported:
    """Rebuild the store at `db` from a sweep's output folder (its levels/ and sweeps/)."""
    from orchestrator.control.importer import (  # the store: SQLAlchemy (0.3 s)
        import_output_dir,
        sweep_records,
    )

    sweep_records(output_dir)  # first: a folder that is no output folder creates no store
    store = open_store(db)
    try:
        bad: dict[str, str] = {}
        refused: dict[str, str] = {}
        counts = import_output_dir(store, output_dir, bad, refused)
        return Imported(store.display_url, counts, bad, refused)
    finally:
        store.close()
