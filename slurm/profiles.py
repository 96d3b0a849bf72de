"""Cluster profiles: a cluster's executor settings written once, named in every spec.

`~/.config/turboprune/clusters.yaml` (or the file `$TP_CLUSTERS` names) maps profile names to
executor settings:

    mycluster:
      partition: gpu
      account: lab123
      qos: normal
      constraint: a100
      gres: gpu:4
      timeout_min: 1440       # the time limit, minutes
      signal_delay_s: 300     # USR2 this long before it: save and requeue
      extra: {mail-type: FAIL}  # any other sbatch option
      # and any other executor key: gpus_per_node, cpus_per_task, mem_gb, array_parallelism...

A spec says `executor: {profile: mycluster, ...}`; its own keys override the profile's (`extra`
key by key). Executor settings are in no run id, so a profile never changes what a sweep trains.
`tp-sweep cluster check [PROFILE]` compares a profile with what sinfo, scontrol and sacctmgr say
the cluster allows. Standard library and PyYAML only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from core.errors import UserError
from slurm import limits
from slurm.limits import _run, preemption_warning

MAX_FILE_BYTES = 256 * 1024
# Keys a profile may set: the executor's (orchestrator/plan/spec.py ExecutorSpec), of which
# account, qos, constraint and gres become sbatch options.
EXECUTOR_KEYS = {
    "kind": str,
    "nodes": int,
    "gpus_per_node": int,
    "procs_per_node": int,
    "cpus_per_task": int,
    "mem_gb": (int, float),
    "timeout_min": int,
    "partition": str,
    "array_parallelism": int,
    "signal_delay_s": int,
    "max_requeues": int,
    "account": str,
    "qos": str,
    "constraint": str,
    "gres": str,
    "extra": dict,
}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class ProfileError(UserError, ValueError):
    """A clusters file or profile that cannot be used; the message names the file and the key."""


def clusters_file() -> Path:
    env = os.environ.get("TP_CLUSTERS")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "turboprune" / "clusters.yaml"


def load_profiles(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every profile of the clusters file, checked; {} when there is no file."""
    import yaml  # YAML (0.015 s): only when a clusters file is read

    path = path or clusters_file()
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ProfileError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: not UTF-8 text: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: must map profile names to executor settings, got {type(data).__name__}")
    return {str(name): check_profile(path, name, body) for name, body in data.items()}


def check_profile(path: Path | str, name: Any, body: Any) -> dict[str, Any]:
    where = f"{path}: {name}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ProfileError(f"{path}: {str(name)[:40]!r} is not a profile name (letters, digits, _ . -)")
    if not isinstance(body, dict):
        raise ProfileError(f"{where}: must be a mapping of executor settings, got {type(body).__name__}")
    for key, value in body.items():
        want = EXECUTOR_KEYS.get(key)
        if want is None:
            raise ProfileError(f"{where}.{key}: unknown key; known: {', '.join(sorted(EXECUTOR_KEYS))}")
        if isinstance(value, bool) or not isinstance(value, want):
            kind = {int: "an integer", str: "a string", dict: "a mapping"}.get(want, "a number")  # type: ignore[call-overload]
            raise ProfileError(f"{where}.{key}: {str(value)[:40]!r} is not {kind}")
        if isinstance(value, str) and (not value or re.search(r"[\x00-\x1f\x7f]", value)):
            raise ProfileError(f"{where}.{key}: {value[:40]!r} is not one sbatch value")
    return dict(body)


def get_profile(name: str, path: Path | None = None) -> dict[str, Any]:
    path = path or clusters_file()
    profiles = load_profiles(path)
    if not profiles:
        raise ProfileError(
            f"executor.profile: {name!r}, but there is no clusters file at {path} "
            "(set TP_CLUSTERS, or write ~/.config/turboprune/clusters.yaml)"
        )
    if name not in profiles:
        raise ProfileError(
            f"executor.profile: no profile {name!r} in {path}; profiles: {', '.join(sorted(profiles))}"
        )
    return profiles[name]


