"""`tp-sweep cluster up|down|status` (a real Slurm cluster on this machine, slurm/dev/) and
`tp-sweep cluster check [PROFILE]` (any cluster against a profile, slurm/profiles.py): parsing and
printing only. Nothing heavy is imported: every `--help` answers at once.

Exit 0 ok; 1 a daemon failed, Slurm does not answer, or (status) the cluster is not running;
2 bad input, or a profile that does not fit the cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict

from rich.console import Console
from rich.table import Table

from cli.common import fail, json_text
from core.errors import TurboPruneError
from slurm.dev.cluster import (
    DEFAULT_DIR,
    DEFAULT_PORT,
    BadRequest,
    ClusterStatus,
    down,
    status,
    up_again,
)
from slurm.profiles import (
    ProfileError,
    allows_lines,
    check,
    cluster_facts,
    clusters_file,
    get_profile,
    load_profiles,
)

SUBCOMMANDS = {
    "up": (
        "start the cluster (or report it, already running)",
        "Start a Slurm cluster on this machine: munge, slurmctld and a slurmd per node, its state, "
        "config and logs in --dir. On a running cluster a bare `up` keeps its shape and reports it; "
        "options start it as they say.",
    ),
    "down": (
        "end its jobs, then stop its daemons",
        "End the cluster's jobs (through slurmctld, then by its spool and log folders: never "
        "another cluster's), then stop its daemons; says how many jobs it ended. Logs and state stay.",
    ),
    "status": (
        "its daemons and nodes; exit 1 when it is not running",
        "Where the cluster in --dir stands: its daemons and nodes. Starts nothing; exit 1 when it is not running.",
    ),
}
CHECK_HELP = (
    "check a cluster profile (all without PROFILE) against any cluster's sinfo and sacctmgr, and "
    "print what the cluster allows (see check --help)"
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:  # any cluster, not only a dev one
        return check_main(argv[1:])
    p = argparse.ArgumentParser(
        prog="tp-sweep cluster",
        description="A real Slurm cluster on this machine (munge, slurmctld, slurmd), to try a sweep "
        "before spending cluster time: up, down, status. And check: a cluster profile against any "
        "Slurm cluster.",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{up,down,status,check}")
    for name, (summary, description) in SUBCOMMANDS.items():
        s = sub.add_parser(name, help=summary, description=description)
        s.add_argument("--dir", default=DEFAULT_DIR, help="state, config and logs (default %(default)s)")
        if name == "status":
            s.add_argument("--format", choices=("table", "json"), default="table")
        if name != "status":
            s.add_argument("--timeout", type=float, default=30.0, help="seconds per step")
        if name == "up":
            s.add_argument("--nodes", type=int, default=None, help="nodes (default: as running, else 1)")
            s.add_argument("--accounting", action="store_true", help="slurmdbd so sacct works")
            s.add_argument("--cpus", type=int, default=None, help="CPUs per node (default: all)")
            s.add_argument("--mem-mb", type=int, default=None, help="RealMemory per node")
            s.add_argument(
                "--port",
                type=int,
                default=None,
                help=f"slurmctld port; slurmd k uses port+k (default {DEFAULT_PORT})",
            )
            s.add_argument(
                "--no-install-conf", action="store_true", help="leave /etc/slurm alone; clients need SLURM_CONF"
            )
            s.add_argument(
                "--options",
                metavar="FILE.yaml",
                default=None,
                help="slurm.conf lines, partitions and QOS limits (keys slurm_conf, partitions, qos; "
                "see docs/clusters.md); default: the folder's last ones",
            )
    sub.add_parser("check", help=CHECK_HELP)
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    console, err = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)
    try:
        if args.cmd == "up":
            st = up_again(
                args.dir,
                args.nodes,
                args.accounting,
                args.cpus,
                args.mem_mb,
                args.timeout,
                port=args.port,
                install_conf=False if args.no_install_conf else None,
                options=None if args.options is None else read_options(args.options),
            )
            _print_status(st, console)
            return 0
        if args.cmd == "down":
            ended = down(args.dir, args.timeout)
            folder = os.path.abspath(os.path.expanduser(args.dir))
            console.print(
                f"Slurm dev cluster in {folder}: stopped; ended {ended} "
                f"job{'' if ended == 1 else 's'} (logs kept in {os.path.join(folder, 'log')})",
                markup=False,
            )
            return 0
        st = status(args.dir)
        if args.format == "json":
            print(json_text(asdict(st)))
        else:
            _print_status(st, console)
        return 0 if st.running else 1
    except TurboPruneError as exc:  # BadRequest (exit 2), ClusterError (1): by their kind, as tp-sweep's
        return fail(exc)
    except OSError as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        return 1


OPTIONS_FILE_KEYS = {"slurm_conf": "extra_conf", "partitions": "partitions", "qos": "qos"}


def read_options(path: str) -> dict:
    """`up --options FILE`: a YAML mapping of slurm_conf (more slurm.conf lines), partitions (name
    -> options) and qos (name -> sacctmgr limits); slurm/dev/_config.py checks the values."""
    import yaml  # YAML (0.015 s): not for JSON

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise BadRequest(f"--options {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise BadRequest(f"--options {path}: not YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BadRequest(f"--options {path}: a mapping of {', '.join(OPTIONS_FILE_KEYS)} is needed")
    unknown = sorted(set(map(str, data)) - set(OPTIONS_FILE_KEYS))
    if unknown:
        raise BadRequest(f"--options {path}: unknown key {unknown[0]!r} (known: {', '.join(OPTIONS_FILE_KEYS)})")
    for key, value in data.items():
        if value is not None and not isinstance(value, dict):
            raise BadRequest(f"--options {path}: {key} must be a mapping, not {type(value).__name__}")
        _no_yaml_booleans(f"--options {path}: {key}", value or {})
    return {OPTIONS_FILE_KEYS[k]: v or {} for k, v in data.items()}


def _no_yaml_booleans(where: str, value: object) -> None:
    """YAML reads OFF, ON, yes and no as booleans; slurm.conf wants the word itself."""
    if isinstance(value, bool):
        raise BadRequest(f'{where}: YAML read a value as {value}; quote it ("OFF", "YES")')
    if isinstance(value, dict):
        for k, v in value.items():
            _no_yaml_booleans(f"{where}.{k}", v)


def _print_status(st: ClusterStatus, console: Console) -> None:
    head = "[green]running[/]" if st.running else "[red]not running[/]"
    console.print(f"Slurm dev cluster in [bold]{st.dir}[/]: {head}  (conf {st.conf})")
    if st.daemons:
        t = Table("daemon", "pid", box=None)
        for name, pid in st.daemons.items():
            t.add_row(name, str(pid) if pid else "[red]dead[/]")
        console.print(t)
    if st.nodes:
        t = Table("node", "state", "cpus", "memory (MB)", box=None)
        for n in st.nodes:
            t.add_row(n["name"], n["state"], str(n["cpus"]), str(n["memory"]))
        console.print(t)
    if st.message:
        console.print(st.message, markup=False)


def check_main(argv: list[str]) -> int:
    """`tp-sweep cluster check [PROFILE]`: exit 0 fine, 2 the profile does not fit the cluster
    (or the clusters file is bad), 1 Slurm does not answer."""
    ap = argparse.ArgumentParser(
        prog="tp-sweep cluster check",
        description="Check a cluster profile against sinfo and sacctmgr, and print what the cluster allows.",
    )
    ap.add_argument("profile", nargs="?", help=f"a profile of {clusters_file()} (default: all)")
    ap.add_argument("--format", choices=("table", "json"), default="table")
    try:
        a = ap.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    from orchestrator.plan.spec import check_profile_bounds  # pydantic and the presets (0.16 s): not for --help

    try:
        profiles = {a.profile: get_profile(a.profile)} if a.profile else load_profiles()
        for name, body in profiles.items():
            check_profile_bounds(clusters_file(), name, body)
    except ProfileError as exc:  # bad input: exit 2
        return fail(exc)
    facts = cluster_facts()
    if facts is None:
        print("error: sinfo does not answer: is this a Slurm cluster (SLURM_CONF)?", file=sys.stderr)
        return 1
    results = {name: check(body, facts) for name, body in profiles.items()}
    bad = any(problems for problems, _ in results.values())
    if a.format == "json":
        print(
            json_text(
                {
                    "profiles": {n: {"problems": p, "warnings": w} for n, (p, w) in results.items()},
                    "cluster": {k: v for k, v in facts.items() if k not in ("config", "scontrol_partitions")},
                }
            )
        )
        return 2 if bad else 0
    print("the cluster allows:")
    for line in allows_lines(facts):
        print("  " + line)
    for name, (problems, warnings) in results.items():
        print(f"profile {name}: " + ("WRONG" if problems else "ok"))
        for line in problems:
            print(f"  problem: {line}")
        for line in warnings:
            print(f"  warning: {line}")
    if not profiles:
        print(f"no profiles in {clusters_file()}")
    return 2 if bad else 0
