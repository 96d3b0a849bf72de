"""What every `tp-sweep` command shares: the consoles, bad input (exit 2), the error line."""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from core.errors import TurboPruneError, UserError


class _Console:
    """A rich Console made on first use: a command that prints JSON (or nothing) never loads
    rich, 0.025 s of a 10,000-run `status --format json`. Everything else is the Console's."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Any = None

    def real(self) -> Any:
        if self._console is None:
            self._console = rich_console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)

    # rich's Live and Progress hold the console as a context (`with console:` buffers output).
    def __enter__(self) -> Any:
        return self.real().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.real().__exit__(*exc)


console: Any = _Console()
err: Any = _Console(stderr=True)


def rich_console(**options: Any) -> Any:
    """A rich Console that leaves a closed pipe to main(): rich's own answer to one (`status |
    head`) is to exit 1 on the spot, which says a run failed when none did."""
    from rich.console import Console  # rich (0.025 s): not for JSON or --help

    def on_broken_pipe() -> None:
        c.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    c = Console(**options)
    c.on_broken_pipe = on_broken_pipe  # type: ignore[method-assign]  # rich's hook, meant to be replaced
    return c


_settled = 1


def settle(code: int) -> int:
    """Say the exit status a command has settled on before it prints (query: 0; status: 1 when a
    run failed): main() exits with it when the reader of stdout goes away early (`| head`). A
    command cut off before it settled exits 1, as Python does on a closed pipe: its work may be
    unfinished."""
    global _settled
    _settled = code
    return code


def settled() -> int:
    return _settled


def json_text(obj: Any) -> str:
    """One JSON document, as every `--format json` prints it: compact, UTF-8, NaN as null, what
    JSON cannot hold as its str(), and written by orjson, 0.08 s faster than the standard
    library on a 10,000-run status."""
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


@contextmanager
def first_ctrl_c() -> Iterator[threading.Event]:
    """An event set by the first ^C (SIGINT), for a loop that refreshes until then: the loop
    finishes the refresh under way and ends cleanly. A KeyboardInterrupt is not enough: raised
    inside a finalizer that the refresh's garbage triggers, it is printed as "Exception ignored"
    and swallowed, and the loop never stops. A second ^C raises KeyboardInterrupt as usual."""
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


class BadInput(UserError):
    """Reported as `error: ...` with exit status 2."""


def fail(exc: TurboPruneError) -> int:
    """The one place an error of ours becomes what a command prints and returns: `error: MESSAGE`
    on stderr, and the exit status of its kind (core/errors.py: 2 bad input, 1 a failure)."""
    error(str(exc))
    return exc.exit_code


def error(msg: str) -> None:
    # soft_wrap: the terminal wraps a long message, rich inserts no newlines of its own, so a
    # path or a name in it stays whole for whoever greps the log.
    from rich.markup import escape  # rich (0.025 s): not for JSON or --help

    err.print(f"[red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)


def warn(msg: str) -> None:
    """A line on stderr about input that is valid but most likely not what was meant."""
    from rich.markup import escape  # rich (0.025 s): not for JSON or --help

    err.print(f"[yellow]warning:[/] {escape(msg)}", highlight=False, soft_wrap=True)


def report_bad_levels(bad: dict[str, str], what: str) -> None:
    """Name every level folder that failed its checks, and why (stderr; the caller exits 1)."""
    report_bad_files(
        bad,
        f"{len(bad)} level folder(s) failed their checks and were {what}; look at them, move "
        "them aside, and launch again to train them afresh:",
    )


def report_bad_files(bad: dict[str, str], heading: str) -> None:
    """`heading`, then every file of an output folder that was not used, one line each with why
    (stderr; the caller exits 1)."""
    if not bad:
        return
    error(heading)
    for where, why in sorted(bad.items()):
        print(f"  {where}: {why}", file=sys.stderr)
