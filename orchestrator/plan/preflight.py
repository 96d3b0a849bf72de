"""Checks that need the trainer's registries (and so torch): run at launch, before anything is
recorded or submitted. `launch --dry-run` skips them to answer in about a second."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from orchestrator.plan.grid import SweepPlan


class PreflightError(ValueError):
    pass


def _sources_key() -> str:
    """What the registries are made of: the trainer's model, data and optimizer modules."""
    import hashlib

    root = Path(__file__).resolve().parents[2] / "trainer"
    files = sorted([*root.glob("models/*.py"), *root.glob("data/*.py"), root / "optim.py"])
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def registries() -> dict[str, Any]:
    """The names the trainer knows (models with their builders' options, data sets, optimizers,
    schedules). Importing them costs torch (2 s idle, several on a busy login node), so they are
    kept in a cache file keyed by the trainer's source files: `launch` answers in a second or two
    once any launch on this machine imported them."""
    import json
    import os

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "turboprune" / f"registries-{_sources_key()}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    from trainer.data import DATASETS  # torch (seconds)
    from trainer.models import MODELS  # torch (seconds)
    from trainer.optim import OPTIMIZERS, SCHEDULES  # torch (seconds)

    models: dict[str, Any] = {}
    for name, build in MODELS.items():
        params = inspect.signature(build).parameters
        models[name] = (
            None if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) else list(params)
        )
    reg = {
        "models": models,
        "datasets": sorted(DATASETS),
        "optimizers": list(OPTIMIZERS),
        "schedules": sorted(SCHEDULES),
    }
    try:
        from core.atomic import write_json_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, reg)
    except OSError:
        pass  # a read-only home: no cache, the check still holds
    return reg


def check_plan(plan: SweepPlan) -> None:
    reg = registries()
    MODELS, DATASETS = reg["models"], reg["datasets"]  # noqa: N806 - the registries' names
    OPTIMIZERS, SCHEDULES = reg["optimizers"], reg["schedules"]  # noqa: N806

    problems: list[str] = []
    seen: set[str] = set()
    for run in plan.runs:
        cfg = run.config
        checks = [
            (
                cfg["model"].get("name") in MODELS,
                f"model.name: unknown model {cfg['model'].get('name')!r}; known: {', '.join(sorted(MODELS))}",
            ),
            (
                cfg["data"].get("name") in DATASETS,
                f"data.name: unknown data set {cfg['data'].get('name')!r}; known: {', '.join(sorted(DATASETS))}",
            ),
            (
                cfg["optimizer"].get("name") in OPTIMIZERS,
                f"optimizer.name: unknown optimizer {cfg['optimizer'].get('name')!r}; "
                f"known: {', '.join(OPTIMIZERS)}",
            ),
            (
                cfg["schedule"].get("name") in SCHEDULES,
                f"schedule.name: unknown schedule {cfg['schedule'].get('name')!r}; "
                f"known: {', '.join(sorted(SCHEDULES))}",
            ),
            (int(cfg["schedule"].get("epochs", 0)) >= 1, "schedule.epochs: must be at least 1"),
            (
                run.method != "snip" or int(cfg["prune"].get("snip_batches", 0)) >= 1,
                "prune.snip_batches: snip scores weights on data and needs at least 1 batch",
            ),
            (
                run.method != "synflow" or int(cfg["prune"].get("synflow_rounds", 0)) >= 1,
                "prune.synflow_rounds: must be at least 1",
            ),
            (
                run.method != "imp_wr"
                or cfg["prune"].get("rewind_iterations") is not None
                or float(cfg["prune"].get("rewind_epochs", 0)) < float(cfg["schedule"]["epochs"]),
                f"prune.rewind_epochs: imp_wr rewinds to a point inside training; "
                f"{cfg['prune'].get('rewind_epochs')} is not less than schedule.epochs "
                f"{cfg['schedule']['epochs']}",
            ),
        ]
        checks += _model_option_checks(cfg["model"], MODELS)
        for ok, msg in checks:
            if not ok and msg not in seen:
                seen.add(msg)
                problems.append(msg)
    if problems:
        raise PreflightError("; ".join(problems))


def _model_option_checks(model: dict[str, Any], models: dict[str, list[str] | None]) -> list[tuple[bool, str]]:
    """Options in the model section that its builder does not take (model.hidden on a resnet):
    build_model would pass them as keyword arguments and fail in the job. `models`: each
    builder's parameters, None when it takes any keyword."""
    name = model.get("name")
    if name not in models:
        return []  # the unknown name is reported on its own
    params = models[name]
    if params is None:
        return []
    takes = [p for p in params if p not in ("num_classes", "input_shape")]
    return [
        (
            key in params,
            f"model.{key}: model {model['name']!r} does not take it; "
            f"its options: {', '.join(takes) or 'none'} (remove the key)",
        )
        for key in model
        if key != "name"
    ]
