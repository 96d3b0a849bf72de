"""What a Slurm cluster allows a sweep, read from the cluster itself: the largest array
(MaxArraySize), the jobs slurmctld holds (MaxJobCount), the jobs the user may have submitted
under their QOS or association (sacctmgr, where accounting answers); and whether a partition is
preempted without the `--signal` warning.

Nothing here submits. The submitter splits arrays into chunks that fit and submits no more jobs
than there is room for; the rest stays PLANNED with the reason, for the supervisor to submit as
room frees up. A refusal sbatch gives anyway (another tool filled the QOS meanwhile) is told
apart from other errors by `limit_refusal`. Standard library only: `status` and the trainer's
job wrapper may import it.
"""

from __future__ import annotations

import getpass
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any

# sbatch's words when a limit, not the request, refuses a job (Slurm 22.05; the reason codes
# are those of squeue's %r and the QOS/association limits of sacctmgr).
_LIMIT_WORDS = (
    "QOSMaxSubmitJobPerUserLimit",
    "QOSMaxSubmitJobPerAccountLimit",
    "AssocMaxSubmitJobLimit",
    "MaxSubmitJobs",
    "job submit limit",
    "Job violates accounting/QOS policy",
    "MaxJobCount",
    "Slurm temporarily unable to accept job",
    "Resource temporarily unavailable",
)


def limit_refusal(text: str) -> str | None:
    """The line of an sbatch error that says a limit refused the job (None: another error)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    for word in _LIMIT_WORDS:
        for ln in lines:
            if word.lower() in ln.lower():
                return re.sub(r"^(sbatch: )?error: ", "", ln)
    return None


def _run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None


def scontrol_config() -> dict[str, str]:
    """`scontrol show config` as a dict ({} when scontrol does not answer)."""
    out = _run("scontrol", "show", "config")
    conf: dict[str, str] = {}
    if out is None or out.returncode != 0:
        return conf
    for line in out.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            conf[key.strip()] = value.strip()
    return conf


def _int(value: str | None) -> int | None:
    m = re.match(r"\s*(\d+)", value or "")
    return int(m.group(1)) if m else None


def partitions() -> dict[str, dict[str, str]]:
    """Every partition's settings (`scontrol show partition -o`)."""
    out = _run("scontrol", "show", "partition", "-o")
    found: dict[str, dict[str, str]] = {}
    if out is None or out.returncode != 0:
        return found
    for line in out.stdout.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if "PartitionName" in fields:
            found[fields["PartitionName"]] = fields
    return found


def default_partition(parts: dict[str, dict[str, str]]) -> str | None:
    return next((n for n, f in parts.items() if f.get("Default") == "YES"), None)


def _sacctmgr(*args: str) -> list[dict[str, str]] | None:
    """Rows of `sacctmgr -n -P show ... format=...` as dicts; None when accounting does not answer."""
    fmt = next((a.split("=", 1)[1] for a in args if a.startswith("format=")), "")
    out = _run("sacctmgr", "-n", "-P", "show", *args)
    if out is None or out.returncode != 0:
        return None
    keys = [k.lower() for k in fmt.split(",")]
    return [dict(zip(keys, line.split("|"))) for line in out.stdout.splitlines() if line.strip()]


@dataclass
class Association:
    account: str
    partition: str
    qos: list[str]
    default_qos: str
    max_submit: int | None
    max_jobs: int | None


def associations(user: str | None = None) -> list[Association] | None:
    rows = _sacctmgr(
        "assoc",
        "where",
        f"user={user or getpass.getuser()}",
        "format=account,partition,qos,defaultqos,maxsubmit,maxjobs",
    )
    if rows is None:
        return None
    return [
        Association(
            r["account"],
            r["partition"],
            [q for q in r["qos"].split(",") if q],
            r["defaultqos"],
            _int(r["maxsubmit"]),
            _int(r["maxjobs"]),
        )
        for r in rows
    ]


def qos_limits(name: str) -> dict[str, str] | None:
    rows = _sacctmgr("qos", name, "format=name,maxsubmitpu,maxjobspu,maxsubmitpa,maxjobspa,maxwall")
    if not rows:
        return None
    return next((r for r in rows if r.get("name") == name), None)


def user_default_account(user: str | None = None) -> str | None:
    rows = _sacctmgr("user", user or getpass.getuser(), "format=defaultaccount")
    return rows[0]["defaultaccount"] if rows else None


@dataclass
class Limits:
    """What the cluster allows this user; None: no such limit, or the cluster did not say."""

    max_array_size: int | None = None
    max_job_count: int | None = None
    max_submit: int | None = None  # jobs submitted at once (pending + running), this user
    submit_from: str = ""  # where max_submit comes from, in words
    qos: str | None = None  # the QOS jobs run under (max_submit counts these)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_array_size": self.max_array_size,
            "max_job_count": self.max_job_count,
            "max_submit": self.max_submit,
            "submit_from": self.submit_from,
            "qos": self.qos,
        }


