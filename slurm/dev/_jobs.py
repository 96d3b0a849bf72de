"""Ending a dev cluster's jobs for `cluster down`: through Slurm first, then by its own folder.

Stopping slurmd does not stop a job: its slurmstepd and the job's processes run on without it
(and a restarted slurmd adopts them again). So `down` first cancels every job through the
cluster's own slurmctld (the trainer gets SIGTERM and KillWait seconds to save, as on any
cancel), waits for them to go, then kills what is left.

What is left is found through the cluster's folder DIR, never by a process name: two dev clusters
on one machine both run "slurmstepd: [1.batch]" and both number their jobs from 1. Measured on
Slurm 22.05 (proctrack/linuxproc, no cgroups):
- each slurmstepd listens on a Unix socket NODE_JOBID.STEPID in its node's SlurmdSpoolDir
  (DIR/state/slurmd-NODE): it is how slurmd and `scontrol listpids` reach a step, and it lasts as
  long as the step. /proc/net/unix names each socket's path, /proc/PID/fd holds its inode;
- a slurmstepd works in slurmd's working directory, DIR/log (slurmd moves to its log's folder),
  from its fork on: that also catches one that has not made its socket yet or has removed it;
- a job's processes descend from its slurmstepd (ppid in /proc/PID/stat), which is how
  proctrack/linuxproc itself tracks them. One that left that tree (a double fork, or a parent
  killed first) still carries its job's environment: slurmstepd sets SLURM_CONF to slurmd's own
  config, DIR/etc/slurm.conf, whatever the submitter's SLURM_CONF was, and SLURM_JOB_ID and
  SLURMD_NODENAME. SLURM_CONF alone would also match a user's shell that exported it to talk to
  this cluster, so all three must be there.
The caller's own process and its ancestors are never touched (a `down` run from inside a job).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# A slurmstepd's socket in the spool folder: NODE_JOBID.STEPID (4294967291 is the batch step).
_SOCKET = re.compile(r"^(?P<node>.+)_(?P<job>\d+)\.(?P<step>\d+)$")
_CMDLINE = re.compile(r"^slurmstepd: \[(?P<job>\d+)\.")
_END_STATES = {
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}


@dataclass
class JobProcs:
    stepds: set[int] = field(default_factory=set)  # the cluster's slurmstepd processes
    tasks: set[int] = field(default_factory=set)  # the job processes under or beside them
    job_ids: set[str] = field(default_factory=set)

    @property
    def pids(self) -> set[int]:
        return self.stepds | self.tasks


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _stat_table() -> dict[int, int]:
    """pid -> ppid of every live (not zombie) process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if rest and rest[0] not in ("Z", "X"):
            table[int(entry)] = int(rest[1])
    return table


def _spool_sockets(spools: list[str]) -> dict[int, str]:
    """Inode -> job id of every Unix socket bound under one of the spool folders."""
    out = {}
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                parts = line.split(None, 7)
                if len(parts) < 8:
                    continue
                path = parts[7].strip()
                if any(_under(path, s) for s in spools):
                    m = _SOCKET.match(os.path.basename(path))
                    out[int(parts[6])] = m.group("job") if m else ""
    except OSError:
        pass
    return out


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key in (b"SLURM_CONF", b"SLURM_JOB_ID", b"SLURMD_NODENAME"):
            env[key.decode()] = value.decode(errors="replace")
    return env


def _ancestors(pid: int, table: dict[int, int]) -> set[int]:
    out = set()
    while pid and pid not in out:
        out.add(pid)
        pid = table.get(pid, 0)
    return out


def find(d: str, cfg: dict, spare: set[int] = frozenset()) -> JobProcs:
    """The processes of DIR's jobs now running: its slurmstepds and their jobs' processes.
    `spare`: pids never to report (the cluster's own daemons)."""
    table = _stat_table()
    spare = set(spare) | _ancestors(os.getpid(), table)
    spools = [os.path.join(d, "state", f"slurmd-{n}") for n in cfg["node_names"]]
    sockets = _spool_sockets(spools)
    conf = os.path.realpath(os.path.join(d, "etc", "slurm.conf"))
    nodes = set(cfg["node_names"])
    found = JobProcs()
    for pid in table:
        if pid in spare:
            continue
        try:
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            exe = ""
        if exe.startswith("slurmstepd"):  # "slurmstepd (deleted)" after an upgrade
            held = [sockets[i] for i in _socket_inodes(pid) if i in sockets]
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                cwd = ""
            if held or _under(cwd, d):
                found.stepds.add(pid)
                found.job_ids.update(j for j in held if j)
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        m = _CMDLINE.match(f.read().decode(errors="replace"))
                except OSError:
                    m = None
                if m:
                    found.job_ids.add(m.group("job"))
            continue
        env = _environ(pid)
        if (
            env.get("SLURM_JOB_ID")
            and env.get("SLURMD_NODENAME") in nodes
            and os.path.realpath(env.get("SLURM_CONF", "/")) == conf
        ):
            found.tasks.add(pid)
            found.job_ids.add(env["SLURM_JOB_ID"])
    children: dict[int, list[int]] = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(found.stepds | found.tasks)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in spare and child not in found.stepds and child not in found.tasks:
                found.tasks.add(child)
                todo.append(child)
    return found


