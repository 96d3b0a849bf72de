"""Checks that need the trainer's registries (and so torch): run at launch, before anything is
recorded or submitted. `launch --dry-run` skips them to answer in about a second, all but the
names of zoo models (`torchvision/<arch>`, `timm/<name>`), which it checks against the cached
list of the library's models (`check_zoo_names`)."""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

from core.atomic import write_json_atomic
from core.errors import UserError
from core.plugins import PluginError, is_ref
from core.zoo import ZOOS, split
from orchestrator.plan.grid import SweepPlan


class PreflightError(UserError, ValueError):
    pass


def _sources_key() -> str:
    """What the registries are made of: the trainer's model, data and optimizer modules."""
    root = Path(__file__).resolve().parents[2] / "trainer"
    files = sorted([*root.glob("models/*.py"), *root.glob("data/*.py"), root / "optim.py"])
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "turboprune"


def _read_cache(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_cache(path: Path, obj: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, obj)
    except OSError:
        pass  # a read-only home: no cache, the check still holds


def registries() -> dict[str, Any]:
    """The names the trainer knows (models with their builders' options, data sets, optimizers,
    schedules). Importing them costs torch (2 s idle, several on a busy login node), so they are
    kept in a cache file keyed by the trainer's source files: `launch` answers in a second or two
    once any launch on this machine imported them."""
    path = _cache_dir() / f"registries-{_sources_key()}.json"
    cached = _read_cache(path)
    if isinstance(cached, dict):
        return cached
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
    _write_cache(path, reg)
    return reg


# ---- model zoos --------------------------------------------------------------------------------
def zoo_version(zoo: str) -> str | None:
    """The installed version of the zoo's library (its metadata: no import), None if absent."""
    from importlib import metadata  # importlib.metadata (a few ms): only for a cold cache

    try:
        return metadata.version(ZOOS[zoo])
    except metadata.PackageNotFoundError:
        return None


def zoo_names(zoo: str, version: str) -> list[str]:
    """Every model name of the zoo's library at `version`. Listing them imports the library (torch
    and timm: seconds), so the list is kept beside the registries, keyed by the library's version:
    built by the first launch (or --dry-run) that names a model of that zoo, read afterwards."""
    path = _cache_dir() / f"zoo-{zoo}-{version}.json"
    cached = _read_cache(path)
    if isinstance(cached, dict) and isinstance(cached.get("names"), list):
        return cached["names"]
    from trainer.models.zoo import names  # torch (seconds), once per library version

    listed = names(zoo)
    _write_cache(path, {"zoo": zoo, "version": version, "names": listed})
    return listed


def zoo_name_problem(name: str) -> str | None:
    """What is wrong with a zoo model's name (`torchvision/resnet19`: unknown, with the closest
    names), None when its library lists it or when `name` is not a zoo name."""
    parts = split(name)
    if parts is None:
        return None
    zoo, arch = parts
    version = zoo_version(zoo)
    if version is None:
        return f"model.name: {name!r} needs {ZOOS[zoo]}, which is not installed"
    known = zoo_names(zoo, version)
    if arch in known:
        return None
    close = difflib.get_close_matches(arch, known, n=5, cutoff=0.6)
    hint = f"; closest: {', '.join(f'{zoo}/{c}' for c in close)}" if close else ""
    return f"model.name: {zoo} {version} has no model {arch!r}{hint}"


def check_zoo_names(plan: SweepPlan) -> None:
    """The zoo model names of the plan's runs, against the cached lists (torch-free once cached)."""
    problems = dict.fromkeys(
        p for p in (zoo_name_problem(str(r.config["model"].get("name"))) for r in plan.runs) if p
    )
    if problems:
        raise PreflightError("; ".join(problems))


def input_shapes(data: dict[str, Any]) -> list[tuple[int, int, int]] | None:
    """The (C, H, W) inputs the data set gives a model, the one it is built for first (the test
    shape, as the loaders' input_shape), then the training ones; None when only the data files
    know (a beton of the cifar recipe, an unknown data set). Mirrors trainer/data."""
    name = data.get("name")
    if name == "digits":
        return [(1, 8, 8)]
    if name in ("synthetic", "synthetic_gpu"):
        c, h, w = (int(x) for x in data.get("shape", (3, 8, 8)))
        return [(c, h, w)]
    if name in ("cifar10", "cifar100"):
        return [(3, 32, 32)]
    if name in ("imagenet", "beton", "imagefolder") and not (name == "beton" and data.get("recipe") == "cifar"):
        res = int(data.get("resolution", 224))
        val = int(data.get("val_resolution") or res)
        train = {res}
        if name != "imagefolder" and data.get("min_res"):
            train = {int(data["min_res"]), int(data.get("max_res") or res)}
        return [(3, val, val)] + [(3, r, r) for r in sorted(train) if r != val]
    return None


def zoo_fit_problem(name: str, shapes: list[tuple[int, int, int]]) -> str | None:
    """Why a zoo model cannot take these input shapes (trainer/models/zoo.py `fits`: built on the
    meta device), None when it can. The answer depends on the library's version and on the
    trainer's model code, and is cached under both, so a launch after the first stays torch-free."""
    parts = split(name)
    if parts is None:
        return None
    key = f"{name}@{zoo_version(parts[0])}:" + ",".join("x".join(map(str, s)) for s in shapes)
    path = _cache_dir() / f"zoo-fits-{_sources_key()}.json"
    cached = _read_cache(path)
    cached = cached if isinstance(cached, dict) else {}
    if key in cached:
        return cached[key]
    from trainer.models.zoo import fits  # torch (seconds)

    problem = fits(name, shapes)
    _write_cache(path, {**(_read_cache(path) or {}), key: problem})
    return problem


def check_plan(plan: SweepPlan) -> None:
    reg = registries()
    MODELS, DATASETS = reg["models"], reg["datasets"]  # noqa: N806 - the registries' names
    OPTIMIZERS, SCHEDULES = reg["optimizers"], reg["schedules"]  # noqa: N806

    problems: list[str] = []
    seen: set[str] = set()
    zoo_memo: dict[str, Any] = {}
    data_seen: dict[str, str | None] = {}
    for run in plan.runs:
        cfg = run.config
        model_name = cfg["model"].get("name")
        zoo_checks = _zoo_checks(model_name, cfg["data"], zoo_memo)
        checks = zoo_checks or [
            (
                model_name in MODELS or is_ref(model_name),
                f"model.name: unknown model {model_name!r}; known: {', '.join(sorted(MODELS))}, "
                "or torchvision/<arch>, timm/<name>",
            )
        ]
        checks += [
            (
                cfg["data"].get("name") in DATASETS or is_ref(cfg["data"].get("name")),
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
        checks += _device_data_checks(cfg["data"], data_seen)
        for ok, msg in checks:
            if not ok and msg not in seen:
                seen.add(msg)
                problems.append(msg)
    problems += [p for p in plugin_problems(plan) if p not in seen]
    if problems:
        raise PreflightError("; ".join(problems))


def plugin_problems(plan: SweepPlan) -> list[str]:
    """A lab's criteria, models and data sets (import paths, core/plugins.py), imported once each
    to check that they exist and take the arguments the trainer gives them (inspect.signature):
    an import error, a missing callable or a wrong signature stops the launch (exit 2) rather
    than a job. Their results (shapes, NaN scores, masks off target) are the trainer's to check."""
    from core.plugins import check_call, load  # imports the lab's modules: torch (seconds)

    wanted: dict[tuple[str, ...], Any] = {}
    for lv in plan.levels.values():
        step = lv.step or {}
        block = step.get("plugin")
        if isinstance(block, dict):
            wanted.setdefault(("criterion", str(block["fn"])), (str(step["criterion"]), block["returns"]))
    for run in plan.runs:
        model, data = run.config["model"], run.config["data"]
        if is_ref(model.get("name")):
            opts = {k: v for k, v in model.items() if k != "name"}
            wanted.setdefault(("model", str(model["name"])) + tuple(sorted(map(str, opts))), opts)
        if is_ref(data.get("name")):
            from trainer.data.plugin import options  # torch (seconds)

            opts = options(data)
            wanted.setdefault(("data", str(data["name"])) + tuple(sorted(map(str, opts))), opts)
    out: list[str] = []
    for key, extra in wanted.items():
        kind, ref = key[0], key[1]
        try:
            if kind == "criterion":
                name, returns = extra
                what = f"pruning method {name!r}: {returns} function"
                check_call(load(ref, what), ref, what, (None, None), {}, "(model, ctx)")
            elif kind == "model":
                kwargs = {"num_classes": 2, "input_shape": (1, 1, 1), **extra}
                shown = ", ".join(["num_classes", "input_shape", *extra])
                check_call(load(ref, "model"), ref, "model", (), kwargs, f"keyword arguments {shown}")
            else:
                shown = ", ".join(extra) or "no arguments"
                check_call(load(ref, "data set"), ref, "data set", (), extra, f"the spec's data options ({shown})")
        except PluginError as exc:
            if str(exc) not in out:
                out.append(str(exc))
    return out


def _zoo_checks(name: Any, data: dict[str, Any], memo: dict[str, Any]) -> list[tuple[bool, str]]:
    """A zoo model's name, and whether it takes the data set's inputs; [] for a built-in name.
    `memo`: answers already given in this check (a grid repeats the same few)."""
    if not isinstance(name, str) or split(name) is None:
        return []
    shapes = input_shapes(data)
    key = f"{name}|{shapes}"
    if key not in memo:
        problem = zoo_name_problem(name)
        if problem is None and shapes is not None:
            fit = zoo_fit_problem(name, shapes)
            if fit is not None:
                problem = (
                    f"model.name: {name!r} {fit} (data {data.get('name')!r}); "
                    "see docs/extending.md, 'Models by name', for the models that adapt to small inputs"
                )
        memo[key] = problem
    return [(memo[key] is None, memo[key] or "")]


def _device_data_checks(data: dict[str, Any], seen: dict[str, str | None]) -> list[tuple[bool, str]]:
    """data.loader device reads its files in the job, all at once: read them here first, so a
    truncated archive, a missing batch or a foreign pickle stops the launch (exit 2) naming the
    file, not a job later. The archive is read whole (a second or two for CIFAR's 170 MB), once
    per path; betons get their header and table checked (FFCV decodes them in the job)."""
    if data.get("loader") != "device":
        return []
    from trainer.data import DataError  # torch, already imported by registries() on a cold cache
    from trainer.data.beton_file import check_beton  # torch, through trainer.data (seconds)
    from trainer.data.cifar_files import read_cifar  # torch (seconds)

    out = []
    keys = ["root"] if data.get("root") else ["train_path", "val_path"]
    paths = [(k, data.get(k)) for k in keys]
    for key, path in paths:
        if not path:
            out.append((False, f"data.{key}: the device loader needs data.root (a CIFAR archive) or both betons"))
            continue
        if path not in seen:
            try:
                read_cifar(path, data["name"]) if key == "root" else check_beton(path)
                seen[path] = None
            except DataError as exc:
                seen[path] = f"data.{key}: {exc}"
        problem = seen[path]
        if problem is not None:
            out.append((False, problem))
    return out


def _model_option_checks(model: dict[str, Any], models: dict[str, list[str] | None]) -> list[tuple[bool, str]]:
    """Options in the model section that its builder does not take (model.hidden on a resnet):
    build_model would pass them as keyword arguments and fail in the job. `models`: each
    builder's parameters, None when it takes any keyword."""
    name = model.get("name")
    if isinstance(name, str) and split(name):
        params: list[str] | None = ["num_classes", "input_shape"]  # zoo models take no options
    elif name not in models:
        return []  # the unknown name is reported on its own
    else:
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
