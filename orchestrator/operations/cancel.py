"""`tp-sweep cancel`: stop a sweep's or one run's jobs, in the store and in the scheduler."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.operations.status import find_run
from orchestrator.operations.stores import open_store


@dataclass(frozen=True)
class Cancelled:
    """The jobs cancelled (those already finished are left as they are)."""

    jobs: list[str]


def cancel(db: str | None, target: str) -> Cancelled:
    """Cancel the jobs of sweep `target`, else of the run whose id starts with `target`.
    `db`: --db (else TP_DB_URL, else the default store)."""
    store = open_store(db, target=target, runs=True)  # first: a typo answers before the imports
    try:
        from orchestrator.control.controller import cancel as cancel_jobs  # submitit's side (0.2 s)
        from orchestrator.control.reconcile import sweep_level_ids  # the controller: SQLAlchemy (0.3 s)

        if store.get_sweep(target) is not None:
            level_ids = sweep_level_ids(store, target)
        else:
            run = find_run(store, target)
            level_ids = [lv.level_id for lv in store.run_levels(run.run_id)]
        return Cancelled(cancel_jobs(store, list(store.jobs_of_levels(level_ids).values())))
    finally:
        store.close()
