"""The results store's tables (SQLAlchemy 2 declarative). Changes go through an Alembic migration.

A run is keyed by its content hash alone, so two sweeps that contain the same run share its
results (and a relaunch finds them); `sweep_runs` and `grid_points` say which sweep asked for what.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Sweep(Base):
    __tablename__ = "sweeps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    spec: Mapped[dict[str, Any]]
    executor: Mapped[str] = mapped_column(String(16))
    output_dir: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    method: Mapped[str] = mapped_column(String(32), index=True)
    seed: Mapped[int] = mapped_column(Integer)
    axes: Mapped[dict[str, Any]]
    sparsities: Mapped[list[Any]]
    densities: Mapped[list[Any]]
    config: Mapped[dict[str, Any]]
    run_dir: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="PLANNED", index=True)
    executor: Mapped[str | None] = mapped_column(String(16), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    level: Mapped[int] = mapped_column(Integer, default=0)  # level being trained, or the last one
    epoch: Mapped[int] = mapped_column(Integer, default=0)  # epochs finished in that level
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    @property
    def levels_total(self) -> int:
        return len(self.densities)


class SweepRun(Base):
    __tablename__ = "sweep_runs"
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)


class GridPoint(Base):
    __tablename__ = "grid_points"
    __table_args__ = (UniqueConstraint("sweep_id", "method", "sparsity", "seed", "axes_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    method: Mapped[str] = mapped_column(String(32))
    sparsity: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    axes: Mapped[dict[str, Any]]
    axes_key: Mapped[str] = mapped_column(Text)  # canonical JSON of axes, for the unique constraint
    level: Mapped[int] = mapped_column(Integer)  # the run's level that reaches this sparsity


class Level(Base):
    __tablename__ = "levels"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True)
    density: Mapped[float] = mapped_column(Float)  # planned
    achieved_sparsity: Mapped[float] = mapped_column(Float)  # measured in the model's weights
    test_acc: Mapped[float | None] = mapped_column(Float, nullable=True)
    test_top5: Mapped[float | None] = mapped_column(Float, nullable=True)
    test_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_test_acc: Mapped[float | None] = mapped_column(Float, nullable=True)
    train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    train_acc: Mapped[float | None] = mapped_column(Float, nullable=True)
    epochs: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Epoch(Base):
    __tablename__ = "epochs"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True)
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


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    state_from: Mapped[str | None] = mapped_column(String(16), nullable=True)
    state_to: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class Attempt(Base):
    __tablename__ = "attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    world_size: Mapped[int] = mapped_column(Integer, default=1)
    resumed_from: Mapped[str | None] = mapped_column(Text, nullable=True)  # checkpoint, if any
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
