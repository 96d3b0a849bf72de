"""The results store's tables (SQLAlchemy 2 declarative). Changes go through an Alembic migration.

Three identities, all content hashes, so every store and sweep that asks for the same thing finds
the same row:
- a *level* (levels) is one training under one mask: the unit of work and of results;
- a *run* (runs) is one method x seed x axes configuration: the levels it needs are `run_levels`;
- a *job* (jobs) is a chain of levels submitted to a scheduler: states, attempts and events.
A sweep asks for grid points (grid_points), each served by one level. The level folders on disk
are the record; this store is their index and can be rebuilt from them (`tp-sweep db import`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    cast,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Sweep(Base):
    __tablename__ = "sweeps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    spec: Mapped[dict[str, Any]]  # as written, with any database password removed
    executor: Mapped[str] = mapped_column(String(16))
    output_dir: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    method: Mapped[str] = mapped_column(String(32), index=True)
    seed: Mapped[int] = mapped_column(Integer)
    axes: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # Its run_levels, counted, and the last of them in training order: what status shows a run
    # by, kept by Store.record_plan (migration 0006).
    n_levels: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_level_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class SweepRun(Base):
    __tablename__ = "sweep_runs"
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)


class RunLevel(Base):
    __tablename__ = "run_levels"
    # Each run's levels in training order, read from the index alone (migration 0005).
    __table_args__ = (Index("ix_run_levels_run_position", "run_id", "position", "level_id"),)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    level_id: Mapped[str] = mapped_column(ForeignKey("levels.level_id"), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer)  # training order within the run


class GridPoint(Base):
    __tablename__ = "grid_points"
    __table_args__ = (UniqueConstraint("sweep_id", "method", "sparsity", "seed", "axes_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    method: Mapped[str] = mapped_column(String(32))
    sparsity: Mapped[float] = mapped_column(Float)  # the target
    seed: Mapped[int] = mapped_column(Integer)
    axes: Mapped[dict[str, Any]]
    axes_key: Mapped[str] = mapped_column(Text)  # canonical JSON of axes, for the unique constraint
    level_id: Mapped[str] = mapped_column(ForeignKey("levels.level_id"), index=True)  # serves it
    level: Mapped[int] = mapped_column(Integer)  # depth of that level
    naive_levels: Mapped[int] = mapped_column(Integer, default=0)  # a lone job for it would train


class Level(Base):
    __tablename__ = "levels"
    level_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    root_id: Mapped[str] = mapped_column(String(40))
    depth: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # dense | oneshot | trunk | branch (| legacy)
    density: Mapped[float] = mapped_column(Float)  # planned
    step: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    level_dir: Mapped[str] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)  # in charge
    epoch: Mapped[int] = mapped_column(Integer, default=0)  # epochs finished while training
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    achieved_sparsity: Mapped[float | None] = mapped_column(Float, nullable=True)  # measured
    test_acc: Mapped[float | None] = mapped_column(Float, nullable=True)
    test_top5: Mapped[float | None] = mapped_column(Float, nullable=True)
    test_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_test_acc: Mapped[float | None] = mapped_column(Float, nullable=True)
    train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    train_acc: Mapped[float | None] = mapped_column(Float, nullable=True)
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # 0003: cost and provenance of a finished level (null for levels finished before)
    network_sparsity: Mapped[float | None] = mapped_column(Float, nullable=True)  # all parameters
    params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    nonzero_params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    flops_dense: Mapped[float | None] = mapped_column(Float, nullable=True)  # MACs per example
    flops: Mapped[float | None] = mapped_column(Float, nullable=True)  # nonzero weights only
    code: Mapped[str | None] = mapped_column(String(40), nullable=True)  # core/code.py identity
    sources: Mapped[str | None] = mapped_column(String(40), nullable=True)  # the whole tree's
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Epoch(Base):
    __tablename__ = "epochs"
    level_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_loss: Mapped[float] = mapped_column(Float)
    train_acc: Mapped[float] = mapped_column(Float)
    test_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    test_acc: Mapped[float | None] = mapped_column(Float, nullable=True)
    test_top5: Mapped[float | None] = mapped_column(Float, nullable=True)
    lr: Mapped[float] = mapped_column(Float)  # at the epoch's last step
    steps: Mapped[int] = mapped_column(Integer)  # optimizer steps taken in this epoch
    seconds: Mapped[float] = mapped_column(Float)
    images_per_s: Mapped[float] = mapped_column(Float)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    levels: Mapped[list[Any]]  # level ids, in training order
    depends_on: Mapped[list[Any]]  # job ids that must complete first
    state: Mapped[str] = mapped_column(String(16), default="PLANNED", index=True)
    executor: Mapped[str | None] = mapped_column(String(16), nullable=True)
    sched_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the scheduler's id
    sweep: Mapped[str] = mapped_column(String(128))  # the sweep that planned it (logs go there)
    job_file: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    level_id: Mapped[str | None] = mapped_column(String(40), nullable=True)  # being trained
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    # The supervisor's view (orchestrator/control/policy.py): the class of the last failure
    # (ERROR, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL, LOST, TIMEOUT, PREEMPTED), its verdict on it
    # (retry | final; None: not judged yet), when it resubmits it, how often it did, and the
    # sbatch settings the job's next submissions get on top of the sweep's (mem_gb, exclude).
    failure: Mapped[str | None] = mapped_column(String(24), nullable=True)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    retry_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sbatch: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Supervisor(Base):
    """The lease of a sweep's one supervisor (orchestrator/control/supervisor.py): who holds it,
    where it runs and its last heartbeat. A lease whose heartbeat is older than `lease_s` is
    stale, and the next supervisor takes it over. `stopped` says why supervision ended for good
    (the sweep finished, nothing more can be done); None while the sweep wants a supervisor.
    `submit` is how to start a replacement as a Slurm job (a job of the sweep that ends while the
    lease is stale does), `sched_id` that job."""

    __tablename__ = "supervisors"
    sweep: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    where: Mapped[str] = mapped_column(String(16), default="local")  # local | slurm
    sched_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_s: Mapped[float] = mapped_column(Float, default=300.0)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    stopped: Mapped[str | None] = mapped_column(Text, nullable=True)
    submit: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Action(Base):
    """What a supervisor (or a job replacing it) did to a sweep, and why: one row per action."""

    __tablename__ = "actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep: Mapped[str] = mapped_column(String(128), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    actor: Mapped[str | None] = mapped_column(String(128), nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    failure: Mapped[str | None] = mapped_column(String(24), nullable=True)
    level_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    node: Mapped[str | None] = mapped_column(String(255), nullable=True)
    reason: Mapped[str] = mapped_column(Text)


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    state_from: Mapped[str | None] = mapped_column(String(16), nullable=True)
    state_to: Mapped[str] = mapped_column(String(16))
    sched_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class Attempt(Base):
    __tablename__ = "attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    sched_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    world_size: Mapped[int] = mapped_column(Integer, default=1)
    resumed_from: Mapped[str | None] = mapped_column(Text, nullable=True)  # checkpoint, if any
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)


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
