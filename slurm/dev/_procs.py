"""Daemon processes of the dev cluster: liveness by PID, stopping, log tails.

No systemd here, so a daemon is known by its PID file; a PID is trusted only while /proc says it
still runs the same program (PIDs get recycled, and this container's init leaves zombies).
"""

from __future__ import annotations

import os
import signal
import time


def _alive(pid: int | None, name: str) -> bool:
    """True when pid runs the program `name` (guards against a recycled PID) and is no zombie."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0].decode(errors="replace")
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return os.path.basename(argv0) == name.split(":")[0] and state not in ("Z", "X")


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _tail(path: str, n: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()[-n:]
    except OSError as exc:
        return f"    (no log: {exc.strerror})"
    return "".join("    " + line for line in lines).rstrip() or "    (log is empty)"


def _stop(name: str, pid: int | None, timeout: float) -> None:
    """SIGTERM, wait, then SIGKILL: slurmd/slurmctld save state on SIGTERM."""
    if not _alive(pid, name):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid, name) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid, name):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.2)
