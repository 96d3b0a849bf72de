"""Checks that need the trainer's registries (and so torch): run at launch, before anything is
recorded or submitted. `launch --dry-run` skips them to answer in about a second."""
from __future__ import annotations

from orchestrator.plan import SweepPlan


class PreflightError(ValueError):
    pass


def check_plan(plan: SweepPlan) -> None:
    from trainer.data import DATASETS
    from trainer.models import MODELS
    from trainer.optim import OPTIMIZERS, SCHEDULES

    problems: list[str] = []
    seen: set[str] = set()
    for run in plan.runs:
        cfg = run.config
        checks = [
            (cfg["model"].get("name") in MODELS,
             f"model.name: unknown model {cfg['model'].get('name')!r}; known: {', '.join(sorted(MODELS))}"),
            (cfg["data"].get("name") in DATASETS,
             f"data.name: unknown data set {cfg['data'].get('name')!r}; known: {', '.join(sorted(DATASETS))}"),
            (cfg["optimizer"].get("name") in OPTIMIZERS,
             f"optimizer.name: unknown optimizer {cfg['optimizer'].get('name')!r}; known: {', '.join(OPTIMIZERS)}"),
            (cfg["schedule"].get("name") in SCHEDULES,
             f"schedule.name: unknown schedule {cfg['schedule'].get('name')!r}; known: {', '.join(sorted(SCHEDULES))}"),
            (int(cfg["schedule"].get("epochs", 0)) >= 1, "schedule.epochs: must be at least 1"),
            (run.method != "snip" or int(cfg["prune"].get("snip_batches", 0)) >= 1,
             "prune.snip_batches: snip scores weights on data and needs at least 1 batch"),
            (run.method != "synflow" or int(cfg["prune"].get("synflow_rounds", 0)) >= 1,
             "prune.synflow_rounds: must be at least 1"),
            (run.method != "imp_wr" or cfg["prune"].get("rewind_iterations") is not None
             or float(cfg["prune"].get("rewind_epochs", 0)) < float(cfg["schedule"]["epochs"]),
             f"prune.rewind_epochs: imp_wr rewinds to a point inside training; "
             f"{cfg['prune'].get('rewind_epochs')} is not less than schedule.epochs "
             f"{cfg['schedule']['epochs']}"),
        ]
        for ok, msg in checks:
            if not ok and msg not in seen:
                seen.add(msg)
                problems.append(msg)
    if problems:
        raise PreflightError("; ".join(problems))
