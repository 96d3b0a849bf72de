"""`tp-sweep launch`: validate, plan, record and submit a spec (or run its Optuna search), and
`--dry-run`, which plans and counts without touching anything (orchestrator/operations/launch.py
does both; this module renders them)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cli.common import console, err, json_text, report_bad_levels
from cli.render.launch import inputs_phrase, report_launch, reuse_phrases
from cli.render.search import print_search_plan, search_plan
from cli.render.tables import phrases
from cli.status import show_status

if TYPE_CHECKING:
    from orchestrator.operations.launch import DryRun, Launched, LaunchRequest, LaunchStart


def request_of(a: argparse.Namespace) -> LaunchRequest:
    from orchestrator.operations.launch import LaunchRequest  # the planner, the store: not for --help

    return LaunchRequest(a.spec, a.db, a.executor, a.reuse, a.mode, a.supervise)


def cmd_launch(a: argparse.Namespace) -> int:
    from orchestrator.operations import launch as op  # the planner, the store: not for --help

    if a.dry_run:
        return show_dry_run(op.dry_run(request_of(a)), a.format)
    from cli.supervise import hooks, signal_stop  # the supervisor's lines and signals

    with signal_stop() as stop:
        out = op.launch(request_of(a), hooks(stop, on_start=say_start))
    return show_launched(out, a.wait)


def say_start(start: LaunchStart) -> None:
    """The header, before anything is recorded: one line (soft-wrapped: the store's URL stays on
    it, whatever the terminal's width), how it changes its sweep, a Slurm partition's warning."""
    console.print(
        f"sweep [bold]{start.sweep}[/]: {start.runs} runs, {start.level_trainings} "
        f"level trainings -> {start.kind}, store {start.store_url}",
        soft_wrap=True,
    )
    for line in start.relaunch:
        console.print(line, highlight=False, soft_wrap=True)
    if start.preemption_warning:
        err.print(f"[yellow]warning:[/] {start.preemption_warning}", highlight=False, soft_wrap=True)


def show_launched(out: Launched, wait: bool) -> int:
    from cli.supervise import show_supervised  # the same module as the hooks

    name = out.launch.name
    if out.supervised is not None:
        return show_supervised(out.supervised, out.launch.plan)
    if out.driven_by is not None:
        say_driven(name, out.driven_by)
        return 0
    if out.search is not None:
        return show_search_done(out.store, name, out.search.told)
    res = out.result
    assert res is not None  # a plain launch recorded and submitted
    report_launch(res, out.launch.plan)
    slurm = out.launch.kind == "slurm"
    if slurm and wait:
        from cli.progress import wait_until_idle  # rich's spinner (0.025 s)

        wait_until_idle(out.store, name, console)
    code = show_status(out.store, name, "table", wait if slurm else True)
    return 1 if res.bad else code


def say_driven(sweep: str, holder: str) -> None:
    console.print(
        f"sweep {sweep}: its search is driven by its supervisor ({holder}); `tp-sweep status` follows it"
    )


def show_search_done(store: Any, sweep: str, told: dict[str, int]) -> int:
    console.print(
        "search done: " + ", ".join(f"{n} {s.lower()}" for s, n in told.items())
        if told
        else "search done: nothing left to try"
    )
    return show_status(store, sweep, "table", True)


def show_dry_run(dry: DryRun, fmt: str) -> int:
    from orchestrator.plan.jobs import BRANCHES_INLINE  # the planner (pydantic, YAML): 0.2 s

    run, counts = dry.launch, dry.counts
    info = dry.info()
    search = search_plan(run.spec, run.plan) if run.spec.search is not None else None
    if search is not None:
        info["search"] = search
    if fmt == "json":
        print(json_text(info))
    elif search is not None:
        print_search_plan(console, search, run.kind)
    else:
        for line in phrases(
            [  # wrapped between phrases, never inside one
                f"sweep [bold]{run.name}[/]: {counts['grid_points']} grid points, {counts['runs']} runs,",
                f"{counts['level_trainings']} level trainings planned:",
                f"{counts['levels_done']} already done,",
                f"{counts['levels_to_train']} to train in {dry.jobs} jobs ({counts['epochs']} epochs).",
                *(
                    [
                        f"{counts['mask_only_levels']} intermediate levels of random methods give their masks",
                        "without training (computed on the way).",
                    ]
                    if counts["mask_only_levels"]
                    else []
                ),
                "Naive, each grid point alone:",
                f"{counts['naive_level_trainings']} level trainings ({counts['naive_epochs']} epochs).",
                f"Branches: {BRANCHES_INLINE.split(': ', 1)[0]}:",
                f"{BRANCHES_INLINE.split(': ', 1)[-1]}.",
                *reuse_phrases(run.plan, counts["levels_done"], dry.other_code),
                f"Executor {run.kind}; nothing submitted.",
            ],
            console.width,
            sep=" ",
            indent="",
        ):
            console.print(line, highlight=False)
        if inputs_phrase(dry.other_inputs):
            console.print(inputs_phrase(dry.other_inputs), highlight=False, soft_wrap=True)
    if fmt != "json":
        for line in dry.relaunch_lines:
            console.print(line, highlight=False, soft_wrap=True)
    report_bad_levels(dry.bad, "not counted as done")
    return dry.exit_code
