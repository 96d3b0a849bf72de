"""The tests' in-process stand-ins for `tp-sweep` commands whose CLI is not the point: launch,
resume, dry run, status and query through orchestrator/operations, with the store found from a
test's folder as the CLI finds it from its cwd (tests of the CLI itself run it: sweeputil.tp)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import yaml

if TYPE_CHECKING:
    from db.reader import StoreReader
    from db.store import Store
    from orchestrator.operations.launch import Launched
    from orchestrator.operations.resume import Resumed
    from orchestrator.operations.status import RunStatus, SweepStatus


def store_url(cwd: Path, db: str | None = None, env: dict[str, str] | None = None) -> str:
    """The store `tp-sweep` run in `cwd` under `env` opens: --db, TP_DB_URL, else tp-results.db;
    a relative SQLite path is taken from `cwd` (as the CLI takes it from its own), never by chdir."""
    from sqlalchemy.engine import make_url  # SQLAlchemy (0.3 s): not for every test

    url = db or (env or {}).get("TP_DB_URL") or os.environ.get("TP_DB_URL") or "sqlite:///tp-results.db"
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return url
    path = Path(os.path.expanduser(parsed.database))
    return parsed.set(database=str(path if path.is_absolute() else cwd / path)).render_as_string(
        hide_password=False
    )


@contextmanager
def reader_at(
    cwd: Path,
    db: str | None = None,
    env: dict[str, str] | None = None,
    target: str | None = None,
    runs: bool = False,
) -> Iterator[StoreReader]:
    """The store a `tp-sweep` command run in `cwd` under `env` reads, open for the block only (its
    engine disposed after: no SQLite file held between polls), with `env` applied meanwhile."""
    from orchestrator.operations.stores import open_reader  # SQLAlchemy (0.3 s): not for every test

    # What a CLI subprocess run with `env` would see (reconcile reads TP_LOST_AFTER_S, squeue
    # SLURM_CONF and PATH), put back after; an xdist worker runs its tests one at a time.
    with mock.patch.dict(os.environ, env or {}):
        store = open_reader(store_url(cwd, db, env), target=target, runs=runs)
        try:
            yield store
        finally:
            store.close()


def status_here(
    target: str, cwd: Path, db: str | None = None, env: dict[str, str] | None = None
) -> SweepStatus | RunStatus:
    """`tp-sweep status TARGET --format json` run in `cwd` under `env`, as the status operation's
    typed result in this process (reconcile included): its `exit_code` is the command's."""
    from orchestrator.operations.status import target_status  # the store's reads: SQLAlchemy

    with reader_at(cwd, db, env, target=target, runs=True) as store:
        return target_status(store, target)


def status_json(sweep: str, cwd: Path, db: str | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """What `tp-sweep status SWEEP --format json` run in `cwd` under `env` prints, parsed:
    status_here through the CLI's own JSON writer."""
    from cli.common import json_text  # orjson, as the CLI writes its JSON

    return json.loads(json_text(status_here(sweep, cwd, db, env).as_json()))


def query_rows(
    sweep: str,
    cwd: Path,
    db: str | None = None,
    env: dict[str, str] | None = None,
    levels: bool = False,
    group_by: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """What `tp-sweep query SWEEP [--levels] [--group-by A,B] --format json` run in `cwd` prints,
    parsed: the query operation in this process."""
    from cli.common import json_text  # orjson, as the CLI writes its JSON
    from orchestrator.operations.query import QueryRequest, query  # the store's reads: SQLAlchemy

    with reader_at(cwd, db, env, target=sweep) as store:
        return json.loads(json_text(query(store, QueryRequest(sweep, group_by=group_by, levels=levels)).rows))


def level_ids(sweep: str, cwd: Path, db: str | None = None, env: dict[str, str] | None = None) -> list[str]:
    """Every level of the sweep's runs, in training order (what `query --levels` lists)."""
    return list(dict.fromkeys(r["level_id"] for r in query_rows(sweep, cwd, db, env, levels=True)))


def _output_dir_is_absolute(spec: Path) -> None:
    out_dir = yaml.safe_load(spec.read_text()).get("output_dir")
    assert out_dir and Path(out_dir).is_absolute(), f"{spec}: give an absolute output_dir to launch in-process"


def launch_here(spec: Path, cwd: Path, db: str | None = None, check: bool = True, **request: Any) -> Launched:
    """`tp-sweep launch SPEC` run in `cwd`, in this process (its local jobs run to their end in
    their own processes). The spec must name an absolute output_dir: its default, tp-runs, would
    be this process's, not `cwd`'s. `check`: the launch must exit 0 as the CLI's would, no bad
    level and no FAILED or LOST run. `request`: LaunchRequest's other fields. Its store is closed."""
    from orchestrator.operations.launch import LaunchRequest, launch  # the planner, the store: SQLAlchemy

    _output_dir_is_absolute(spec)
    out = launch(LaunchRequest(str(spec), db=store_url(cwd, db), **request))
    try:
        if check and out.result is not None:
            _exits_0(out.store, out.launch.name, out.result.bad)
    finally:
        out.store.close()
    return out


def resume_here(sweep: str, cwd: Path, db: str | None = None, check: bool = True, **request: Any) -> Resumed:
    """`tp-sweep resume SWEEP` run in `cwd`, in this process (local jobs run to their end in their
    own processes). The sweep's spec must name an absolute output_dir, as for launch_here.
    `check`: it must exit 0 as the CLI's would. `request`: ResumeRequest's other fields."""
    from orchestrator.operations.resume import ResumeRequest, resume  # the controller: SQLAlchemy

    out = resume(ResumeRequest(sweep, db=store_url(cwd, db), **request))
    try:
        if check and out.result is not None:
            _exits_0(out.store, sweep, out.result.bad)
    finally:
        out.store.close()
    return out


def _exits_0(store: Store, sweep: str, bad: dict[str, str]) -> None:
    """What a launch or resume exits 0 on: no bad level folder, no FAILED or LOST run."""
    from orchestrator.operations.status import sweep_status  # the store's reads: SQLAlchemy

    assert not bad, bad
    runs = sweep_status(store, sweep).runs
    assert not [r for r in runs if r.state in ("FAILED", "LOST")], [(r.run_id, r.state, r.message) for r in runs]


def dry_run_json(spec: Path, cwd: Path, db: str | None = None) -> dict[str, Any]:
    """What `tp-sweep launch SPEC --dry-run --format json` run in `cwd` prints (a spec without a
    search), parsed: the dry-run operation in this process."""
    from cli.common import json_text  # orjson, as the CLI writes its JSON
    from orchestrator.operations.launch import LaunchRequest, dry_run  # the planner (0.2 s)

    _output_dir_is_absolute(spec)
    return json.loads(json_text(dry_run(LaunchRequest(str(spec), db=store_url(cwd, db))).info()))
