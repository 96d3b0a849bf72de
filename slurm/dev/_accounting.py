"""Optional accounting for the dev cluster: a private MariaDB + slurmdbd, so `sacct` works.

Installed on demand (`apt-get install slurmdbd mariadb-server`) because most users never need it:
without it, submitit falls back to squeue/scontrol and reports "Bypassing sacct error".
MariaDB runs as root with its datadir under DIR/db and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import socket
import string
import subprocess
import time

from ._config import ClusterError, _conf_path
from ._config import acct_ports as ports

PACKAGES = ("slurmdbd", "mariadb-server")
POLICY_RC = "/usr/sbin/policy-rc.d"
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slurmdbd.conf.tmpl")


def ensure_installed(timeout: float = 600) -> None:
    """apt-get the packages if missing; never lets apt start Debian's own MariaDB service."""
    if shutil.which("slurmdbd") and shutil.which("mariadbd") and shutil.which("sacct"):
        return
    made_policy = not os.path.exists(POLICY_RC)
    if made_policy:  # exit 101 = "do not start services" for invoke-rc.d; removed afterwards
        with open(POLICY_RC, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(POLICY_RC, 0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    try:
        out = subprocess.run(install, capture_output=True, text=True, timeout=timeout, env=env)
        if out.returncode != 0:  # stale package lists on a fresh machine: refresh once
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=timeout)
            out = subprocess.run(install, capture_output=True, text=True, timeout=timeout, env=env)
    finally:
        if made_policy:
            os.remove(POLICY_RC)
    if out.returncode != 0:
        raise ClusterError(f"apt-get install {' '.join(PACKAGES)} failed:\n{out.stderr[-2000:]}")


def _secret(d: str) -> str:
    """Database password, made once and kept (mode 600) so restarts reuse the same database."""
    path = os.path.join(d, "db", "password")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(16))
    with open(path) as f:
        return f.read().strip()


def write_conf(d: str, cfg: dict, marker: str) -> None:
    """slurmdbd.conf next to slurm.conf: slurmdbd looks for it in SLURM_CONF's folder."""
    os.makedirs(os.path.join(d, "db"), exist_ok=True)
    dbd, db = ports(cfg)
    with open(TEMPLATE) as f:
        text = string.Template(f.read()).substitute(
            marker=marker,
            munge_socket=os.path.join(d, "munge", "munge.socket"),
            host=cfg["ctld_host"],
            dbd_port=dbd,
            dir=d,
            db_port=db,
            db_pass=_secret(d),
        )
    path = os.path.join(os.path.dirname(_conf_path(d)), "slurmdbd.conf")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # slurmdbd refuses a config others can read


def _sql(d: str, sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["mariadb", "--no-defaults", "-S", os.path.join(d, "db", "mysqld.sock"), "-u", "root", "-e", sql],
        capture_output=True,
        text=True,
        timeout=30,
    )


def start_db(d: str, cfg: dict, timeout: float, wait_for) -> None:
    """Initialise the datadir once, start mariadbd, make the slurm user (idempotent)."""
    data = os.path.join(d, "db", "data")
    if not os.path.isdir(os.path.join(data, "mysql")):
        out = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise ClusterError(f"mariadb-install-db failed:\n{out.stdout[-1500:]}{out.stderr[-1500:]}")
    _, db = ports(cfg)
    sock = os.path.join(d, "db", "mysqld.sock")
    log = os.path.join(d, "log", "mariadbd.log")
    # mariadbd does not daemonise: a new session keeps it alive after our process exits.
    subprocess.Popen(
        [
            "mariadbd",
            "--no-defaults",
            "--user=root",
            f"--datadir={data}",
            f"--port={db}",
            "--bind-address=127.0.0.1",
            f"--socket={sock}",
            f"--pid-file={os.path.join(d, 'db', 'mariadbd.pid')}",
            f"--log-error={log}",
            "--skip-name-resolve",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(
        d,
        "mariadbd",
        os.path.join(d, "db", "mariadbd.pid"),
        lambda: _sql(d, "select 1").returncode == 0,
        timeout,
        "ready",
    )
    pw = _secret(d)
    out = _sql(
        d,
        f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{pw}'; "
        "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; "
        "CREATE DATABASE IF NOT EXISTS slurm_acct_db;",
    )
    if out.returncode != 0:
        raise ClusterError(f"setting up the accounting database failed: {out.stderr.strip()}")


def start_dbd(d: str, cfg: dict, timeout: float, launch, wait_for) -> None:
    launch(d, "slurmdbd", ["slurmdbd"])  # reads DIR/etc/slurmdbd.conf through SLURM_CONF
    dbd, _ = ports(cfg)
    wait_for(d, "slurmdbd", os.path.join(d, "run", "slurmdbd.pid"), lambda: _listening(dbd), timeout, "reachable")


def register_cluster(d: str, cfg: dict, env: dict) -> None:
    """Add the cluster to the database before slurmctld first registers with slurmdbd."""
    name = cfg["cluster_name"]
    out = subprocess.run(
        ["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    if name not in out.stdout.split():
        _sacctmgr(env, "add", "cluster", name)
        time.sleep(0.2)
    if cfg.get("qos"):
        grant_qos(cfg, env)


ACCOUNT = "tp"  # the dev cluster's one account, when it enforces QOS limits


def _sacctmgr(env: dict, *args: str) -> None:
    out = subprocess.run(["sacctmgr", "-i", *args], capture_output=True, text=True, timeout=30, env=env)
    said = out.stdout + out.stderr
    if out.returncode != 0 and "already exists" not in said and "Nothing" not in said:
        raise ClusterError(f"sacctmgr {' '.join(args)} failed: {said.strip()}")


def grant_qos(cfg: dict, env: dict) -> None:
    """An account `tp` holding the user `up` runs as, and each QOS of cfg["qos"] with its limits,
    granted to that user: enforcing limits needs an association for every job's user.
    Idempotent: a restart sets the same limits again."""
    user, cluster = getpass.getuser(), cfg["cluster_name"]
    _sacctmgr(env, "add", "account", ACCOUNT, f"cluster={cluster}", "description=turboprune", "organization=dev")
    _sacctmgr(env, "add", "user", user, f"account={ACCOUNT}", f"cluster={cluster}", f"defaultaccount={ACCOUNT}")
    for name, limits in cfg["qos"].items():
        _sacctmgr(env, "add", "qos", name)
        if limits:
            _sacctmgr(env, "modify", "qos", name, "set", *(f"{k}={v}" for k, v in limits.items()))
    _sacctmgr(env, "modify", "user", user, "set", "qos+=" + ",".join(["normal", *cfg["qos"]]))


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
