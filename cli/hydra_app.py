"""`python -m trainer`: the trainer under hydra, alone or under any hydra launcher.

    python -m trainer method=imp +sparsities=[0.5,0.8] schedule.epochs=2
    python -m trainer --config-name cifar10_resnet20 model=resnet56 optimizer.lr=0.1
    python -m trainer --cfg job model=resnet20 data=cifar10        # print the composed config
    python -m trainer -m hydra/launcher=submitit_local method=imp,random +sparsities=[0.5] db=sqlite:///tp.db

The config is hydra's composition of core/conf (presets and config groups). Before anything
runs it is checked by `core.schema.validate_config`, the validator `tp-sweep` uses (messages
that name the key and the allowed values; exit 2), not by hydra structured configs: registering
the schema's dataclasses as the configs' schema would materialise every default into the config,
which would change run ids and hand models options their builders do not take. The dataclasses
are still in hydra's ConfigStore (group `tp_schema`) for anyone who wants to build on them.

The levels are planned exactly as a sweep would plan them (core/levels.py), so they get the
ids `tp-sweep launch` would give them and land in the same folders (`+output_dir=...`, default
tp-runs): a level trained here is never trained again by a sweep on that folder, and vice versa.

Keys that are not part of the run (never hashed, never trained on): `+sparsities`, `+output_dir`,
`+sweep`, and `db` / `db_file` (the store to record the run in; TP_DB_URL works too). With a
store, each run is recorded before it trains, as `tp-sweep launch` would record it, in a sweep
named `+sweep` or after the multirun's folder (orchestrator/control/standalone.py).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, cast

from cli.hydra_argv import prepare_argv, split_options, store_url
from core import schema
from core.atomic import write_json_atomic
from core.config import CONF_DIR, ConfigError
from core.errors import Failure
from core.layout import LevelDir, job_description
from core.levels import LineageError, content_hash, plan_levels, run_id
from core.method_lookup import get_method
from core.schema import validate_config

DEFAULT_PRESET = "digits_mlp"


@dataclass
class StandaloneOptions:
    """`db=URL` / `db_file=PATH` without hydra's `+`: added to every composition (+tp=standalone)."""

    db: Optional[str] = None
    db_file: Optional[str] = None


# What `--help` says about the run's own keys (cli/hydra_argv.py's HYDRA_ONLY), a line each.
RUN_KEYS = (
    ("+sparsities=[0.5,0.8]", "the target sparsities to train (default [0]: the dense level only)"),
    ("+output_dir=PATH", "where the level folders go (default tp-runs); finished levels there are reused"),
    ("+sweep=NAME", "the sweep a store records the run in (default hydra-FOLDER, the multirun's folder)"),
    ("+reuse=any", "reuse levels trained by other code too (default same-code, as a spec's reuse:)"),
    ("db=URL, db_file=PATH", "the store to record the run in (or TP_DB_URL); no password in db="),
)


def help_template() -> str:
    """hydra's `--help` page for our config dir: the groups a run composes and the run's own keys,
    without the internal groups (tp, tp_schema) that $APP_CONFIG_GROUPS would list."""
    from core.config import group_options, groups  # YAML (0.015 s): only for --help

    width = max(len(k) for k, _ in RUN_KEYS)
    return "\n".join(
        [
            "${hydra.help.header}",
            "== Configuration groups ==",
            "Compose your configuration from those groups (group=option)",
            "",
            *(f"{g}: {', '.join(group_options(g))}" for g in groups()),
            "",
            "== Run options ==",
            "Not part of the config: never hashed, never trained on",
            "",
            *(f"{k.ljust(width)}  {what}" for k, what in RUN_KEYS),
            "",
            "== Config ==",
            "Override anything in the config (foo.bar=value)",
            "",
            "$CONFIG",
            "${hydra.help.footer}",
        ]
    )


