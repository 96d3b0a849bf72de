"""The results store's tables, as SQLAlchemy Core `Table`s: the one definition of the schema.
Changes go through an Alembic migration.

Three identities, all content hashes, so every store and sweep that asks for the same thing finds
the same row:
- a *level* (levels) is one training under one mask: the unit of work and of results;
- a *run* (runs) is one method x seed x axes configuration: the levels it needs are `run_levels`;
- a *job* (jobs) is a chain of levels submitted to a scheduler: states, attempts and events.
A sweep asks for grid points (grid_points), each served by one level. The level folders on disk
are the record; this store is their index and can be rebuilt from them (`tp-sweep db import`).

Core, not the ORM, on purpose: the reads of `tp-sweep status` use these tables alone, and
importing SQLAlchemy's ORM and mapping the classes (db/schema.py maps them onto these tables)
costs 0.1 s of every status. Writes and entity reads go through db/schema.py's classes.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    cast,
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def as_datetime(value: Any) -> Any:
    """A timestamp as the driver returns it (SQLite: text) as a datetime; anything else as is."""
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def iso_seconds(value: Any) -> str | None:
    """A timestamp as ISO text to the second (None, or what is not a timestamp, as is)."""
    value = as_datetime(value)
    return value.isoformat(timespec="seconds") if isinstance(value, dt.datetime) else value


metadata = MetaData()


def _req(name: str, type_: Any, *args: Any, **kw: Any) -> Column[Any]:
    """A column that must have a value (NOT NULL), as most of them must."""
    return Column(name, type_, *args, nullable=False, **kw)


def _opt(name: str, type_: Any, *args: Any, **kw: Any) -> Column[Any]:
    """A column that may be NULL."""
    return Column(name, type_, *args, nullable=True, **kw)


sweeps = Table(
    "sweeps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _req("name", String(128), unique=True),
    _req("spec", JSON),  # as written, with any database password removed
    _req("executor", String(16)),
    _req("output_dir", Text),
    _req("created_at", DateTime, default=utcnow),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(32), primary_key=True),
    _req("method", String(32), index=True),
    _req("seed", Integer),
    _req("axes", JSON),
    _req("config", JSON),
    _req("created_at", DateTime, default=utcnow),
    # Its run_levels, counted, and the last of them in training order: what status shows a run
    # by, kept by Store.record_plan (migration 0006).
    _req("n_levels", Integer, default=0, server_default="0"),
    _opt("last_level_id", String(40)),
)

sweep_runs = Table(
    "sweep_runs",
    metadata,
    Column("sweep_id", Integer, ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True),
    Column("run_id", String(32), ForeignKey("runs.run_id"), primary_key=True),
)

run_levels = Table(
    "run_levels",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.run_id"), primary_key=True),
    Column("level_id", String(40), ForeignKey("levels.level_id"), primary_key=True, index=True),
    _req("position", Integer),  # training order within the run
    # The level's role in this run (dense, oneshot, trunk, branch, control; legacy): a level
    # shared by runs may be a trunk level of one and a branch of another (migration 0008).
    _req("kind", String(16)),
    # Each run's levels in training order, read from the index alone (migration 0005).
    Index("ix_run_levels_run_position", "run_id", "position", "level_id"),
)

grid_points = Table(
    "grid_points",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _req("sweep_id", Integer, ForeignKey("sweeps.id", ondelete="CASCADE"), index=True),
    _req("run_id", String(32), ForeignKey("runs.run_id"), index=True),
    _req("method", String(32)),
    _req("sparsity", Float),  # the target
    _req("seed", Integer),
    _req("axes", JSON),
    _req("axes_key", Text),  # canonical JSON of axes, for the unique constraint
    _req("level_id", String(40), ForeignKey("levels.level_id"), index=True),  # serves it
    _req("level", Integer),  # its level in the run: that level's depth, a control's parent's
    _req("naive_levels", Integer, default=0),  # a lone job for it would train
    UniqueConstraint("sweep_id", "method", "sparsity", "seed", "axes_key"),
)

levels = Table(
    "levels",
    metadata,
    Column("level_id", String(40), primary_key=True),
    _opt("parent_id", String(40)),
    _req("root_id", String(40)),
    _req("depth", Integer),
    # its role in the run that first planned it, as its level.json says; run_levels.kind is its
    # role in each run, what query and status show
    _req("kind", String(16)),
    _req("density", Float),  # planned
    _opt("step", JSON),
    _req("level_dir", Text),
    _opt("job_id", String(40), index=True),  # in charge
    _req("epoch", Integer, default=0),  # epochs finished while training
    _opt("finished_at", DateTime, index=True),
    _opt("achieved_sparsity", Float),  # measured
    _opt("test_acc", Float),
    _opt("test_top5", Float),
    _opt("test_loss", Float),
    _opt("best_test_acc", Float),
    _opt("train_loss", Float),
    _opt("train_acc", Float),
    _req("epochs", Integer, default=0),
    _req("seconds", Float, default=0.0),
    _req("created_at", DateTime, default=utcnow),
    # 0003: cost and provenance of a finished level (null for levels finished before)
    _opt("network_sparsity", Float),  # all parameters
    _opt("params", BigInteger),
    _opt("nonzero_params", BigInteger),
    _opt("flops_dense", Float),  # MACs per example
    _opt("flops", Float),  # nonzero weights only
    _opt("code", String(40)),  # core/code.py identity
    _opt("sources", String(40)),  # the whole tree's
    _opt("provenance", JSON),
    # 0008: the training input's height (px) that flops_dense and flops were counted at
    _opt("resolution", Integer),
)

epochs = Table(
    "epochs",
    metadata,
    Column("level_id", String(40), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    _req("train_loss", Float),
    _req("train_acc", Float),
    _opt("test_loss", Float),
    _opt("test_acc", Float),
    _opt("test_top5", Float),
    _req("lr", Float),  # at the epoch's last step
    _req("steps", Integer),  # optimizer steps taken in this epoch
    _req("seconds", Float),
    _req("images_per_s", Float),
    _req("at", DateTime, default=utcnow),
)

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(40), primary_key=True),
    _req("levels", JSON),  # level ids, in training order
    _req("depends_on", JSON),  # job ids that must complete first
    _req("state", String(16), default="PLANNED", index=True),
    _opt("executor", String(16)),
    _opt("sched_id", String(64)),  # the scheduler's id
    _req("sweep", String(128)),  # the sweep that planned it (logs go there)
    _req("job_file", Text),
    _req("attempts", Integer, default=0),
    _opt("level_id", String(40)),  # being trained
    _opt("heartbeat_at", DateTime),
    _opt("message", Text),
    _req("created_at", DateTime, default=utcnow),
    _req("updated_at", DateTime, default=utcnow, onupdate=utcnow),
    # The supervisor's view (orchestrator/control/policy.py): the class of the last failure
    # (ERROR, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL, LOST, TIMEOUT, PREEMPTED), its verdict on it
    # (retry | final; None: not judged yet), when it resubmits it, how often it did, and the
    # sbatch settings the job's next submissions get on top of the sweep's (mem_gb, exclude).
    _opt("failure", String(24)),
    _opt("verdict", String(16)),
    _opt("retry_at", DateTime),
    _req("retries", Integer, default=0, server_default="0"),
    _opt("sbatch", JSON),
)

# The lease of a sweep's one supervisor (orchestrator/control/supervisor.py): who holds it, where
# it runs and its last heartbeat. A lease whose heartbeat is older than `lease_s` is stale, and
# the next supervisor takes it over. `stopped` says why supervision ended for good (the sweep
# finished, nothing more can be done); None while the sweep wants a supervisor. `submit` is how
# to start a replacement as a Slurm job (a job of the sweep that ends while the lease is stale
# does), `sched_id` that job.
supervisors = Table(
    "supervisors",
    metadata,
    Column("sweep", String(128), primary_key=True),
    _opt("owner", String(128)),
    _opt("host", String(255)),
    _opt("pid", Integer),
    _req("where", String(16), default="local"),  # local | slurm
    _opt("sched_id", String(64)),
    _req("lease_s", Float, default=300.0),
    _opt("heartbeat_at", DateTime),
    _opt("started_at", DateTime),
    _opt("stopped", Text),
    _opt("submit", JSON),
    _req("updated_at", DateTime, default=utcnow),
)

# What a supervisor (or a job replacing it) did to a sweep, and why: one row per action.
actions = Table(
    "actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _req("sweep", String(128), index=True),
    _req("at", DateTime, default=utcnow),
    _opt("actor", String(128)),
    _req("action", String(32)),
    _opt("job_id", String(40), index=True),
    _opt("failure", String(24)),
    _opt("level_id", String(40)),
    _opt("node", String(255)),
    _req("reason", Text),
    _opt("progress", BigInteger),  # steps the job's level had saved when it failed (failure actions)
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _req("job_id", String(40), index=True),
    _req("at", DateTime, default=utcnow),
    _opt("state_from", String(16)),
    _req("state_to", String(16)),
    _opt("sched_id", String(64)),
    _opt("message", Text),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _req("job_id", String(40), index=True),
    _req("attempt", Integer),
    _opt("sched_id", String(64)),
    _opt("host", String(255)),
    _req("world_size", Integer, default=1),
    _opt("resumed_from", Text),  # checkpoint, if any
    _req("started_at", DateTime, default=utcnow),
    _opt("ended_at", DateTime),
    _opt("outcome", String(16)),
)


def as_text(column: Any) -> Any:
    """A JSON column read as text, for AxesDecoder: SQLAlchemy (on SQLite) and psycopg (on
    PostgreSQL, whatever the column's declared type in the query) decode every row's JSON, and a
    sweep's 10,000 runs share a handful of distinct axes. A cast, so that PostgreSQL sends text
    (json::text is the stored text) and psycopg leaves it alone: 0.15 CPU-s of a 10,000-run status."""
    return cast(column, Text).label(getattr(column, "key", None) or "json_text")


class AxesDecoder:
    """Decodes each distinct axes text once; each call returns a dict of its own."""

    def __init__(self) -> None:
        self._seen: dict[str | None, dict[str, Any]] = {}

    def __call__(self, value: Any) -> dict[str, Any]:
        if isinstance(value, dict):  # PostgreSQL's driver decodes JSON itself
            return value
        if value not in self._seen:
            self._seen[value] = json.loads(value) if value else {}
        return dict(self._seen[value])
