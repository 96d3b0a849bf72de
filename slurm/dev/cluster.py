"""A real Slurm cluster on this machine: `tp-sweep cluster up|down|status`.

Starts a private munged, one slurmctld and one slurmd per node (`slurmd -N nodeK`, one port each),
with every config, state, PID and log file under one folder (default ./.tp-cluster). No systemd:
daemons are started directly and stopped by the PIDs in their PID files.

Clients (sbatch, squeue, submitit) find the config through /etc/slurm/slurm.conf, which `up`
installs when it is absent or was written by us (first line names turboprune and DIR); otherwise
they need `SLURM_CONF` (see ClusterStatus.conf / .env). Kept free of torch so it imports fast.

Settings worth knowing (slurm.conf.tmpl):
- partition `debug`, the default, MaxTime=INFINITE; JobRequeue=1 (the product requeues jobs);
- KillWait=10: 10 s from SIGTERM to SIGKILL on cancel/requeue/preemption (Slurm's default is 30);
  a trainer must checkpoint within it;
- AuthInfo cred_expire=10: a requeued job restarts ~15 s later instead of 120 s;
- MinJobAge=300: finished jobs stay visible to scontrol for 5 min (no sacct without --accounting);
- DefMemPerCPU: a job that asks no memory does not take a whole node.
`down` ends the cluster's jobs before it stops the daemons (scancel, then a kill of what is left,
found through DIR: see _jobs.py); stopping slurmd alone would leave them running. `up` of a
half-alive cluster (slurmctld stopped by SIGTERM, which saves its state) restarts the daemons
and keeps the jobs: slurmd adopts their slurmstepds again.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field

from . import _accounting, _jobs
from ._config import (
    BINARIES,
    DEFAULT_DIR,
    DEFAULT_PORT,
    ETC_CONF,
    MARKER,
    OPTION_KEYS,
    BadRequest,
    ClusterError,
    _abs,
    _check_dir,
    _conf_path,
    _etc_owner,
    _load_settings,
    _log_of,
    _make_settings,
    _munge_key,
    _options,
    _pidfiles,
    _render,
    _settings_path,
    acct_ports,
)
from ._procs import _alive, _read_pid, _stop, _tail

__all__ = ["ClusterStatus", "ClusterError", "BadRequest", "up", "up_again", "down", "status", "start_node"]


@dataclass
class ClusterStatus:
    dir: str
    running: bool
    daemons: dict[str, int | None]  # name -> pid if alive
    nodes: list[dict]  # name, state, cpus, memory (from sinfo)
    conf: str  # slurm.conf that clients must use
    accounting: bool
    env: dict[str, str] = field(default_factory=dict)  # environment for clients (SLURM_CONF)
    message: str = ""  # e.g. the `export SLURM_CONF=...` hint


def _live_pids(d: str, cfg: dict) -> dict[str, int | None]:
    out = {}
    for name, path in _pidfiles(d, cfg).items():
        pid = _read_pid(path)
        out[name] = pid if _alive(pid, name) else None
    return out


def _launch(d: str, name: str, argv: list[str]) -> None:
    """Run a self-daemonising program; its parent returns once the daemon has forked."""
    out = os.path.join(d, "log", f"{name.replace(':', '-')}.stderr")
    with open(out, "ab") as err:
        # New session: the daemon must outlive the shell or pytest that started it.
        rc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True, timeout=60, env=_env(d)
        ).returncode
    if rc != 0:
        raise ClusterError(
            f"{name} exited with status {rc} at start ({' '.join(argv)}).\n"
            f"  {out}:\n{_tail(out)}\n  {_log_of(d, name)}:\n"
            f"{_tail(_log_of(d, name))}"
        )


def _wait_for(d: str, name: str, pidfile: str, ready, timeout: float, what: str) -> int:
    """Poll until the daemon's PID file names a live process and ready() holds."""
    deadline = time.monotonic() + timeout
    while True:
        pid = _read_pid(pidfile)
        if pid and _alive(pid, name) and ready():
            return pid
        if pid and not _alive(pid, name):
            break  # it started and died: no point waiting longer
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    raise ClusterError(
        f"{name} did not become {what} within {timeout:.0f} s "
        f"(pid file {pidfile}: {pid}).\n  {_log_of(d, name)}:\n"
        f"{_tail(_log_of(d, name))}"
    )


# ---------------------------------------------------------------- slurm clients


def _env(d: str) -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": _conf_path(d)}


def _client(d: str, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env(d))
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"{argv[0]} timed out")


