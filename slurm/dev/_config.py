"""Configuration of the dev cluster: folder layout, saved settings, slurm.conf rendering.

Split out of cluster.py to keep each module short; nothing here starts a process.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
import string

from core.errors import Failure, UserError

DEFAULT_DIR = ".tp-cluster"
DEFAULT_PORT = 6817  # slurmctld; slurmd of node k listens on port + k
ETC_CONF = "/etc/slurm/slurm.conf"
MARKER = "# turboprune dev cluster"
SYSTEM_MUNGE_KEY = "/etc/munge/munge.key"
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slurm.conf.tmpl")
BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "scontrol")


class ClusterError(Failure, RuntimeError):
    """A daemon failed to start or stop; the message quotes the log that says why."""


class BadRequest(UserError, ValueError):
    """The request itself is wrong (bad folder, bad node count, ...): nothing was started."""


# ---------------------------------------------------------------- paths and saved settings


def _abs(dir: str) -> str:
    return os.path.abspath(os.path.expanduser(dir))


def _conf_path(d: str) -> str:
    return os.path.join(d, "etc", "slurm.conf")


def _settings_path(d: str) -> str:
    return os.path.join(d, "cluster.json")


def _load_settings(d: str) -> dict | None:
    try:
        with open(_settings_path(d)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _pidfiles(d: str, cfg: dict) -> dict[str, str]:
    """Daemon name -> PID file, in start order."""
    files = {
        "munged": os.path.join(d, "munge", "munged.pid"),
        "slurmctld": os.path.join(d, "run", "slurmctld.pid"),
    }
    if cfg.get("accounting"):  # the database must be up before slurmdbd, slurmdbd before slurmctld
        files = {
            "munged": files["munged"],
            "mariadbd": os.path.join(d, "db", "mariadbd.pid"),
            "slurmdbd": os.path.join(d, "run", "slurmdbd.pid"),
            "slurmctld": files["slurmctld"],
        }
    for n in cfg["node_names"]:
        files[f"slurmd:{n}"] = os.path.join(d, "run", f"slurmd-{n}.pid")
    return files


def _log_of(d: str, name: str) -> str:
    if name == "munged":
        return os.path.join(d, "munge", "munged.log")
    if name.startswith("slurmd:"):
        return os.path.join(d, "log", f"slurmd-{name.split(':', 1)[1]}.log")
    return os.path.join(d, "log", f"{name}.log")


def _total_mem_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 4096


def _munge_key(d: str) -> str:
    """The system key when there is one (so `munge`/`unmunge` agree), else a key made under DIR."""
    if os.path.exists(SYSTEM_MUNGE_KEY):
        return SYSTEM_MUNGE_KEY
    key = os.path.join(d, "munge", "munge.key")
    if not os.path.exists(key):
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(128))  # munged wants >= 32 bytes, readable by its user only
        mu = pwd.getpwnam("munge")
        os.chown(key, mu.pw_uid, mu.pw_gid)
    return key


def _check_dir(d: str) -> None:
    """Make DIR's layout, or explain why it cannot be used (BadRequest) before creating anything."""
    if os.path.exists(d) and not os.path.isdir(d):
        raise BadRequest(f"--dir {d} exists and is not a directory")
    sock = os.path.join(d, "munge", "munge.socket")
    if len(sock) > 100:
        raise BadRequest(f"--dir path too long for a Unix socket ({sock}); choose a shorter one")
    # munged runs as user munge and refuses a socket it cannot reach: every parent needs o+x.
    p = d
    while p != os.path.dirname(p):
        if os.path.exists(p) and not os.stat(p).st_mode & 0o001:
            raise BadRequest(
                f"munged (user munge) cannot reach {d}: {p} is not world-executable; "
                f"use another --dir or `chmod o+x {p}`"
            )
        p = os.path.dirname(p)
    try:
        for sub in ("etc", "state/ctld", "run", "log", "munge"):
            os.makedirs(os.path.join(d, sub), mode=0o755, exist_ok=True)
    except OSError as exc:
        raise BadRequest(f"cannot create cluster folder {d}: {exc}") from exc


_CONF_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_CONF_VALUE = re.compile(r"[A-Za-z0-9_.,:/=+@%-]{1,256}")


def _conf_items(what: str, items: dict | None) -> dict[str, str]:
    """slurm.conf `Key=Value` settings, checked: one line each, no spaces or comments."""
    if items is not None and not isinstance(items, dict):
        raise BadRequest(f"{what}: a mapping of slurm.conf settings is needed, not {type(items).__name__}")
    out = {}
    for key, value in (items or {}).items():
        value = str(value)
        if not _CONF_KEY.fullmatch(str(key)) or not _CONF_VALUE.fullmatch(value):
            raise BadRequest(f"{what}: {key}={value!r} is not a slurm.conf setting (Key=Value, no spaces)")
        out[str(key)] = value
    return out


OPTION_KEYS = ("extra_conf", "partitions", "qos")  # `up`'s optional parts, as saved in settings.json