def _register() -> None:
    from hydra.core.config_store import ConfigStore  # hydra (0.3 s)

    cs = ConfigStore.instance()
    cs.store(
        group="hydra/help",
        name="trainer",
        node={
            "app_name": "python -m trainer",
            "header": "${hydra.help.app_name}: train one run's pruning levels, as a sweep would plan them.\n",
            "footer": "Powered by Hydra (https://hydra.cc)\nUse --hydra-help to view Hydra specific help\n",
            "template": help_template(),
        },
    )
    cs.store(group="tp", name="standalone", node=StandaloneOptions, package="_global_")
    cs.store(group="tp_schema", name="trainer", node=schema.TrainerConfig)
    for section, cls in (
        ("model", schema.ModelConfig),
        ("data", schema.DataConfig),
        ("optimizer", schema.OptimizerConfig),
        ("schedule", schema.ScheduleConfig),
        ("prune", schema.PruneConfig),
        ("train", schema.TrainConfig),
        ("logging", schema.LoggingConfig),
    ):
        cs.store(group="tp_schema", name=section, node=cls)


# ---- level folders and the job file -----------------------------------------------------------
def write_job(
    config: dict,
    sparsities: list[float],
    output_dir: Path,
    write: bool = True,
    sweep: str | None = None,
    reuse: str = "same-code",
) -> Path:
    """Level folders and one job file for every level the run needs (written by rank 0 only;
    planning is pure, so every rank knows the job file's path). Under reuse same-code the levels
    hold the code this process runs, as a sweep launched from this checkout would plan them."""
    from core.code import code_identity  # code identity: hashes the trainer's files (0.1 s cold)

    if get_method(config["method"]).schedule == "dense":
        sparsities = [0.0]
    code = code_identity() if reuse == "same-code" else None
    lineage = plan_levels(config["method"], config, sparsities, code)
    levels_dir = (output_dir / "levels").resolve()
    snapshots: dict[str, list] = {}
    for lv in lineage.levels:
        d = LevelDir(levels_dir / lv.level_id)
        if write and not d.description.exists():
            write_json_atomic(d.description, lv.description())
        if lv.step and lv.step.get("rewind") == "step":
            snapshots.setdefault(lv.root, [])
            if lv.step["rewind_to"] not in snapshots[lv.root]:
                snapshots[lv.root].append(lv.step["rewind_to"])
    ids = [lv.level_id for lv in lineage.trained]  # mask-only levels: computed on the way
    job_id = content_hash({"levels": ids})
    path = output_dir.resolve() / "jobs" / f"{job_id}.json"
    if not write:
        return path
    run = {
        "sweep": sweep,
        "method": config["method"],
        "seed": config["seed"],
        "axes": {},
        "levels": ids,
        "serves": {lv.level_id: [s] for s, lv in lineage.serving.items()},
        "logging": config.get("logging") or {},
        "config": config,
    }
    write_json_atomic(
        path, job_description(job_id, str(levels_dir), ids, snapshots, {run_id(config, lineage.codes): run}, reuse)
    )
    for s, lv in sorted(lineage.serving.items()):
        print(
            f"[trainer] sparsity {s:g}: level {lv.level_id} ({lv.kind}, depth {lv.depth}) in "
            f"{levels_dir / lv.level_id}",
            flush=True,
        )
    return path


def finished_levels(job_file: Path) -> set[str]:
    """The job's levels already finished on disk (their metrics.json written last)."""
    job = json.loads(job_file.read_text())
    levels_dir = Path(job["levels_dir"])
    return {lid for lid in job["levels"] if LevelDir(levels_dir / lid).metrics.exists()}


def summary_line(job_file: Path, reused: set[str], sweep: str | None) -> str:
    """What a run did, in one line: levels trained and reused, each target's accuracy, and where
    the results are (the level folders, and the store's sweep when there is one)."""
    job = json.loads(job_file.read_text())
    levels_dir = Path(job["levels_dir"])
    trained = sum(1 for lid in job["levels"] if lid not in reused)
    served = sorted((s, lid) for run in job["runs"].values() for lid, ss in run["serves"].items() for s in ss)
    results = []
    for s, lid in served:
        try:
            acc = json.loads(LevelDir(levels_dir / lid).metrics.read_text()).get("test_acc")
        except (OSError, ValueError):
            acc = None
        results.append(f"sparsity {s:g} test_acc {'-' if acc is None else f'{100 * acc:.2f} %'} ({lid})")
    where = f"results in {levels_dir}/LEVEL/metrics.json" + (f" and tp-sweep query {sweep}" if sweep else "")
    return (
        f"[trainer] done: {trained} level{'s' * (trained != 1)} trained, {len(reused)} reused "
        f"(finished before this run); {', '.join(results)}; {where}"
    )