def _sinfo(d: str) -> list[dict]:
    out = _client(d, "sinfo", "-N", "-h", "-o", "%N|%T|%c|%m")
    nodes = []
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            nodes.append(
                {"name": parts[0], "state": parts[1], "cpus": int(parts[2]), "memory": int(parts[3].rstrip("+"))}
            )
    return nodes


def _ctld_up(d: str) -> bool:
    return "UP" in _client(d, "scontrol", "ping").stdout


def _install_conf(d: str, text: str) -> str:
    """Install the config where clients look; returns a hint when we must not (foreign file)."""
    owner = _etc_owner(ETC_CONF)
    other_running = owner and owner != d and status(owner).running
    if owner == "" or other_running:
        why = "a foreign" if owner == "" else f"the running cluster {owner}'s"
        return (
            f"{ETC_CONF} is {why} config: left alone. Point clients at this cluster with\n"
            f"  export SLURM_CONF={_conf_path(d)}"
        )
    os.makedirs(os.path.dirname(ETC_CONF), exist_ok=True)
    tmp = ETC_CONF + ".tp-tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, ETC_CONF)
    return ""


# ---------------------------------------------------------------- public API


def status(dir: str = DEFAULT_DIR) -> ClusterStatus:
    """Where the cluster in DIR stands; starts nothing."""
    d = _abs(dir)
    cfg = _load_settings(d)
    if cfg is None:
        return ClusterStatus(
            d,
            False,
            {},
            [],
            _conf_path(d),
            False,
            message=f"no cluster in {d} (`tp-sweep cluster up --dir {dir}`)",
        )
    daemons = _live_pids(d, cfg)
    running = all(daemons.values())
    nodes = _sinfo(d) if daemons.get("slurmctld") else []
    installed = cfg["install_conf"] and _etc_owner(ETC_CONF) == d
    conf = ETC_CONF if installed else _conf_path(d)
    hint = "" if installed or not running else f"export SLURM_CONF={conf}"
    return ClusterStatus(d, running, daemons, nodes, conf, cfg["accounting"], {"SLURM_CONF": conf}, hint)


def up(
    dir: str = DEFAULT_DIR,
    nodes: int = 1,
    accounting: bool = False,
    cpus_per_node: int | None = None,
    mem_mb: int | None = None,
    timeout: float = 30.0,
    *,
    port: int | None = None,
    cluster_name: str | None = None,
    node_prefix: str | None = None,
    install_conf: bool | None = None,
    extra_conf: dict | None = None,
    partitions: dict | None = None,
    qos: dict | None = None,
) -> ClusterStatus:
    """Start (or find running) a cluster in DIR and wait until every node is idle.

    `port`, `cluster_name`, `node_prefix` and `install_conf=False` let a second cluster (tests)
    run beside the main one without touching it or /etc/slurm. Left as None they are taken from
    the folder's last `up` (so a plain `up --dir DIR` restarts the same cluster), else defaults.
    `extra_conf`, `partitions` and `qos` add slurm.conf lines, partitions and QOS limits (see
    _config._options), e.g. MaxArraySize or preemption between partitions.
    """
    d = _abs(dir)
    old = _load_settings(d)
    last = old or {}
    port = port or last.get("port", DEFAULT_PORT)
    cluster_name = cluster_name or last.get("cluster_name", "tpdev")
    if node_prefix is None and last.get("node_prefix"):
        node_prefix = last["node_prefix"]
    install_conf = last.get("install_conf", True) if install_conf is None else install_conf
    missing = [b for b in BINARIES if shutil.which(b) is None and not os.path.exists(f"/usr/sbin/{b}")]
    if missing:
        raise ClusterError(f"missing {', '.join(missing)}: apt-get install -y slurm-wlm munge")
    if os.geteuid() != 0:
        raise BadRequest("the dev cluster runs its daemons as root and munge: run as root")
    cfg = _make_settings(
        d,
        nodes,
        accounting,
        cpus_per_node,
        mem_mb,
        port,
        cluster_name,
        node_prefix,
        install_conf,
        _options(extra_conf, partitions, qos, accounting),
    )
    _check_dir(d)  # after validating the rest: bad input must create nothing
    if accounting:
        _accounting.ensure_installed()
    if old is not None:
        live = _live_pids(d, old)
        if all(live.values()):
            if (old["nodes"], old["accounting"]) != (nodes, accounting):
                raise BadRequest(
                    f"cluster in {d} is running with {old['nodes']} node(s), "
                    f"accounting {'on' if old['accounting'] else 'off'}; "
                    f"`tp-sweep cluster down --dir {dir}` first"
                )
            changed = [k for k in OPTION_KEYS if old.get(k, _options(None, None, None, False)[k]) != cfg[k]]
            if changed:
                raise BadRequest(
                    f"cluster in {d} is running with other {' and '.join(changed)}; "
                    f"`tp-sweep cluster down --dir {dir}` first"
                )
            if old["install_conf"] and _etc_owner(ETC_CONF) is None:  # our /etc copy was removed
                with open(_conf_path(d)) as f:
                    _install_conf(d, f.read())
            st = _wait_idle(d, old, timeout)
            st.message = ("already running. " + st.message).strip()
            return st
        _stop_all(d, old, timeout)  # half-alive: restart cleanly (job state is kept)
    _check_ports(cfg)
    text = _render(cfg)
    with open(_conf_path(d), "w") as f:
        f.write(text)
    with open(_settings_path(d), "w") as f:
        json.dump(cfg, f, indent=1)
    hint = _install_conf(d, text) if install_conf else ""
    try:
        _start_all(d, cfg, timeout)
        st = _wait_idle(d, cfg, timeout)
    except (ClusterError, OSError, subprocess.SubprocessError):
        _stop_all(d, cfg, timeout)  # no half-started cluster; the logs stay for the post-mortem
        raise
    st.message = (hint + "\n" + st.message).strip() if hint else st.message
    return st


