"""The results store: schema and migrations, engines, the orchestrator's and the trainer's views
of it, and the read-side queries. This package file stays light (no SQLAlchemy): the fast
existence check of db/probe.py starts from the URL it picks."""

from __future__ import annotations

import os

DEFAULT_URL = "sqlite:///tp-results.db"


def requested_url(cli_url: str | None = None, spec_url: str | None = None) -> str:
    """--db, else TP_DB_URL, else the spec's db:, else SQLite in the working directory."""
    return cli_url or os.environ.get("TP_DB_URL") or spec_url or DEFAULT_URL
