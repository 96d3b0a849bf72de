"""The results store's ORM classes, mapped onto db/tables.py's tables (the one definition of the
schema): what writes and entity reads (`select(Job)`, `session.get(Level, ...)`) use. The
attributes' annotations are for the type checker; the columns are the tables'.

Reads that must start fast (`tp-sweep status`) use the tables alone and never import this module:
SQLAlchemy's ORM and the mapping cost 0.1 s.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped

from db import tables


class Base(DeclarativeBase):
    metadata = tables.metadata


class Sweep(Base):
    __table__ = tables.sweeps
    id: Mapped[int]
    name: Mapped[str]
    spec: Mapped[dict[str, Any]]
    executor: Mapped[str]
    output_dir: Mapped[str]
    created_at: Mapped[dt.datetime]


class Run(Base):
    __table__ = tables.runs
    run_id: Mapped[str]
    method: Mapped[str]
    seed: Mapped[int]
    axes: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime]
    n_levels: Mapped[int]
    last_level_id: Mapped[str | None]


class SweepRun(Base):
    __table__ = tables.sweep_runs
    sweep_id: Mapped[int]
    run_id: Mapped[str]


class RunLevel(Base):
    __table__ = tables.run_levels
    run_id: Mapped[str]
    level_id: Mapped[str]
    position: Mapped[int]
    kind: Mapped[str]


class GridPoint(Base):
    __table__ = tables.grid_points
    id: Mapped[int]
    sweep_id: Mapped[int]
    run_id: Mapped[str]
    method: Mapped[str]
    sparsity: Mapped[float]
    seed: Mapped[int]
    axes: Mapped[dict[str, Any]]
    axes_key: Mapped[str]
    level_id: Mapped[str]
    level: Mapped[int]
    naive_levels: Mapped[int]


class Level(Base):
    __table__ = tables.levels
    level_id: Mapped[str]
    parent_id: Mapped[str | None]
    root_id: Mapped[str]
    depth: Mapped[int]
    kind: Mapped[str]
    density: Mapped[float]
    step: Mapped[dict[str, Any] | None]
    level_dir: Mapped[str]
    job_id: Mapped[str | None]
    epoch: Mapped[int]
    finished_at: Mapped[dt.datetime | None]
    achieved_sparsity: Mapped[float | None]
    test_acc: Mapped[float | None]
    test_top5: Mapped[float | None]
    test_loss: Mapped[float | None]
    best_test_acc: Mapped[float | None]
    train_loss: Mapped[float | None]
    train_acc: Mapped[float | None]
    epochs: Mapped[int]
    seconds: Mapped[float]
    created_at: Mapped[dt.datetime]
    network_sparsity: Mapped[float | None]
    params: Mapped[int | None]
    nonzero_params: Mapped[int | None]
    flops_dense: Mapped[float | None]
    flops: Mapped[float | None]
    code: Mapped[str | None]
    sources: Mapped[str | None]
    provenance: Mapped[dict[str, Any] | None]
    resolution: Mapped[int | None]


class Epoch(Base):
    __table__ = tables.epochs
    level_id: Mapped[str]
    epoch: Mapped[int]
    train_loss: Mapped[float]
    train_acc: Mapped[float]
    test_loss: Mapped[float | None]
    test_acc: Mapped[float | None]
    test_top5: Mapped[float | None]
    lr: Mapped[float]
    steps: Mapped[int]
    seconds: Mapped[float]
    images_per_s: Mapped[float]
    at: Mapped[dt.datetime]


class Job(Base):
    __table__ = tables.jobs
    job_id: Mapped[str]
    levels: Mapped[list[Any]]
    depends_on: Mapped[list[Any]]
    state: Mapped[str]
    executor: Mapped[str | None]
    sched_id: Mapped[str | None]
    sweep: Mapped[str]
    job_file: Mapped[str]
    attempts: Mapped[int]
    level_id: Mapped[str | None]
    heartbeat_at: Mapped[dt.datetime | None]
    message: Mapped[str | None]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    failure: Mapped[str | None]
    verdict: Mapped[str | None]
    retry_at: Mapped[dt.datetime | None]
    retries: Mapped[int]
    sbatch: Mapped[dict[str, Any] | None]


class Supervisor(Base):
    __table__ = tables.supervisors
    sweep: Mapped[str]
    owner: Mapped[str | None]
    host: Mapped[str | None]
    pid: Mapped[int | None]
    where: Mapped[str]
    sched_id: Mapped[str | None]
    lease_s: Mapped[float]
    heartbeat_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    stopped: Mapped[str | None]
    submit: Mapped[dict[str, Any] | None]
    updated_at: Mapped[dt.datetime]


class Action(Base):
    __table__ = tables.actions
    id: Mapped[int]
    sweep: Mapped[str]
    at: Mapped[dt.datetime]
    actor: Mapped[str | None]
    action: Mapped[str]
    job_id: Mapped[str | None]
    failure: Mapped[str | None]
    level_id: Mapped[str | None]
    node: Mapped[str | None]
    reason: Mapped[str]
    progress: Mapped[int | None]


class Event(Base):
    __table__ = tables.events
    id: Mapped[int]
    job_id: Mapped[str]
    at: Mapped[dt.datetime]
    state_from: Mapped[str | None]
    state_to: Mapped[str]
    sched_id: Mapped[str | None]
    message: Mapped[str | None]


class Attempt(Base):
    __table__ = tables.attempts
    id: Mapped[int]
    job_id: Mapped[str]
    attempt: Mapped[int]
    sched_id: Mapped[str | None]
    host: Mapped[str | None]
    world_size: Mapped[int]
    resumed_from: Mapped[str | None]
    started_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]
    outcome: Mapped[str | None]