def start_node(dir: str, node: str, timeout: float = 30.0) -> int:
    """Start one node's slurmd again (after it died, or was killed to make a node fail) and
    return its pid; slurmctld brings the node back itself (ReturnToService=2)."""
    d = _abs(dir)
    cfg = _load_settings(d)
    if cfg is None or node not in cfg["node_names"]:
        raise BadRequest(f"no node {node} in the cluster of {d}")
    name = f"slurmd:{node}"
    path = _pidfiles(d, cfg)[name]
    if _alive(_read_pid(path), name):
        return int(_read_pid(path) or 0)
    if os.path.exists(path):
        os.remove(path)  # a stale PID file would read as "started and died"
    _launch(d, name, ["slurmd", "-f", _conf_path(d), "-N", node])
    return _wait_for(d, name, path, lambda: True, timeout, "alive")


def down(dir: str = DEFAULT_DIR, timeout: float = 30.0) -> int:
    """End DIR's jobs, then stop its daemons by PID (slurmd, slurmctld, munged); logs and state
    stay. Returns how many jobs it ended.

    Jobs are cancelled through slurmctld (SIGTERM, SIGKILL after KillWait) when it answers;
    their processes, and any left over (slurmctld dead, a job ignoring SIGTERM), are then found
    through DIR's spool and log folders and killed (_jobs.py), never by a process name: another
    cluster's jobs on this machine are not touched.
    """
    d = _abs(dir)
    cfg = _load_settings(d)
    if cfg is None:
        return 0
    live = _live_pids(d, cfg)
    spare = {pid for pid in live.values() if pid}
    ended = _jobs.end_jobs(d, cfg, timeout, lambda *argv: _client(d, *argv), bool(live.get("slurmctld")), spare)
    _stop_all(d, cfg, timeout)
    if _etc_owner(ETC_CONF) == d:
        os.remove(ETC_CONF)
    left = _jobs.find(d, cfg).pids
    if left:
        raise ClusterError(
            f"daemons stopped, but {len(left)} process(es) of its jobs would not die: {sorted(left)}"
        )
    return ended


# ---------------------------------------------------------------- start / stop


def _check_ports(cfg: dict) -> None:
    """Fail early, and clearly, if another Slurm already listens on our ports."""
    wanted = list(range(cfg["port"], cfg["port"] + cfg["nodes"] + 1))
    for p in wanted + (list(acct_ports(cfg)) if cfg["accounting"] else []):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", p))
            except OSError as exc:
                raise ClusterError(
                    f"port {p} is in use ({exc}); is another Slurm running? pick another port or stop it"
                ) from exc


