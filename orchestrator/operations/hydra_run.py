"""`python -m trainer` with a store: record the hydra run as `tp-sweep launch` would record it
(orchestrator.control.standalone), before it trains."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.operations.stores import StoreNotOpened, open_store


@dataclass(frozen=True)
class HydraRun:
    """One run of hydra's: its config (validated), targets and folders, and where it runs
    (`executor` and `sched_id`, which `tp-sweep status` polls)."""

    url: str
    sweep: str
    preset: str | None  # hydra's config name
    config: dict[str, Any]
    sparsities: list[float]
    output_dir: str
    job_file: Path
    executor: str
    sched_id: str
    reuse: str = "same-code"


def check_store(url: str) -> None:
    """Open the store once (migrating it) before a multirun's jobs start: StoreNotOpened when it
    will not."""
    open_store(url).close()


def record_hydra_run(run: HydraRun) -> str:
    """Record the run and its job in the store; return the owner-only file that hands the store
    URL to the trainer. StoreNotOpened when the store will not open or fails."""
    from db.engine import StoreError  # SQLAlchemy (0.3 s): the trainer alone never imports it
    from orchestrator.control.standalone import record_run  # the planner and the store (0.5 s)

    try:
        return record_run(
            run.url,
            run.sweep,
            run.preset,
            run.config,
            run.sparsities,
            run.output_dir,
            run.job_file,
            run.executor,
            run.sched_id,
            run.reuse,
        )
    except StoreError as exc:
        raise StoreNotOpened(str(exc)) from None
