"""`tp-sweep status`: where a sweep (reconciled with the disk and the scheduler first), one run,
or every sweep of a store stands, as typed results the command renders.

Imported at the command line's start-up: nothing heavy at module level (the store's reads,
SQLAlchemy and Optuna load inside the functions that need them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from core.errors import UserError
from core.levels import level_number

if TYPE_CHECKING:
    from db.reader import StoreReader
    from db.summaries import RunSummary, SweepTotals

BAD_STATES = ("FAILED", "LOST")  # a run in one of these makes status exit 1
# Runs (or jobs) in these states may still change by themselves: db.reader.ACTIVE_STATES, and planned.
STILL_MOVING = ("PLANNED", "PENDING", "RUNNING")


class Progress(NamedTuple):
    """Where a view stands, for `--watch`: levels done of all, `settled` when nothing will change
    it any more by itself (no run planned or active, no live supervisor, no trial in flight),
    and the view in one line."""

    done: int
    total: int
    settled: bool
    line: str


class TargetError(UserError, ValueError):
    """No sweep or run by that name, or a run-id prefix that matches several runs."""


@dataclass(frozen=True)
class SweepStatus:
    """A sweep's status: its runs and totals, its supervisor and search when it has them, and the
    accuracy grid when asked for (`accuracy_lines` counted; `grid` read when few enough)."""

    sweep: str
    runs: list[RunSummary]
    totals: SweepTotals
    supervisor: dict[str, Any] | None
    search: list[dict[str, Any]] | None
    search_metric: str
    accuracy_lines: int | None
    grid: list[dict[str, Any]] | None
    exit_code: int
    progress: Progress

    def as_json(self) -> dict[str, Any]:
        """What `status SWEEP --format json` prints."""
        out = {
            "sweep": self.sweep,
            "counts": state_counts(self.runs),
            **self.totals.as_dict(),
            "eta_s": None if (eta := eta_s(self.runs, self.totals)) is None else round(eta, 1),
            "runs": [r.as_dict() for r in self.runs],
        }
        if self.search is not None:
            out["search"] = self.search
        if self.supervisor is not None:
            out["supervisor"] = self.supervisor
        return out


@dataclass(frozen=True)
class RunStatus:
    """One run's status: its levels (each with its provenance), who trained them, its jobs and
    their events."""

    run_id: str
    method: str
    seed: int
    axes: dict[str, Any]
    levels: list[dict[str, Any]]
    provenance: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    events: list[dict[str, Any]]
    exit_code: int
    progress: Progress

    def as_json(self) -> dict[str, Any]:
        """What `status RUN_ID --format json` prints."""
        return {
            "run_id": self.run_id,
            "method": self.method,
            "seed": self.seed,
            "axes": self.axes,
            "levels": self.levels,
            "jobs": self.jobs,
            "events": self.events,
        }


@dataclass(frozen=True)
class SweepCounts:
    """A sweep of the all-sweeps listing: its runs by state."""

    sweep: str
    counts: dict[str, int]


@dataclass(frozen=True)
class StoreListing:
    """`status` with no target: every sweep of the store, by name."""

    display_url: str
    sweeps: list[SweepCounts]


def state_counts(runs: Iterable[RunSummary]) -> dict[str, int]:
    """Runs by state, in the store's order of states."""
    from db.reader import STATE_ORDER  # SQLAlchemy (0.3 s): status imports this module at start-up

    out: dict[str, int] = {}
    for r in runs:
        out[r.state] = out.get(r.state, 0) + 1
    return {s: out[s] for s in STATE_ORDER if s in out}


def eta_s(runs: list[RunSummary], totals: SweepTotals) -> float | None:
    """Training time left if the jobs running now go on at their pace, as many at a time as now:
    the sweep's remaining epochs x its mean epoch time / running jobs. None with nothing running."""
    running = len({r.job_id for r in runs if r.state == "RUNNING"})
    if not running or totals.epochs_left is None or totals.epoch_s is None:
        return None
    return totals.epochs_left * totals.epoch_s / running


def list_sweeps(store: StoreReader) -> StoreListing:
    """Every sweep of the store with its runs by state (no reconcile: a glance)."""
    from db.summaries import sweep_status  # SQLAlchemy (0.3 s): status imports this module at start-up

    names = store.sweep_names()
    counted = [SweepCounts(n, state_counts(sweep_status(store, n, details_up_to=0)[0])) for n in names]
    return StoreListing(store.display_url, counted)