def _start_all(d: str, cfg: dict, timeout: float) -> None:
    files = _pidfiles(d, cfg)
    for name, path in files.items():  # a stale PID file would read as "started and died"
        if not _alive(_read_pid(path), name) and os.path.exists(path):
            os.remove(path)
    sock = os.path.join(d, "munge", "munge.socket")
    mu = pwd.getpwnam("munge")
    os.chown(os.path.join(d, "munge"), mu.pw_uid, mu.pw_gid)
    os.chmod(os.path.join(d, "munge"), 0o755)
    key = _munge_key(d)
    _launch(
        d,
        "munged",
        [
            "runuser",
            "-u",
            "munge",
            "--",
            "/usr/sbin/munged",
            f"--socket={sock}",
            f"--key-file={key}",
            f"--pid-file={files['munged']}",
            f"--log-file={_log_of(d, 'munged')}",
            f"--seed-file={os.path.join(d, 'munge', 'munged.seed')}",
        ],
    )
    _wait_for(d, "munged", files["munged"], lambda: os.path.exists(sock), timeout, "ready")
    if cfg["accounting"]:
        _accounting.write_conf(d, cfg, f"{MARKER}: DIR={d}")
        _accounting.start_db(d, cfg, timeout, _wait_for)
        _accounting.start_dbd(d, cfg, timeout, _launch, _wait_for)
        _accounting.register_cluster(d, cfg, _env(d))
    conf = _conf_path(d)
    _launch(d, "slurmctld", ["slurmctld", "-f", conf])
    _wait_for(d, "slurmctld", files["slurmctld"], lambda: _ctld_up(d), timeout, "reachable")
    for n in cfg["node_names"]:
        os.makedirs(os.path.join(d, "state", f"slurmd-{n}"), exist_ok=True)
        _launch(d, f"slurmd:{n}", ["slurmd", "-f", conf, "-N", n])
    for n in cfg["node_names"]:
        _wait_for(d, f"slurmd:{n}", files[f"slurmd:{n}"], lambda: True, timeout, "alive")


def _stop_all(d: str, cfg: dict, timeout: float) -> None:
    # Reverse start order: slurmds first so they do not log lost-controller errors.
    for name, pid in reversed(list(_live_pids(d, cfg).items())):
        _stop(name, pid, timeout)


def _wait_idle(d: str, cfg: dict, timeout: float) -> ClusterStatus:
    """Wait until sinfo shows every node usable; resume a node left drained by an old run."""
    deadline = time.monotonic() + timeout
    resumed = False
    while True:
        st = status(d)
        states = {n["name"]: n["state"] for n in st.nodes}
        usable = ("idle", "mixed", "allocated", "completing")
        if st.running and all(states.get(n, "").startswith(usable) for n in cfg["node_names"]):
            return st
        dead = [k for k, v in st.daemons.items() if v is None]
        if dead:
            raise ClusterError(f"{dead[0]} died.\n  {_log_of(d, dead[0])}:\n{_tail(_log_of(d, dead[0]))}")
        if not resumed and any(s.startswith(("drain", "down")) for s in states.values()):
            time.sleep(2)  # give a fresh slurmd time to register before forcing it
            _client(d, "scontrol", "update", f"nodename={','.join(cfg['node_names'])}", "state=resume")
            resumed = True
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"  {_log_of(d, k)}:\n{_tail(_log_of(d, k), 8)}"
                for k in (f"slurmd:{n}" for n in cfg["node_names"])
            )
            raise ClusterError(
                f"nodes not idle after {timeout:.0f} s: {states or 'none reported'}"
                f"\n  {_log_of(d, 'slurmctld')}:\n"
                f"{_tail(_log_of(d, 'slurmctld'), 8)}"
                f"\n{logs}"
            )
        time.sleep(0.3)


# ---------------------------------------------------------------- command line


def up_again(
    dir: str = DEFAULT_DIR,
    nodes: int | None = None,
    accounting: bool = False,
    cpus_per_node: int | None = None,
    mem_mb: int | None = None,
    timeout: float = 30.0,
    port: int | None = None,
    install_conf: bool | None = None,
    options: dict | None = None,
) -> ClusterStatus:
    """`up` as the command line means it: a bare `up` on a running cluster keeps its shape (its
    nodes and accounting) and just reports it; given options start it as they say. `options`
    (`cluster up --options FILE`: extra_conf, partitions, qos) default to the folder's last ones,
    running or not, so a restart after a crash brings back the same partitions and limits."""
    now = status(dir)
    saved = _load_settings(now.dir) if now.running else None
    n = nodes if nodes is not None else (saved["nodes"] if saved else 1)
    acct = accounting or bool(saved and saved["accounting"] and nodes is None)
    if options is None:
        last = _load_settings(now.dir) or {}
        options = {k: last[k] for k in OPTION_KEYS if k in last and (acct or k != "qos")}
    return up(dir, n, acct, cpus_per_node, mem_mb, timeout, port=port, install_conf=install_conf, **options)
