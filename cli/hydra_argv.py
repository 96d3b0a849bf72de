"""What `python -m trainer` checks and adds before hydra sees the command line.

Bad input exits 2 before anything is composed, written or submitted, as `tp-sweep launch` does:
an unknown group option (`model=resnet7`: hydra's own error would exit 1 after a multirun's
sweep folder exists), a store password on the command line (hydra would save it in
multirun.yaml, and the submitit launcher in its pickles), and, for a multirun, every job's config:
each combination is composed with hydra's compose API and checked by the schema before the
launcher submits anything. The store is opened (and migrated) once here, so the jobs of a
multirun do not race to create it and an unreachable store is reported before any job starts.

Hydra-native flags keep their meaning (`--cfg job`, `--info`, `-m`, `--config-name`, `--help`);
what we add only keeps hydra out of the way: no outputs/DATE/TIME folders or .hydra/ copies
(the level folders are the record), and a multirun folder whose name can name the sweep.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, cast

from core.config import CONF_DIR, ConfigError, group_options, groups
from core.schema import validate_config

# Added unless the command line sets the same key. hydra.run.dir and hydra_logging only for
# single runs: a multirun's launcher logs where its jobs went, which hydra users look for.
_ALWAYS = ["+tp=standalone", "hydra.job.name=trainer", "hydra.output_subdir=null", "hydra/job_logging=disabled"]
_SINGLE = ["hydra.run.dir=.", "hydra/hydra_logging=disabled"]
_MULTI = ["hydra.sweep.dir=multirun/${now:%Y-%m-%d_%H-%M-%S}"]
# Hydra-only keys: what a run needs besides its config. Stripped before hashing or training.
HYDRA_ONLY = ("sparsities", "output_dir", "sweep", "db", "db_file", "reuse")
_SWEEP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


# ---- the run's own options ---------------------------------------------------------------------
def split_options(composed: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the run's config, the hydra-only options), the options checked."""
    config = dict(composed)
    opts = {k: config.pop(k, None) for k in HYDRA_ONLY}
    sparsities = opts["sparsities"]
    if sparsities is None:
        sparsities = [0.0]
    if not isinstance(sparsities, list) or not sparsities:
        raise ConfigError(f"sparsities: {sparsities!r} is not a list of sparsities, e.g. [0.5,0.8]")
    for s in sparsities:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s < 1.0:
            raise ConfigError(f"sparsities: {s!r} is not a sparsity in [0, 1)")
    opts["sparsities"] = [float(s) for s in sparsities]
    opts["output_dir"] = os.path.expanduser(str(opts["output_dir"] or "tp-runs"))
    if opts["sweep"] is not None and (
        not _SWEEP_NAME.fullmatch(str(opts["sweep"])) or len(str(opts["sweep"])) > 128
    ):
        raise ConfigError(
            f"sweep: {opts['sweep']!r} must start with a letter, digit or _ and use only "
            "letters, digits, _ . and - (at most 128)"
        )
    if opts["db"]:
        refuse_password(str(opts["db"]))
    opts["reuse"] = opts["reuse"] or "same-code"
    if opts["reuse"] not in ("same-code", "any"):
        raise ConfigError(f"reuse: {opts['reuse']!r} is not one of same-code, any")
    return config, opts


def refuse_password(url: str) -> None:
    from sqlalchemy.engine import make_url  # SQLAlchemy (0.3 s)

    try:
        password = make_url(url).password
    except Exception:  # noqa: BLE001 - an unparsable URL: the store reports it
        return
    if password:
        raise ConfigError(
            "db: a password on the command line would be saved in hydra's "
            "multirun.yaml and in submitit's pickles; set TP_DB_URL, or put the URL in "
            "a file only you can read and pass db_file=PATH"
        )