def find_run(store: Any, target: str, sweeps: bool = True) -> Any:
    """The run whose id starts with `target`; an error that lists the candidates when several
    match, or the sweeps there are when none does."""
    found = store.find_runs(target)
    if len(found) == 1:
        return found[0]
    if found:
        more = "50 or more" if len(found) >= 50 else str(len(found))
        lines = [
            f"  {r.run_id}  {r.method} seed {r.seed}"
            + ("  " + " ".join(f"{k}={v}" for k, v in r.axes.items()) if r.axes else "")
            for r in found[:10]
        ]
        rest = (
            [f"  ... and {len(found) - 10}{' or more' if len(found) >= 50 else ''} more"]
            if len(found) > 10
            else []
        )
        raise TargetError(
            "\n".join([f"run id prefix {target!r} matches {more} runs; give more of the id:", *lines, *rest])
        )
    names = store.sweep_names() if sweeps else []
    raise TargetError(
        f"no {'sweep or ' if sweeps else ''}run {target!r} in {store.display_url}"
        + (f" (sweeps: {', '.join(names)})" if names else "")
    )


def search_rows(store: StoreReader, sweep: str) -> list[dict[str, Any]] | None:
    """Trials per cell of a sweep with a search (None for a plain sweep: Optuna stays unimported)."""
    spec = store.sweep_spec(sweep)
    if not (spec or {}).get("search"):
        return None
    from orchestrator.search.studies import search_summary  # Optuna (about a second)

    return search_summary(store, sweep)


def search_metric(store: StoreReader, sweep: str) -> str:
    """What the sweep's search optimises (search_spec's default: test_acc)."""
    return ((store.sweep_spec(sweep) or {}).get("search") or {}).get("metric") or "test_acc"


def target_status(
    store: StoreReader,
    target: str,
    *,
    details_up_to: int | None = None,
    accuracy_up_to: int | None = None,
) -> SweepStatus | RunStatus:
    """`status TARGET`: a sweep by name (sweep_status), else a run by its id or a prefix of it."""
    if store.sweep_spec(target) is not None:
        return sweep_status(store, target, details_up_to=details_up_to, accuracy_up_to=accuracy_up_to)
    from db.store import full_store  # the ORM (0.1 s): a run's view reads its levels, jobs, events as entities

    full = full_store(store)
    return run_status(full, find_run(full, target))


def sweep_status(
    store: StoreReader, sweep: str, *, details_up_to: int | None = None, accuracy_up_to: int | None = None
) -> SweepStatus:
    """Reconcile the sweep with the disk and the scheduler, then read where it stands.
    `details_up_to`: the runs above which only their states are read (a big sweep's summary);
    `accuracy_up_to`: read the accuracy grid when it has at most that many lines (None: not at
    all; a sweep with a search has its trials instead)."""
    from db.summaries import sweep_status as summarise  # SQLAlchemy (0.3 s): not for --help
    from db.supervision import summary  # SQLAlchemy (0.3 s): not for --help

    unfinished, read, at_work = _reconcile(store, sweep, details_up_to)
    runs, totals = summarise(store, sweep, unfinished, details_up_to, read, at_work)
    search = search_rows(store, sweep)
    supervisor = summary(store, sweep)
    lines, grid = None, None
    if accuracy_up_to is not None and search is None:
        from db.queries import accuracy_lines, grid_results  # SQLAlchemy (0.3 s): not for --help

        lines = accuracy_lines(store, sweep)
        grid = grid_results(store, sweep) if lines <= accuracy_up_to else None
    moving = (
        any(r.state in STILL_MOVING for r in runs)
        or (supervisor is not None and supervisor["held"] and not supervisor["stopped"])
        or any(c.get("running", 0) + c.get("waiting", 0) for c in search or [])
    )
    states = ", ".join(f"{s} {n:,}" for s, n in state_counts(runs).items())
    progress = Progress(
        totals.levels_done,
        totals.levels_total,
        not moving,
        f"{sweep}: {totals.levels_done:,}/{totals.levels_total:,} levels; {len(runs):,} runs: {states}",
    )
    return SweepStatus(
        sweep=sweep,
        runs=runs,
        totals=totals,
        supervisor=supervisor,
        search=search,
        search_metric=search_metric(store, sweep),
        accuracy_lines=lines,
        grid=grid,
        exit_code=1 if any(r.state in BAD_STATES for r in runs) else 0,
        progress=progress,
    )