def merge(profile: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The spec's executor settings over the profile's; `extra` merged key by key."""
    out = {**profile, **{k: v for k, v in own.items() if k != "profile"}}
    if "extra" in profile or "extra" in own:
        out["extra"] = {**(profile.get("extra") or {}), **(own.get("extra") or {})}
    return out


# ---- tp-sweep cluster check ---------------------------------------------------------------------
def _sinfo() -> list[dict[str, str]] | None:

    out = _run("sinfo", "-h", "-o", "%R|%a|%l|%D|%c|%m|%f|%G")
    if out is None or out.returncode != 0:
        return None
    keys = ("partition", "avail", "timelimit", "nodes", "cpus", "memory_mb", "features", "gres")
    return [dict(zip(keys, line.split("|"))) for line in out.stdout.splitlines() if line.strip()]


def _minutes(limit: str) -> int | None:
    """Slurm's time limit text (days-hh:mm:ss, hh:mm:ss, mm, infinite) in minutes; None: none."""
    if not limit or limit.upper() in ("INFINITE", "UNLIMITED", "N/A"):
        return None
    days, _, rest = limit.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    h, m, s = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return (int(days or 0) * 24 + h) * 60 + m + (1 if s else 0)


def _words(expr: str) -> set[str]:
    return {w for w in re.split(r"[&|,()\[\]*\s]+", expr) if w and not w.isdigit()}


def cluster_facts() -> dict[str, Any] | None:
    """What the cluster allows: partitions (sinfo, scontrol), config limits, the user's accounts
    and QOS (sacctmgr; None without accounting). None when Slurm does not answer."""
    rows = _sinfo()
    if rows is None:
        return None
    parts = limits.partitions()
    conf = limits.scontrol_config()
    assocs = limits.associations()
    qos: dict[str, dict[str, str] | None] = {}
    if assocs is not None:
        for name in sorted({q for a in assocs for q in a.qos} | {a.default_qos for a in assocs if a.default_qos}):
            qos[name] = limits.qos_limits(name)
    merged: dict[str, dict[str, Any]] = {}
    for r in rows:
        name = r["partition"]
        p = merged.setdefault(
            name,
            {
                "name": name,
                "avail": r["avail"],
                "max_time": r["timelimit"],
                "nodes": 0,
                "features": set(),
                "gres": set(),
                "cpus": r["cpus"],
                "memory_mb": r["memory_mb"],
            },
        )
        p["nodes"] += int(r["nodes"] or 0)
        p["features"] |= {f for f in r["features"].split(",") if f and f != "(null)"}
        p["gres"] |= {g for g in r["gres"].split(",") if g and g != "(null)"}
        s = parts.get(name, {})
        p.update(
            default=s.get("Default") == "YES",
            preempt_mode=s.get("PreemptMode"),
            priority_tier=s.get("PriorityTier"),
            grace_time=s.get("GraceTime"),
        )
    for p in merged.values():
        p["features"], p["gres"] = sorted(p["features"]), sorted(p["gres"])
    return {
        "partitions": merged,
        "max_array_size": conf.get("MaxArraySize"),
        "max_job_count": conf.get("MaxJobCount"),
        "preempt_type": conf.get("PreemptType"),
        "accounts": None if assocs is None else sorted({a.account for a in assocs}),
        "associations": None if assocs is None else [vars(a) for a in assocs],
        "qos": qos,
        "config": conf,
        "scontrol_partitions": parts,
    }


def check(profile: dict[str, Any], facts: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(problems, warnings) of a profile on this cluster. A problem makes sbatch refuse."""
    problems, warnings = [], []
    parts = facts["partitions"]
    name = profile.get("partition") or next((n for n, p in parts.items() if p["default"]), None)
    p = parts.get(name or "")
    if profile.get("partition") and p is None:
        problems.append(
            f"partition {profile['partition']!r} does not exist; partitions: {', '.join(sorted(parts))}"
        )
    if p is not None:
        if p["avail"] != "up":
            warnings.append(f"partition {name} is {p['avail']}: jobs wait until it is up")
        limit = _minutes(p["max_time"])
        if limit is not None and profile.get("timeout_min") and profile["timeout_min"] > limit:
            problems.append(
                f"timeout_min {profile['timeout_min']} is more than partition {name}'s "
                f"MaxTime {p['max_time']} ({limit} min)"
            )
        if profile.get("constraint"):
            missing = _words(profile["constraint"]) - set(p["features"])
            if missing:
                problems.append(
                    f"constraint {profile['constraint']!r}: no node of partition {name} has "
                    f"{', '.join(sorted(missing))}; features: {', '.join(p['features']) or 'none'}"
                )
        if profile.get("gres"):
            have = {g.split(":")[0] for g in p["gres"]}
            want = profile["gres"].split(",")[0].split(":")[0]
            if want not in have:
                problems.append(
                    f"gres {profile['gres']!r}: partition {name} has {', '.join(p['gres']) or 'no gres'}"
                )
    accounts, assocs = facts["accounts"], facts["associations"]
    account = profile.get("account") or (profile.get("extra") or {}).get("account")
    qos = profile.get("qos") or (profile.get("extra") or {}).get("qos")
    if accounts is None:
        if account or qos:
            warnings.append("sacctmgr does not answer (no accounting): account and QOS not checked")
    else:
        if account and account not in accounts:
            problems.append(
                f"account {account!r}: you are not in it; your accounts: {', '.join(accounts) or 'none'}"
            )
        if qos:
            allowed = {q for a in assocs if not account or a["account"] == account for q in a["qos"]}
            if qos not in allowed:
                problems.append(
                    f"qos {qos!r} is not allowed for you"
                    + (f" in account {account}" if account else "")
                    + f"; allowed: {', '.join(sorted(allowed)) or 'none'}"
                )
    if p is not None:
        warn = preemption_warning(
            name, int(profile.get("signal_delay_s", 120)), False, facts["config"], facts["scontrol_partitions"]
        )
        if warn:
            warnings.append(warn)
    return problems, warnings


def allows_lines(facts: dict[str, Any]) -> list[str]:
    lines = [
        f"MaxArraySize {facts['max_array_size']} (tasks per array), MaxJobCount "
        f"{facts['max_job_count']}, PreemptType {facts['preempt_type']}"
    ]
    for p in facts["partitions"].values():
        extra = [
            f"features {','.join(p['features'])}" if p["features"] else "",
            f"gres {','.join(p['gres'])}" if p["gres"] else "",
            f"PreemptMode {p['preempt_mode']}" if p["preempt_mode"] not in (None, "OFF") else "",
            f"PriorityTier {p['priority_tier']}" if p["priority_tier"] not in (None, "1") else "",
        ]
        lines.append(
            f"partition {p['name']}{' (default)' if p['default'] else ''}: {p['avail']}, "
            f"MaxTime {p['max_time']}, {p['nodes']} nodes of {p['cpus']} CPUs and "
            f"{p['memory_mb']} MB" + "".join(f", {e}" for e in extra if e)
        )
    if facts["associations"] is None:
        lines.append("accounting: sacctmgr does not answer (no QOS or account limits known)")
    else:
        for a in facts["associations"]:
            lines.append(
                f"account {a['account']}{' partition ' + a['partition'] if a['partition'] else ''}:"
                f" QOS {','.join(a['qos']) or '-'} (default {a['default_qos'] or '-'})"
                + (f", MaxSubmitJobs {a['max_submit']}" if a["max_submit"] is not None else "")
            )
        words = {
            "maxsubmitpu": "MaxSubmitJobsPerUser",
            "maxjobspu": "MaxJobsPerUser",
            "maxsubmitpa": "MaxSubmitJobsPerAccount",
            "maxjobspa": "MaxJobsPerAccount",
            "maxwall": "MaxWall",
        }
        for name, q in facts["qos"].items():
            limits = {words.get(k, k): v for k, v in (q or {}).items() if k != "name" and v}
            lines.append(f"QOS {name}: " + (", ".join(f"{k} {v}" for k, v in limits.items()) or "no limits"))
    return lines