def read_limits(extra: dict[str, Any] | None = None, config: dict[str, str] | None = None) -> Limits:
    """The limits a sweep's jobs (sbatch options `extra`: account, qos) meet."""
    extra = extra or {}
    conf = scontrol_config() if config is None else config
    lim = Limits(max_array_size=_int(conf.get("MaxArraySize")), max_job_count=_int(conf.get("MaxJobCount")))
    assocs = associations()
    if assocs is None:
        lim.notes.append("sacctmgr did not answer: no accounting, so no QOS or association limits")
        return lim
    account = extra.get("account") or extra.get("A") or user_default_account()
    mine = [a for a in assocs if not account or a.account == account] or assocs
    assoc = next((a for a in mine if not a.partition), mine[0]) if mine else None
    qos = str(extra.get("qos") or extra.get("q") or (assoc.default_qos if assoc else "") or "normal")
    lim.qos = qos
    found: list[tuple[int, str]] = []
    q = qos_limits(qos)
    if q is not None and _int(q.get("maxsubmitpu")) is not None:
        found.append((_int(q["maxsubmitpu"]) or 0, f"QOS {qos} MaxSubmitJobsPerUser"))
    if q is not None and _int(q.get("maxsubmitpa")) is not None:
        found.append((_int(q["maxsubmitpa"]) or 0, f"QOS {qos} MaxSubmitJobsPerAccount"))
    if assoc is not None and assoc.max_submit is not None:
        found.append((assoc.max_submit, f"association {assoc.account} MaxSubmitJobs"))
    if found:
        lim.max_submit, lim.submit_from = min(found)
    return lim


def jobs_in_queue(qos: str | None = None, user: str | None = None) -> int:
    """The user's jobs slurmctld counts against submit limits (array tasks one by one),
    only those of `qos` when given."""
    out = _run("squeue", "-h", "-r", "-u", user or getpass.getuser(), "-o", "%q")
    if out is None or out.returncode != 0:
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.strip() and (qos is None or line.strip() == qos))


def all_jobs() -> int:
    """Every job record slurmctld holds (finished ones too, until MinJobAge): MaxJobCount counts these."""
    out = _run("squeue", "-h", "-r", "--states=all", "-o", "%i")
    return len(out.stdout.splitlines()) if out is not None and out.returncode == 0 else 0


def room(lim: Limits) -> tuple[int | None, str]:
    """How many more jobs may be submitted now (None: no limit), and the limit that says so."""
    best: tuple[int | None, str] = (None, "")
    if lim.max_submit is not None:
        n = max(0, lim.max_submit - jobs_in_queue(lim.qos if "QOS" in lim.submit_from else None))
        best = (n, f"{lim.submit_from} is {lim.max_submit}")
    if lim.max_job_count is not None:
        n = max(0, lim.max_job_count - all_jobs())
        if best[0] is None or n < best[0]:
            best = (n, f"MaxJobCount is {lim.max_job_count}")
    return best


def partition_nodes(partition: str | None = None) -> list[str]:
    """The nodes of a partition (the default one when None); [] when sinfo does not answer."""
    out = _run("sinfo", "-h", "-N", "-o", "%N", *(["-p", partition] if partition else []))
    if out is None or out.returncode != 0:
        return []
    return sorted({line.strip() for line in out.stdout.splitlines() if line.strip()})


# ---- preemption ------------------------------------------------------------------------------
def preemption_warning(
    partition: str | None,
    signal_delay_s: int,
    supervised: bool,
    config: dict[str, str] | None = None,
    parts: dict[str, dict[str, str]] | None = None,
) -> str | None:
    """Why, and what to do, when jobs on `partition` can be preempted without the `--signal`
    warning (GraceTime=0): a preempted job gets SIGTERM and KillWait seconds, not the
    signal_delay_s its USR2 would give. None when the partition is not preempted that way."""
    conf = scontrol_config() if config is None else config
    ptype = conf.get("PreemptType", "preempt/none")
    if not conf or ptype.endswith("/none"):
        return None
    parts = partitions() if parts is None else parts
    name = partition or default_partition(parts)
    p = parts.get(name or "")
    if p is None:
        return None
    mode = (p.get("PreemptMode") or conf.get("PreemptMode") or "OFF").upper()
    if "OFF" in mode or "SUSPEND" in mode:
        return None  # not preempted, or suspended (nothing is lost)
    if ptype.endswith("partition_prio"):
        # Any partition of a higher tier may preempt it (node sets are not compared: partitions
        # of different tiers exist to share nodes).
        tier = _int(p.get("PriorityTier")) or 0
        higher = [n for n, f in parts.items() if n != name and (_int(f.get("PriorityTier")) or 0) > tier]
        if not higher:
            return None
        by = f"jobs of partition {', '.join(higher)}"
    else:
        by = "jobs of a higher QOS"
    if (_int(p.get("GraceTime")) or 0) > 0:
        return None
    kill_wait = _int(conf.get("KillWait")) or 30
    msg = (
        f"partition {name} is preempted by {by} ({ptype}, PreemptMode={mode}, GraceTime=0): a "
        f"preempted job gets no USR2 warning ({signal_delay_s} s), only SIGTERM and KillWait="
        f"{kill_wait} s before SIGKILL. The trainer saves at its next step on SIGTERM; a step "
        f"that takes longer loses everything since the last epoch checkpoint, at every "
        f"preemption. What to do: ask the admins for GraceTime >= {signal_delay_s} on {name}, "
        "or use a partition that is not preempted, or keep steps short."
    )
    if "CANCEL" in mode and not supervised:
        msg += (
            " PreemptMode=CANCEL never requeues a preempted job: launch with --supervise (or "
            "run `tp-sweep supervise`) so that it is resubmitted without you."
        )
    return msg
