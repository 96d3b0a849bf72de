"""Failure classes, and what the supervisor does about each (the spec's `retry:` block).

- requeued by the scheduler (preempted with PreemptMode=REQUEUE, or warned with USR2 before
  its time limit): nothing to do, it continues from its checkpoint;
- PREEMPTED, not requeued (PreemptMode=CANCEL): resubmitted at once from its checkpoint, with
  neither backoff nor budget;
- TIMEOUT, the time limit after `max_requeues` requeues (Slurm's TIMEOUT, or submitit ending the
  job at the warning, which Slurm records as FAILED: the job wrapper says which): resubmitted from
  its checkpoint (`retry.timeout`), never held against the node. A level longer than a slice
  times out again and again while it advances: only time-outs that saved no more steps than the
  one before count toward `same_error_limit`, so a level that is stuck stops, and one that moves
  goes on (within `max_per_job`);
- NODE_FAIL, BOOT_FAIL, LOST (the node failed or never booted; the job vanished or was killed
  without a word): resubmitted; these failures count against the node they happened on, and
  every resubmission excludes (`--exclude`) the nodes with `exclude_after` of them in the sweep;
- CANCELLED, cancelled outside tp-sweep (an admin's scancel; its state is LOST, or PREEMPTED when
  the trainer saved on the way out): resubmitted like LOST, but the node is not held against;
- OUT_OF_MEMORY: resubmitted once with `oom_mem_factor` x the memory (at most `oom_max_mem_gb`),
  and it says so;
- ERROR, the trainer raised (a bug, bad data): FAILED, not retried; the message is the
  exception's line and the log's path.

Every retry waits `backoff_s` x 2^(retries so far), at most `backoff_max_s`, and counts against
`max_per_job` and the sweep's `max_per_sweep`; the same class of failure on the same level
`same_error_limit` times stops the retries of that job. A verdict is a `Decision` with its reason;
the supervisor records it on the job and as an action.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from orchestrator.plan.spec import ExecutorSpec, RetrySpec

NODE_CLASSES = ("NODE_FAIL", "BOOT_FAIL", "LOST")
RETRIED = ("PREEMPTED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", *NODE_CLASSES)
# Store states in which the supervisor looks at a job's failure (PREEMPTED only once its failure
# says the scheduler will not requeue it).
FAILED_STATES = ("FAILED", "LOST", "TIMEOUT", "PREEMPTED")


def failure_class(state: str, failure: str | None) -> str | None:
    """The job's failure class, None while there is none to act on (a PREEMPTED job the
    scheduler requeues)."""
    if failure:
        return failure
    if state == "PREEMPTED":
        return None
    if state == "TIMEOUT":
        return "TIMEOUT"
    return "LOST"  # FAILED or LOST and nobody said why: it died without a word


@dataclass
class History:
    """What the supervisor has done before, from its actions: for budgets and repeated failures."""

    sweep_retries: int = 0  # retries of all the sweep's jobs
    same_failures: int = 0  # this class on this level, before (TIMEOUT: those without progress)
    stalled_at: int | None = None  # TIMEOUT: the steps the level had saved at this one
    node_failures: dict[str, int] = field(default_factory=dict)  # node -> node-class failures
    partition_nodes: list[str] = field(default_factory=list)  # where the sweep's jobs may run


@dataclass
class Decision:
    verdict: str  # retry | final
    reason: str
    delay_s: float = 0.0
    sbatch: dict[str, Any] | None = None  # the job's sbatch settings from now on
    counts: bool = True  # spends retry budget

    def retry_at(self, now: dt.datetime) -> dt.datetime | None:
        return now + dt.timedelta(seconds=self.delay_s) if self.verdict == "retry" else None


def _gb(x: float) -> str:
    return f"{x:g} GB"


def decide(
    failure: str,
    *,
    retries: int,
    level: str | None,
    node: str | None,
    message: str | None,
    sbatch: dict[str, Any] | None,
    policy: RetrySpec,
    executor: ExecutorSpec,
    history: History,
) -> Decision:
    """The verdict on one failed job: retry (when, with which sbatch settings) or final, and why."""
    said = f": {message}" if message else ""
    where = f" on level {level[:12]}" if level else ""
    if failure == "ERROR":
        return Decision(
            "final",
            f"the trainer raised{said}; a retry would repeat it, not retried "
            "(fix it, then `tp-sweep resume --include-failed`)",
        )
    if failure not in RETRIED:
        return Decision("final", f"{failure}{said}: no policy retries it")
    if failure == "PREEMPTED":
        new, why = _avoid_bad_nodes(dict(sbatch or {}), history, policy)
        return Decision(
            "retry",
            f"preempted and not requeued by the scheduler; resubmitted from its checkpoint{why}",
            sbatch=new or None,
            counts=False,
        )
    if failure == "TIMEOUT" and not policy.timeout:
        return Decision("final", f"time limit reached after its requeues{said}; retry.timeout is off")
    if failure == "TIMEOUT" and history.same_failures + 1 >= policy.same_error_limit:
        at = f" (stuck at step {history.stalled_at})" if history.stalled_at is not None else ""
        return Decision(
            "final",
            f"TIMEOUT{where}: {history.same_failures + 1} time limits in a row without progress{at} "
            f"(retry.same_error_limit {policy.same_error_limit}){said}; not retried: the level "
            "saves nothing within a slice (raise executor.timeout_min, or look at its log)",
        )
    if history.same_failures + 1 >= policy.same_error_limit:
        return Decision(
            "final",
            f"{failure}{where} {history.same_failures + 1} times "
            f"(retry.same_error_limit {policy.same_error_limit}){said}; not retried",
        )
    if retries >= policy.max_per_job:
        return Decision(
            "final",
            f"{failure}{said}; retried {retries} times already "
            f"(retry.max_per_job {policy.max_per_job}), not retried",
        )
    if history.sweep_retries >= policy.max_per_sweep:
        return Decision(
            "final",
            f"{failure}{said}; the sweep's {history.sweep_retries} retries spent "
            f"its budget (retry.max_per_sweep {policy.max_per_sweep}), not retried",
        )
    delay = min(policy.backoff_s * 2**retries, policy.backoff_max_s)
    after = f"retry {retries + 1} of {policy.max_per_job} in {delay:g} s"
    new = dict(sbatch or {})
    if failure == "OUT_OF_MEMORY":
        had = float(new.get("mem_gb") or executor.mem_gb)
        cap = policy.oom_max_mem_gb or 4 * executor.mem_gb
        if "mem_gb" in new or had >= cap:
            return Decision(
                "final",
                f"out of memory again with {_gb(had)}{said}; not retried "
                f"(the cap is {_gb(cap)}: raise executor.mem_gb or retry.oom_max_mem_gb)",
            )
        more = min(had * policy.oom_mem_factor, cap)
        new["mem_gb"] = round(more, 3)
        new, why = _avoid_bad_nodes(new, history, policy)
        return Decision(
            "retry",
            f"out of memory with {_gb(had)}{said}; resubmitted with {_gb(more)} "
            f"(x{policy.oom_mem_factor:g}, at most {_gb(cap)}), {after}{why}",
            delay,
            new,
        )
    what = {
        "TIMEOUT": "its time limit came before the level finished",
        "NODE_FAIL": "its node failed",
        "BOOT_FAIL": "its node failed to boot",
        "LOST": "it vanished without a word (killed, or its node died)",
        "CANCELLED": "cancelled outside tp-sweep (scancel?)",
    }
    new, why = _avoid_bad_nodes(new, history, policy)
    return Decision(
        "retry", f"{failure}: {what[failure]}{said}; {after}, from its checkpoint{why}", delay, new or None
    )


def _avoid_bad_nodes(sbatch: dict[str, Any], history: History, policy: RetrySpec) -> tuple[dict[str, Any], str]:
    """Every resubmission avoids the nodes with `exclude_after` node failures in the sweep (never
    all of the partition's: sbatch would refuse the job). Returns the settings and what to say."""
    bad = sorted(n for n, k in history.node_failures.items() if k >= policy.exclude_after)
    excluded = sorted(set(filter(None, str(sbatch.get("exclude") or "").split(","))) | set(bad))
    if history.partition_nodes and set(history.partition_nodes) <= set(excluded):
        sbatch.pop("exclude", None)
        return sbatch, f"; every node failed ({', '.join(excluded)}), so none is excluded"
    if not excluded:
        return sbatch, ""
    sbatch["exclude"] = ",".join(excluded)
    counts = ", ".join(f"{n} {history.node_failures.get(n, 0)}" for n in bad)
    return sbatch, (
        f"; excluding {sbatch['exclude']} (node failures: {counts}; retry.exclude_after {policy.exclude_after})"
    )


_NUMBERS = re.compile(r"\d+")


def signature(message: str | None) -> str:
    """A failure's message without its numbers (job ids, times, sizes)."""
    return _NUMBERS.sub("#", message or "")[:200]