def _options(extra_conf: dict | None, partitions: dict | None, qos: dict | None, accounting: bool) -> dict:
    """The optional parts of a dev cluster's config, checked (BadRequest: nothing is started).

    extra_conf: more slurm.conf lines (`{"MaxArraySize": 8, "PreemptType": ...}`);
    partitions: name -> its options, for partitions over every node besides (or changing) the
    default `debug` (`{"low": {"PriorityTier": 1, "PreemptMode": "REQUEUE"}}`);
    qos: name -> sacctmgr limits (`{"q5": {"MaxSubmitJobsPerUser": 5}}`), which need accounting:
    the QOS are made and granted to the user `up` runs as, in an account `tp`, and enforced."""
    conf = _conf_items("extra_conf", extra_conf)
    parts = {"debug": {}}
    for name, opts in (partitions or {}).items():
        if not _CONF_KEY.fullmatch(str(name)):
            raise BadRequest(f"partitions: {name!r} is not a partition name")
        parts[str(name)] = _conf_items(f"partitions.{name}", opts)
    limits = {}
    for name, opts in (qos or {}).items():
        if not _CONF_KEY.fullmatch(str(name)):
            raise BadRequest(f"qos: {name!r} is not a QOS name")
        limits[str(name)] = _conf_items(f"qos.{name}", opts)
    if limits and not accounting:
        raise BadRequest("qos limits need accounting (--accounting): slurmctld enforces them through slurmdbd")
    return {"extra_conf": conf, "partitions": parts, "qos": limits}


def _make_settings(
    d, nodes, accounting, cpus, mem, port, cluster_name, node_prefix, install_conf, options: dict | None = None
) -> dict:
    if nodes < 1 or nodes > 64:
        raise BadRequest(f"--nodes must be between 1 and 64, not {nodes}")
    cpus = cpus or os.cpu_count() or 1
    mem = mem or max(512, int(_total_mem_mb() * 0.95))  # leave the OS a little
    if cpus < 1 or mem < 100:
        raise BadRequest(f"bad node size: cpus={cpus} mem_mb={mem}")
    if not 1024 <= port <= 65535 - max(nodes, 81):
        raise BadRequest(f"bad port {port}")
    if node_prefix is None and nodes == 1:
        # One node named after the host: its name resolves, so torchrun/MASTER_ADDR just work.
        names = [socket.gethostname().split(".")[0]]
    else:
        names = [f"{node_prefix or 'node'}{k}" for k in range(1, nodes + 1)]
    return {
        "dir": d,
        "nodes": nodes,
        "node_names": names,
        "cpus": cpus,
        "mem_mb": mem,
        "port": port,
        "cluster_name": cluster_name,
        "accounting": accounting,
        "install_conf": install_conf,
        "node_prefix": node_prefix,
        "ctld_host": socket.gethostname().split(".")[0],
        **(options or _options(None, None, None, accounting)),
    }


def _render(cfg: dict) -> str:
    d = cfg["dir"]
    node_lines = [
        f"NodeName={n} NodeAddr=127.0.0.1 NodeHostname={cfg['ctld_host']} Port={cfg['port'] + k} "
        f"CPUs={cfg['cpus']} RealMemory={cfg['mem_mb']} State=UNKNOWN"
        for k, n in enumerate(cfg["node_names"], start=1)
    ]
    # Without a default, a job that asks no memory takes the whole node and serialises everything.
    default_mem = f"DefMemPerCPU={max(1, cfg['mem_mb'] // cfg['cpus'])}"
    with open(TEMPLATE) as f:
        tmpl = string.Template(f.read())
    return tmpl.substitute(
        marker=f"{MARKER}: DIR={d} (managed by `tp-sweep cluster`; do not edit)",
        cluster_name=cfg["cluster_name"],
        ctld_host=cfg["ctld_host"],
        ctld_port=cfg["port"],
        munge_socket=os.path.join(d, "munge", "munge.socket"),
        dir=d,
        accounting=_accounting_lines(cfg),
        extra_conf="\n".join(f"{k}={v}" for k, v in cfg.get("extra_conf", {}).items()),
        node_lines="\n".join(node_lines + [default_mem]),
        partitions="\n".join(_partition_lines(cfg)),
    )


def _partition_lines(cfg: dict) -> list[str]:
    """`debug`, the default, then any other partition; each over every node."""
    nodes = ",".join(cfg["node_names"])
    lines = []
    for name, opts in (cfg.get("partitions") or {"debug": {}}).items():
        base = {
            "Nodes": nodes,
            **({"Default": "YES"} if name == "debug" else {}),
            "MaxTime": "INFINITE",
            "State": "UP",
            "OverSubscribe": "NO",
        }
        lines.append(" ".join([f"PartitionName={name}"] + [f"{k}={v}" for k, v in {**base, **opts}.items()]))
    return lines


def acct_ports(cfg: dict) -> tuple[int, int]:
    """(slurmdbd, MariaDB) ports: clear of slurmctld (port) and the slurmds (port+1..)."""
    return cfg["port"] + 80, cfg["port"] + 81


def _accounting_lines(cfg: dict) -> str:
    if not cfg["accounting"]:
        return "AccountingStorageType=accounting_storage/none"
    # With QOS limits, slurmctld enforces them (and so needs the user's association).
    enforce = "AccountingStorageEnforce=associations,limits,qos\n" if cfg.get("qos") else ""
    return (
        "AccountingStorageType=accounting_storage/slurmdbd\n"
        f"AccountingStorageHost=127.0.0.1\nAccountingStoragePort={acct_ports(cfg)[0]}\n{enforce}"
        # Clients talk to slurmdbd through the munge socket named here, not AuthInfo's.
        f"AccountingStoragePass={os.path.join(cfg['dir'], 'munge', 'munge.socket')}"
    )


def _etc_owner(path: str) -> str | None:
    """DIR named in our marker line of an installed slurm.conf; '' if foreign; None if absent."""
    try:
        with open(path) as f:
            first = f.readline()
    except FileNotFoundError:
        return None
    if first.startswith(MARKER + ": DIR="):
        return first[len(MARKER + ": DIR=") :].split(" ", 1)[0]
    return ""
