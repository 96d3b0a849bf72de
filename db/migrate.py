"""Schema migrations (Alembic), applied by `tp-sweep db upgrade` and on first use of a store."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config(url: str | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Bring the schema to head; returns (before, after) revisions."""
    from alembic import command

    with engine.begin() as conn:
        before = current_revision(conn)
        if before != head_revision():
            cfg = _config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        after = current_revision(conn)
    return before, after