def store_url(opts: dict[str, Any]) -> str | None:
    """db=, else the file db_file= names, else TP_DB_URL; a relative SQLite path made absolute."""
    url = opts["db"]
    if not url and opts["db_file"]:
        try:
            url = Path(os.path.expanduser(opts["db_file"])).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"db_file: cannot read {opts['db_file']}: {exc.strerror or exc}") from None
    url = url or os.environ.get("TP_DB_URL")
    if not url:
        return None
    from db.engine import resolve_url  # SQLAlchemy, 0.3 s

    return resolve_url(url)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def prepare_argv(argv: list[str]) -> list[str]:
    """Check the command line; return it as hydra should see it: flags first, then the user's
    overrides, then ours. (Appending to the raw command line breaks `--info`, whose optional value
    would swallow the first override we add, and argparse takes one run of overrides only.)"""
    from hydra._internal.utils import get_args_parser  # hydra (0.3 s)
    from hydra.core.override_parser.overrides_parser import OverridesParser  # hydra (0.3 s)
    from hydra.errors import HydraException  # hydra (0.3 s)

    args = get_args_parser().parse_args(argv)  # argparse: a bad flag exits 2 with usage
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except HydraException as exc:
        raise ConfigError(str(exc).strip()) from None
    given = {o.key_or_group for o in overrides}
    own_conf = args.config_path is None and args.config_dir is None
    for o in overrides:
        if o.key_or_group == "db" and not o.is_delete():
            for url in _values(o):
                refuse_password(url)
        if own_conf and o.key_or_group in groups() and o.package is None and not o.is_delete():
            options = group_options(o.key_or_group)
            for value in _values(o):
                if value not in options:
                    raise ConfigError(f"{o.key_or_group}: unknown option {value!r}; options: {', '.join(options)}")
    extra = _ALWAYS + (["hydra/help=trainer"] if own_conf else []) + (_MULTI if args.multirun else _SINGLE)
    extra = [e for e in extra if _key(e) not in given]
    only_shows = args.cfg or args.info or args.help or args.hydra_help or args.shell_completion
    if args.multirun and own_conf and not only_shows and "hydra/sweeper" not in given:
        _check_jobs(
            args.config_name or "digits_mlp", overrides, [e for e in extra if not _key(e).startswith("hydra")]
        )
    return [*_flags(args), *args.overrides, *extra]


def _flags(args: Any) -> list[str]:
    """hydra's flags back from its parsed arguments (get_args_parser's, one for one)."""
    out = [
        flag
        for flag, on in (
            ("--help", args.help),
            ("--hydra-help", args.hydra_help),
            ("--resolve", args.resolve),
            ("--run", args.run),
            ("--multirun", args.multirun),
            ("--shell-completion", args.shell_completion),
        )
        if on
    ]
    for flag, value in (
        ("--cfg", args.cfg),
        ("--package", args.package),
        ("--config-path", args.config_path),
        ("--config-name", args.config_name),
        ("--config-dir", args.config_dir),
        ("--experimental-rerun", args.experimental_rerun),
        ("--info", args.info),
    ):
        if value is not None:
            out += [flag, value]
    return out


def _values(o: Any) -> list[str]:
    """The option names an override picks: one, or each of a choice sweep (`model=mlp,lenet`)."""
    if o.is_sweep_override():
        try:
            values = list(o.sweep_iterator())
        except Exception:  # noqa: BLE001 - range()/interval()/glob(): hydra reports those itself
            return []
    else:
        values = [o.value()]
    return [str(v) for v in values if v is not None]  # null: a deleted default, hydra's business


def _check_jobs(preset: str, overrides: list[Any], extra: list[str]) -> None:
    """Compose every job of a basic-sweeper multirun as hydra will, and check each config."""
    from hydra import compose, initialize_config_dir  # hydra (0.3 s)
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # hydra (0.3 s)
    from hydra.errors import HydraException  # hydra (0.3 s)
    from omegaconf import OmegaConf  # hydra (0.3 s)
    from omegaconf.errors import OmegaConfBaseException  # hydra (0.3 s)

    task_overrides = [o for o in overrides if not o.key_or_group.startswith("hydra")]
    try:
        (jobs,) = BasicSweeper.split_arguments(task_overrides, None)
    except HydraException:
        return  # a sweep type the basic sweeper refuses: it says so itself
    urls = set()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="tp_check"):
        for i, job in enumerate(jobs):
            try:
                cfg = compose(config_name=preset, overrides=[*job, *extra])
                config, opts = split_options(cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)))
                validate_config(config)
                urls.add(store_url(opts))
            except (HydraException, OmegaConfBaseException, ConfigError) as exc:
                text = " ".join(str(exc).split("\nConfig search path")[0].split())
                raise ConfigError(f"job #{i} ({' '.join(job)}): {text}") from None
    for url in [u for u in urls if u is not None]:
        from orchestrator.operations.hydra_run import check_store  # the store: SQLAlchemy, 0.3 s
        from orchestrator.operations.stores import StoreNotOpened  # only with a store: with check_store

        try:
            check_store(url)  # reachable, and migrated once before the jobs start
        except StoreNotOpened as exc:
            raise ConfigError(str(exc)) from None