# ---- the task hydra runs (once, or once per multirun job) --------------------------------------
class RunFailed(Failure, RuntimeError):
    """A multirun job that failed: raised, so the launcher reports it and the other jobs go on."""


def _fail(code: int, message: str, multirun: bool) -> None:
    if multirun:
        raise RunFailed(message)
    print(message, file=sys.stderr)
    sys.exit(code)


def _where_it_runs() -> tuple[str, str]:
    """(executor kind, scheduler id) as `tp-sweep status` polls them: the Slurm job (submitit_slurm,
    or srun inside an allocation), else a local process id: submitit_local's job (the id of its
    .submitit/ folder), or this process."""
    from trainer.job import job_id_from_env  # torch (seconds)

    sched = job_id_from_env()
    if sched and os.environ.get("SLURM_JOB_ID"):
        return "slurm", sched
    return "local", os.environ.get("SUBMITIT_LOCAL_JOB_ID") or str(os.getpid())


def default_sweep_name(hc: Any, output_dir: str) -> str:
    from hydra.types import RunMode  # hydra (0.3 s)

    folder = hc.sweep.dir if hc.mode == RunMode.MULTIRUN else output_dir
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(str(folder)).resolve().name) or "run"
    return f"hydra-{name}"[:128]


def task(cfg: Any) -> int:
    """Validate, plan the levels, record them in the store when there is one, train."""
    from hydra.core.hydra_config import HydraConfig  # hydra (0.3 s)
    from hydra.types import RunMode  # hydra (0.3 s)
    from omegaconf import OmegaConf  # hydra (0.3 s)

    from trainer.job import main as job_main  # torch (seconds)

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:  # the same check a sweep gets, before any folder or training
        config, opts = split_options(cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)))
        validate_config(config)
        url = store_url(opts)
    except ConfigError as exc:
        _fail(2, f"error: {exc}", multirun)
    output_dir = Path(opts["output_dir"])
    sweep = opts["sweep"] or default_sweep_name(hc, opts["output_dir"])
    main_rank = int(os.environ.get("RANK", "0")) == 0
    try:  # a run that cannot be planned (imp_reinit at sparsity 0, too many levels) is bad input
        job_file = write_job(
            config,
            opts["sparsities"],
            output_dir,
            write=main_rank,
            sweep=sweep if url else None,
            reuse=opts["reuse"],
        )
    except LineageError as exc:
        _fail(2, f"error: {exc}", multirun)
    db_args: list[str] = []
    if url and main_rank:
        # Only with a store: the trainer alone imports no orchestrator/ (nor SQLAlchemy, 0.3 s).
        from orchestrator.operations.hydra_run import HydraRun, record_hydra_run  # only with a store
        from orchestrator.operations.stores import StoreNotOpened  # only with a store

        executor, sched_id = _where_it_runs()
        run = HydraRun(
            url,
            sweep,
            hc.job.config_name,
            config,
            opts["sparsities"],
            str(output_dir),
            job_file,
            executor,
            sched_id,
            opts["reuse"],
        )
        try:
            db_file = record_hydra_run(run)
        except StoreNotOpened as exc:
            _fail(2, f"error: {exc}", multirun)
        print(f"[trainer] recorded in sweep {sweep} ({executor} {sched_id})", flush=True)
        db_args = ["--db-file", db_file]
    while not job_file.exists():  # the other ranks wait for rank 0's files
        time.sleep(0.1)
    reused = finished_levels(job_file) if main_rank else set()
    status = job_main([str(job_file), *db_args])
    if status:
        _fail(status, f"error: job {job_file.stem} ended with status {status}", multirun)
    if main_rank:
        print(summary_line(job_file, reused, sweep if url else None), flush=True)
    return 0


# ---- the command line --------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    import hydra  # hydra (0.3 s)

    _register()
    try:
        args = prepare_argv(list(sys.argv[1:] if argv is None else argv))
    except ConfigError as exc:  # bad input: nothing composed, written or submitted
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *args]  # hydra.main reads sys.argv
    hydra.main(config_path=str(CONF_DIR), config_name=DEFAULT_PRESET, version_base="1.3")(task)()