def _reconcile(store: StoreReader, sweep: str, details_up_to: int | None) -> tuple[Any, Any, Any]:
    """(unfinished levels, runs read, work read) after reconciling: the last two read ahead on
    PostgreSQL, None where reconcile wrote (what was read may be stale) or on SQLite."""
    from db.summaries import read_runs, read_work  # SQLAlchemy (0.3 s): not for --help
    from orchestrator.control.reconcile import reconcile_sweep  # the controller: SQLAlchemy (0.3 s)

    if store.engine.dialect.name == "sqlite":
        return reconcile_sweep(store, sweep), None, None
    # A database server works while we do: every run's row and the sweep's totals are read on a
    # second connection while reconcile looks at the disk and asks the scheduler (0.1 s of a
    # 10,000-run status on PostgreSQL). SQLite works in this process, where a second thread only
    # fights the first for the GIL (measured slower).
    with ThreadPoolExecutor(2) as pool:
        ahead = pool.submit(read_runs, store, sweep, details_up_to)
        rows = store.unfinished_levels(sweep)
        work = pool.submit(read_work, store, sweep, rows)
        unfinished = reconcile_sweep(store, sweep, rows)
        if unfinished is None:
            return None, None, None
        return unfinished, ahead.result(), work.result()


def run_status(store: Any, run: Any) -> RunStatus:
    """One run (a store with the ORM, `db.store.full_store`): its levels, jobs and events."""
    lvls = store.run_levels(run.run_id)
    kinds = store.run_level_kinds(run.run_id)  # its role in this run, not in the run that planned it first
    levels = [
        {
            "level_id": lv.level_id,
            "kind": kinds.get(lv.level_id, lv.kind),
            "level": level_number(kinds.get(lv.level_id, lv.kind), lv.depth),
            "depth": lv.depth,
            "density": lv.density,
            "achieved_sparsity": lv.achieved_sparsity,
            "network_sparsity": lv.network_sparsity,
            "test_acc": lv.test_acc,
            "best_test_acc": lv.best_test_acc,
            "epochs": lv.epochs,
            "seconds": lv.seconds,
            "nonzero_params": lv.nonzero_params,
            "flops": lv.flops,
            "speedup": lv.flops_dense / lv.flops if lv.flops_dense and lv.flops else None,
            "resolution": lv.resolution,
            "code": lv.code,
            "sources": lv.sources,
            "job": lv.job_id,
            "finished": lv.finished_at is not None,
            "provenance": lv.provenance,
        }
        for lv in lvls
    ]
    job_ids = sorted({lv.job_id for lv in lvls if lv.job_id})
    jobs = store.jobs(job_ids)
    events = [
        {
            "at": e.at.isoformat(timespec="seconds"),
            "job": e.job_id,
            "sched_id": e.sched_id,
            "from": e.state_from,
            "to": e.state_to,
            "message": e.message,
        }
        for e in store.events(job_ids)
    ]
    job_rows = [
        {
            "job": j.job_id,
            "state": j.state,
            "sched_id": j.sched_id,
            "attempts": j.attempts,
            "levels": len(j.levels),
            "message": j.message,
        }
        for j in jobs.values()
    ]
    done = sum(1 for lv in levels if lv["finished"])
    by_state: dict[str, int] = {}
    for j in jobs.values():
        by_state[j.state] = by_state.get(j.state, 0) + 1
    progress = Progress(
        done,
        len(levels),
        not any(j.state in STILL_MOVING for j in jobs.values()),
        f"run {run.run_id[:8]}: {done}/{len(levels)} levels; {len(jobs)} jobs: "
        + ", ".join(f"{s} {n}" for s, n in sorted(by_state.items())),
    )
    return RunStatus(
        run_id=run.run_id,
        method=run.method,
        seed=run.seed,
        axes=run.axes,
        levels=levels,
        provenance=provenance_rows(lvls),
        jobs=job_rows,
        events=events,
        exit_code=1 if any(j.state in BAD_STATES for j in jobs.values()) else 0,
        progress=progress,
    )


def provenance_rows(levels: list[Any]) -> list[dict[str, Any]]:
    """One row per distinct environment that trained the run's levels: the code tree (and its
    git commit and diff), the libraries, the device, world size and hosts."""
    out: dict[str, dict[str, Any]] = {}
    for lv in levels:
        p = lv.provenance if isinstance(lv.provenance, dict) else None
        if not p:
            continue
        git = p.get("git") or {}
        row = {
            "sources": p.get("sources"),
            "version": p.get("version"),
            "git": (str(git.get("commit"))[:10] + (f"+diff {git['diff']}" if git.get("diff") else ""))
            if git.get("commit")
            else "-",
            "torch": p.get("torch"),
            "cuda": p.get("cuda") or "-",
            "cudnn": p.get("cudnn") or "-",
            "ffcv": p.get("ffcv") or "-",
            "device": p.get("device"),
            "world_size": p.get("world_size"),
            "hosts": ",".join(p.get("hosts") or []),
            "mixed": "yes: " + ",".join(p["codes"]) if len(p.get("codes") or []) > 1 else "no",
        }
        key = json.dumps(row, sort_keys=True)
        out.setdefault(key, {**row, "levels": 0})["levels"] += 1
    return list(out.values())
