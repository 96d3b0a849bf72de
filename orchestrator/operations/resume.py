"""`tp-sweep resume SWEEP`: submit again the jobs that were stopped (preempted, timed out,
lost; on request failed and cancelled ones), or carry a search on from where it stopped."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.operations.launch import ProgressBar, SearchBar, run_search, supervised_elsewhere
from orchestrator.operations.stores import open_store

if TYPE_CHECKING:
    from db.store import Store
    from orchestrator.control.controller import LaunchResult
    from orchestrator.search.driver import SearchResult


@dataclass(frozen=True)
class ResumeRequest:
    sweep: str
    db: str | None = None  # --db
    include_failed: bool = False  # also failed and cancelled runs
    executor: str | None = None  # --executor (else the sweep's)
    # --reuse: the policy the jobs' trainers apply to a level stopped mid-way by other code. It
    # reaches them in their environment (TP_REUSE), never this process's.
    reuse: str | None = None


@dataclass
class Resumed:
    """What a resume did: `result` (jobs submitted again), `search` (the search went on to its
    end), or `driven_by` (a supervisor drives the search: nothing done here). `local`: the jobs
    ran here (their progress was followed). `store`: for the status that follows."""

    sweep: str
    store: Store
    local: bool = False
    result: LaunchResult | None = None
    search: SearchResult | None = None
    driven_by: str | None = None


def resume(
    request: ResumeRequest, local_progress: ProgressBar | None = None, search_progress: SearchBar | None = None
) -> Resumed:
    """Resume the sweep's stopped jobs (local ones run to their end here), or its search.
    NotFound (exit 2) for a sweep the store lacks."""
    store = open_store(request.db, target=request.sweep)  # first: an unknown sweep answers before the imports
    from orchestrator.control.controller import resume as resubmit  # the controller: submitit's side
    from orchestrator.control.controller import stored_spec  # the controller: submitit's side

    spec = stored_spec(store, request.sweep)
    kind = request.executor or spec.executor.kind
    out = Resumed(request.sweep, store)
    env = {"TP_REUSE": request.reuse} if request.reuse else {}
    if spec.search is not None:  # the search goes on where it stopped, adopting its trials
        from orchestrator.plan.launch import stored_launch  # the planner (pydantic, YAML): 0.2 s

        out.driven_by = supervised_elsewhere(store, request.sweep)
        if out.driven_by is None:
            stored = store.get_sweep(request.sweep)
            assert stored is not None  # open_store checked that the sweep is there
            run = stored_launch(spec, stored.spec, executor=kind, reuse=request.reuse)
            out.search = run_search(store, run, search_progress)
        return out
    out.local = kind in ("local", "debug")
    bar = local_progress if out.local else None
    with bar(store, request.sweep) if bar is not None else nullcontext(None) as update:
        out.result = resubmit(store, request.sweep, request.include_failed, kind, update, env)
    return out
