"""Schema migrations (Alembic), applied by `tp-sweep db upgrade` and on first use of a store.

Any number of processes may open a fresh store at once (eight jobs starting together, two
launches): the upgrade runs under a lock, so exactly one applies it and the others find it done.
PostgreSQL: a transaction-scoped advisory lock. SQLite: an exclusive flock on a file beside the
database (SQLite's own locking cannot cover Alembic's check-then-create).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from core.atomic import file_lock

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x7470_6D69  # "tpmi": one advisory lock id for all turboprune migrations
# Our own version table: Optuna keeps its studies in the same database (tp-sweep's search) and
# its Alembic uses the default `alembic_version`, which two histories cannot share.
VERSION_TABLE = "tp_alembic_version"
_LEGACY_VERSION_TABLE = "alembic_version"


def _config(url: str | None = None):
    from alembic.config import Config  # SQLAlchemy (0.3 s)

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory  # SQLAlchemy (0.3 s)

    return ScriptDirectory.from_config(_config()).get_current_head()


_REVISION = re.compile(r"^(down_)?revision\b[^=]*=\s*['\"]?([\w]+)?", re.M)


def _head_from_files() -> str | None:
    """The head revision read from the version files' `revision` / `down_revision` lines: what
    Alembic finds, without importing it (a third of a second on every command). None when the
    files do not say plainly (then Alembic decides)."""
    revs, downs = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        found = dict((bool(m.group(1)), m.group(2)) for m in _REVISION.finditer(path.read_text()))
        if False not in found:
            return None
        revs.add(found[False])
        if found.get(True) and found[True] != "None":
            downs.add(found[True])
    heads = revs - downs
    return heads.pop() if len(heads) == 1 else None


def _stored_revision(conn: Connection) -> str | None:
    try:
        rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    except sa.exc.DBAPIError:
        conn.rollback()  # no table yet (PostgreSQL aborts the transaction)
        return None
    return rows[0][0] if len(rows) == 1 else None


def current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext  # SQLAlchemy (0.3 s)

    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _our_revisions() -> set[str]:
    from alembic.script import ScriptDirectory  # SQLAlchemy (0.3 s)

    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


def _adopt_legacy_version_table(conn: Connection) -> None:
    """Stores made before VERSION_TABLE recorded our revision in `alembic_version`: move it."""
    insp = sa.inspect(conn)
    if VERSION_TABLE in insp.get_table_names() or _LEGACY_VERSION_TABLE not in insp.get_table_names():
        return
    legacy = sa.table(_LEGACY_VERSION_TABLE, sa.column("version_num"))
    ours = [r for r in conn.execute(sa.select(legacy.c.version_num)).scalars() if r in _our_revisions()]
    if not ours:
        return  # someone else's (Optuna's) history
    conn.execute(sa.text(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
    conn.execute(sa.text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:v)"), {"v": ours[0]})
    conn.execute(legacy.delete().where(legacy.c.version_num == ours[0]))
    if conn.execute(sa.select(sa.func.count()).select_from(legacy)).scalar() == 0:
        conn.execute(sa.text(f"DROP TABLE {_LEGACY_VERSION_TABLE}"))


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    db = engine.url.database
    if not db or db == ":memory:":
        yield
        return
    with file_lock(f"{db}.migrate-lock"):
        yield


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Bring the schema to head; returns (before, after) revisions."""
    with engine.connect() as conn:  # the common case, unlocked and without Alembic: at head
        stored = _stored_revision(conn)
    if stored is not None and stored == _head_from_files():
        return stored, stored
    head = head_revision()
    with engine.connect() as conn:
        before = current_revision(conn)
        conn.rollback()
    if before == head:
        return before, before
    from alembic import command  # SQLAlchemy (0.3 s)

    is_sqlite = engine.dialect.name == "sqlite"
    with _sqlite_file_lock(engine) if is_sqlite else contextlib.nullcontext():
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            _adopt_legacy_version_table(conn)
            before = current_revision(conn)
            if before != head:
                cfg = _config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
            after = current_revision(conn)
    return before, after


def upgrade_to(engine: Engine, revision: str) -> None:
    """Apply migrations up to `revision` (tests build old stores with it)."""
    from alembic import command  # SQLAlchemy (0.3 s)

    with engine.begin() as conn:
        cfg = _config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
