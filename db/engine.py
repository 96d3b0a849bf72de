"""Engines for the results store, and the one upsert every writer uses.

SQLite is the default (WAL mode, so local jobs write while `status` reads); PostgreSQL on clusters.
Engines hide SQL parameters in error messages (`hide_parameters`): a failed INSERT of a spec must
never print it, nor any URL inside it. SQLite transactions are opened by us (`BEGIN IMMEDIATE`,
or a plain `BEGIN` for a read-only one) instead of by pysqlite, which defers the lock to the first
write and so cannot serialize a read-then-write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from core.errors import OutageError
from db import requested_url


class StoreError(OutageError, RuntimeError):
    """The store cannot be reached or used; the message names the (password-free) URL."""


def display_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL has no password we could find either
        return "<unparsable database URL>"


def resolve_url(cli_url: str | None = None, spec_url: str | None = None) -> str:
    """--db, else TP_DB_URL, else the spec's db:, else SQLite in the working directory.
    A relative SQLite path is made absolute (jobs may start elsewhere) and `~` is expanded."""
    url = requested_url(cli_url, spec_url)
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - make_url raises several kinds for a bad URL
        return url  # Store() reports it
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = os.path.abspath(os.path.expanduser(parsed.database))
        return parsed.set(database=path).render_as_string(hide_password=False)
    return url


def store_may_exist(url: str) -> bool:
    """False when opening the store would create it (a SQLite file that is not there yet)."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - make_url raises several kinds for a bad URL
        return False
    if parsed.get_backend_name() == "sqlite":
        return parsed.database is not None and os.path.isfile(parsed.database)
    return True


def make_engine(url: str) -> sa.Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:  # noqa: BLE001 - make_url raises several kinds for a bad URL
        raise StoreError(f"invalid database URL {display_url(url)!r}: {type(exc).__name__}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = sa.create_engine(parsed, hide_parameters=True, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001 - DB-API objects
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see "begin" below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writing jobs
            # WAL's recommended durability: a commit survives a crash of the process, and the
            # file is never corrupted; only a power loss may drop the last commits. The trainer's
            # results are on disk beside the weights anyway, and the store re-imports them.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            # Reads through a memory map instead of read() into a 2 MB page cache: status on a
            # 10,000-run store reads tens of MB, and its main query took 0.22 s, 0.17 s mapped.
            cur.execute("PRAGMA mmap_size=268435456")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):  # noqa: ANN001
            # IMMEDIATE unless the caller only reads: a WAL transaction that reads, then writes
            # after another process committed, fails at once with "database is locked" (its
            # snapshot is stale; the busy timeout does not apply), where taking the write lock
            # first makes it wait its turn. Readers never block writers either way.
            read_only = conn.get_execution_options().get("tp_read_only", False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() in ("", "psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is what we ship
        return sa.create_engine(
            parsed, hide_parameters=True, pool_pre_ping=True, connect_args={"connect_timeout": 10}
        )
    try:
        return sa.create_engine(parsed, hide_parameters=True)
    except Exception as exc:  # noqa: BLE001 - any failure to build an engine means an unusable URL
        raise StoreError(f"unsupported database URL {display_url(url)}: {type(exc).__name__}") from None


def upsert(
    conn: sa.Connection | Any,
    table: sa.Table | sa.FromClause,
    rows: Iterable[dict[str, Any]],
    keys: list[str],
    update: list[str] | None = None,
    chunk: int = 5000,
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET update (or DO NOTHING): atomic, so concurrent
    writers of one row never fail or duplicate it (a read-then-write `merge` does both).

    One statement, executed for many rows (executemany): compiling a 500-row VALUES list per
    chunk made recording a 10,000-point plan take 16 s. Every row must have the same keys."""
    rows = list(rows)
    if not rows:
        return
    dialect = conn.bind.dialect.name if hasattr(conn, "bind") and conn.bind is not None else conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql as backend  # the dialect in use, only
    elif dialect == "sqlite":
        from sqlalchemy.dialects import sqlite as backend  # type: ignore[no-redef]
    else:
        raise StoreError(f"upsert is not implemented for {dialect}")
    stmt = backend.insert(cast(sa.Table, table))  # a mapped class's __table__ is typed as FromClause
    if update:
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    for i in range(0, len(rows), chunk):
        conn.execute(stmt, rows[i : i + chunk])


def among(conn: sa.Connection, column: Any, values: Iterable[Any]) -> Any:
    """`column IN values` with the values as one bound parameter, however many there are:
    PostgreSQL's `= ANY(array)`, SQLite's `IN (SELECT value FROM json_each(?))`. An IN list of
    thousands of parameters costs more to compile and parse than to run (0.1 s of a 10,000-run
    status on PostgreSQL), and SQLite caps how many a statement takes."""
    values = list(values)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY  # the dialect in use, only

        return column == sa.any_(sa.bindparam(None, values, type_=ARRAY(column.type)))
    each = sa.func.json_each(sa.bindparam(None, json.dumps(values), type_=sa.Text)).table_valued("value")
    return column.in_(sa.select(each.c.value))


def rowcount(result: Any) -> int:
    """Rows an UPDATE matched (a CursorResult's rowcount; Session.execute is typed as plain Result)."""
    return int(result.rowcount)
