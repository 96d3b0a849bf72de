"""Slurm's time-limit warning (USR2), answered where a job wrapper waits, not inside the signal.

submitit answers USR2 from its signal handler: it calls the callable's `checkpoint`, then either
requeues the job (and exits) or raises UncompletedJobError. Raised inside a handler, that
exception surfaces wherever the main thread happened to be, and an `except Exception` there
swallows it. Seen on the dev cluster: Slurm sends SIGCONT with the warning, submitit's SIGCONT
handler was in the middle of its log line, and logging's own `except Exception` ate the error; a
packed job's store query does the same. The job then ended as a failed trainer, which the
supervisor took for a lost job, not for a time-out.

So a wrapper takes USR2 itself and only notes it; its wait loop runs submitit's handler at a
point of its own choosing, where the exception goes where the code says. Stdlib only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any


class DeferredUsr2:
    """Created in the job process (the wrapper's `__call__`): from then on USR2 only sets a flag,
    and `answer` runs the handler it replaced. Outside a submitit job (a test calling a wrapper
    directly) USR2 has no Python handler to defer, and is left as it is."""

    def __init__(self) -> None:
        self.pending = False
        self._handler: Callable[[int, Any], Any] | None = None
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal works in the main thread only
        handler = signal.getsignal(signal.SIGUSR2)
        if callable(handler):
            self._handler = handler
            signal.signal(signal.SIGUSR2, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        self.pending = True

    def answer(self) -> None:
        """If USR2 came, run submitit's handler now: it checkpoints, then requeues the job (and
        exits) or raises UncompletedJobError, here."""
        if self.pending and self._handler is not None:
            self.pending = False
            self._handler(signal.SIGUSR2, None)


def wait_answering(proc: subprocess.Popen, usr2: DeferredUsr2, timeout_s: float | None = None) -> int | None:
    """`proc`'s exit status, answering USR2 while it runs (every 0.2 s); None once `timeout_s`
    has passed with `proc` still running."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        usr2.answer()
        rc = proc.poll()
        if rc is not None:
            usr2.answer()  # a warning that came as the trainer ended is still the job's answer
            return rc
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def stop_and_wait(groups: Callable[[], list[int]], alive: Callable[[], bool]) -> None:
    """USR2 to each process group `groups()` names, and again every second while `alive()`,
    for at most TP_STOP_GRACE_S (60 s). Again, because a trainer starts with USR2 ignored until
    its own handler is in place (slurm/job.py), and a warning early in a slice would otherwise
    be lost on it: it would train on until the scheduler killed it at the limit."""
    deadline = time.monotonic() + float(os.environ.get("TP_STOP_GRACE_S", "60"))
    next_signal = 0.0
    while alive() and time.monotonic() < deadline:
        if time.monotonic() >= next_signal:
            for group in groups():
                try:
                    os.killpg(group, signal.SIGUSR2)
                except (ProcessLookupError, PermissionError):
                    pass
            next_signal = time.monotonic() + 1.0
        time.sleep(0.2)
