"""What `tp-sweep launch` says about what it did: reuse, jobs submitted or waiting, damaged
files. Shared by launch and `launch --supervise` (cli/supervise.py), so that supervise never
imports launch (launch imports supervise)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cli.common import console, report_bad_files, report_bad_levels
from cli.render.tables import phrases

if TYPE_CHECKING:
    from orchestrator.operations.launch import LaunchResult  # types only
    from orchestrator.plan.grid import SweepPlan  # types only


def reuse_phrases(plan: SweepPlan, reused: int, other: dict[str, int]) -> list[str]:
    """What launch and --dry-run say about reuse: the policy, and where reused levels came from."""
    if plan.reuse == "same-code":
        assert plan.code is not None  # a same-code plan carries the code it hashed
        return [f"Reuse same-code (code {plan.code.sources}):", f"{reused} levels already trained by this code."]
    if not other:
        return [f"Reuse any: the {reused} levels already done were trained by this code."]
    parts = ", ".join(f"{code} ({n})" for code, n in other.items())
    return [
        f"Reuse any: of {reused} levels already done, {sum(other.values())} were trained by other code:",
        f"{parts}{'' if 'unknown' not in other else ' (unknown: trained before codes were recorded)'}.",
    ]


def inputs_phrase(other: dict[str, Any]) -> str | None:
    """One line, when reused levels were trained with other library versions or other data than
    this launch's jobs would use (a note: they are reused all the same)."""
    if not other:
        return None
    libs = "; ".join(
        f"{name} {', '.join(sorted(lib['recorded']))} (now {lib['now'] or 'not installed'})"
        for name, lib in sorted(other["libraries"].items())
    )
    data = ", ".join(f"data.{k}" for k in sorted(other["data"]))
    what = " and ".join(x for x in (libs and f"other versions: {libs}", data and f"other data: {data}") if x)
    return f"note: {other['levels']} reused levels were trained with {what}."


def report_launch(res: LaunchResult, plan: SweepPlan) -> None:
    """What a launch (or `launch --supervise`) did: levels imported from disk, reuse, jobs
    submitted or waiting (and why), damaged files."""
    if res.imported:
        console.print(f"found {res.imported} finished levels on disk that the store lacked: imported")
    room = {j: w for j, w in res.waiting.items() if w.startswith("waits for room")}
    for line in phrases(reuse_phrases(plan, res.reused, res.other_code), console.width, sep=" ", indent=""):
        console.print(line, highlight=False)
    if inputs_phrase(res.other_inputs):
        console.print(inputs_phrase(res.other_inputs), highlight=False, soft_wrap=True)
    for job, why in res.waiting.items():
        if job not in room:
            console.print(f"job {job} not submitted: {why}")
    if room:
        console.print(
            f"{len(room)} jobs not submitted yet: {next(iter(room.values()))}; "
            "the sweep's supervisor (--supervise, or `tp-sweep supervise`) submits them as "
            "room frees up, or `tp-sweep resume` later"
        )
    if not res.submitted:
        left = ", ".join(f"{n} {s}" for s, n in res.skipped.items())
        if not room:
            console.print(
                "nothing to submit: every level is done or being trained" + (f" (jobs: {left})" if left else "")
            )
    else:
        console.print(
            f"submitted {len(res.submitted)} jobs" + (f"; left alone: {res.skipped}" if res.skipped else "")
        )
    report_bad_levels({f"{plan.levels_dir}/{lid}": why for lid, why in res.bad.items()}, "not used")
    report_bad_files(res.bad_files, f"{len(res.bad_files)} file(s) of the output folder failed their checks:")
