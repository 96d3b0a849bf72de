"""What every `tp-sweep` command shares: the consoles, bad input (exit 2), opening the store."""
from __future__ import annotations

from rich.console import Console

console = Console()
err = Console(stderr=True)


class BadInput(Exception):
    """Reported as `error: ...` with exit status 2."""


def error(msg: str) -> None:
    from rich.markup import escape

    err.print(f"[red]error:[/] {escape(msg)}", highlight=False)


def open_store(url: str | None, spec_url: str | None = None):
    from db.engine import StoreError, resolve_url
    from db.store import Store

    try:
        return Store(resolve_url(url, spec_url))
    except StoreError as exc:
        raise BadInput(str(exc)) from None