def _signal(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)  # a pid reused since the scan is not the process we found
        except OSError:
            continue
        try:
            signal.pidfd_send_signal(fd, sig)
        except OSError:
            pass
        finally:
            os.close(fd)


def _kill_wait(d: str) -> float:
    """The cluster's KillWait (seconds from SIGTERM to SIGKILL); Slurm's default is 30."""
    try:
        with open(os.path.join(d, "etc", "slurm.conf")) as f:
            for line in f:
                if line.strip().lower().startswith("killwait="):
                    return float(line.split("=", 1)[1].split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return 30.0


def _queue(client: Callable[..., subprocess.CompletedProcess]) -> dict[str, tuple[str, str]] | None:
    """Jobs slurmctld still holds: id (array tasks as 12_3) -> (raw job id, state); None if
    slurmctld did not answer."""
    out = client("squeue", "-h", "-a", "-r", "-o", "%i|%A|%T")
    if out.returncode != 0:
        return None
    jobs = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[2] not in _END_STATES:
            jobs[parts[0]] = (parts[1], parts[2])
    return jobs


def end_jobs(
    d: str,
    cfg: dict,
    timeout: float,
    client: Callable[..., subprocess.CompletedProcess],
    ctld_alive: bool,
    spare: set[int] = frozenset(),
) -> int:
    """End every job of the cluster in DIR; returns how many there were.

    With slurmctld alive: scancel each job (Slurm sends SIGTERM, then SIGKILL after KillWait) and
    wait up to min(timeout, KillWait + 5) s for their processes to go. Without it: SIGTERM the
    job processes ourselves and wait up to min(timeout, KillWait). Either way, then SIGKILL
    whatever is left of them and of their slurmstepds.
    """
    kill_wait = _kill_wait(d)
    start = time.monotonic()
    deadline = start + min(timeout, kill_wait + 5)
    via_slurm = ctld_alive
    queued: dict[str, str] = {}  # every job slurmctld listed: id -> raw id
    cancelled: set[str] = set()
    seen_ids: set[str] = set()  # raw job ids of processes found
    termed = False
    gone_since = None
    while True:
        listing = _queue(client) if via_slurm else None
        if via_slurm and listing is None:
            via_slurm = False  # slurmctld died or hangs: go on without it
        if listing:
            queued.update({k: v[0] for k, v in listing.items()})
            new = sorted({raw for raw, _ in listing.values()} - cancelled)
            if new:
                client("scancel", *new)
                cancelled.update(new)
        procs = find(d, cfg, spare)
        seen_ids |= procs.job_ids
        now = time.monotonic()
        if not via_slurm and not termed and procs.tasks:
            _signal(procs.tasks, signal.SIGTERM)  # what Slurm's cancel would have sent
            termed = True
            deadline = min(deadline, now + min(timeout, kill_wait))
        # Done waiting once the processes are gone, or, through Slurm, once the slurmstepds are:
        # what is left then escaped Slurm's tracking (a double fork) and Slurm will not end it.
        if not procs.pids or (via_slurm and not procs.stepds):
            gone_since = gone_since or now
            # Give slurmctld a moment to record the jobs as ended.
            if not listing or now - gone_since > 2:
                break
        else:
            gone_since = None
        if now > deadline:
            break
        time.sleep(0.25)
    for _ in range(50):  # SIGKILL until nothing is left; children of a killed parent show up next
        procs = find(d, cfg, spare)
        if not procs.pids:
            break
        seen_ids |= procs.job_ids
        _signal(procs.pids, signal.SIGKILL)
        time.sleep(0.1)
    return len(queued) + len(seen_ids - set(queued.values()))
