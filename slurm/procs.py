"""Processes on this machine, read from /proc (Linux): stdlib only, so `status` and a job's
signal handler can use them without importing anything heavy."""

from __future__ import annotations

import os


def pid_alive(pid: int | str) -> bool:
    """A live process, not a zombie: an exited child nobody has reaped yet, or a job whose
    controller died reparented to an init that does not reap (containers), still has a pid."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return False
    return state not in ("Z", "X")


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before their children (one pass over /proc)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out
