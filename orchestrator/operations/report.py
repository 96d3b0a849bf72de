"""`tp-sweep report`'s data: everything the HTML page shows of a sweep, read from the store as
recorded (no scheduler is asked; `tp-sweep status` reconciles first). cli/render/report.py turns
it into the page.

Everything is aggregated so the page stays small whatever the sweep's size: a line per method
(and per combination of the other axes while few), one run's learning curves per method, job
messages and lists cut at the limits below.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass, fields
from typing import Any

from core.errors import UserError
from db.provenance import provenance
from db.queries import RESULT_KEYS, QueryError, grid_results, group, run_curves
from db.reader import STATE_ORDER, StoreReader
from db.summaries import sweep_status
from db.trouble import job_trouble
from orchestrator.operations.stores import open_reader
from orchestrator.search.studies import search_summary, search_trials

MAX_MESSAGE = 2000  # characters of a job's message shown (the rest: `tp-sweep status RUN`)
MAX_EVENT_MESSAGE = 300  # characters of a state change's message
MAX_IDS = 6  # level ids named in one hover, then "+N more"
MAX_LINES = 12  # accuracy lines (method x other axes) before averaging over the axes
MAX_TROUBLE = 200  # jobs listed under "what went wrong"
MAX_EVENTS = 10  # their last state changes shown
MAX_TRIALS = 5000  # search trials plotted


class ReportError(UserError, ValueError):
    """No such sweep (the CLI's exit 2)."""


@dataclass(frozen=True)
class SweepReport:
    """What the page shows, as plain JSON-able values in the order the page embeds them."""

    sweep: str
    generated_at: str  # "YYYY-MM-DD HH:MM:SS UTC"
    store: str  # the store's URL, without its password
    spec: dict[str, Any]  # as recorded
    runs: int
    counts: dict[str, int]  # runs by state, in STATE_ORDER
    by_method: dict[str, dict[str, int]]  # method -> state -> runs
    totals: dict[str, Any]  # db.summaries.SweepTotals.as_dict()
    grid_points: int
    finished_points: int  # grid points with a test_acc
    axes: list[str]  # the grid's axes besides method, sparsity and seed
    accuracy: dict[str, Any]  # accuracy_by_sparsity
    table: list[dict[str, Any]]  # `query --group-by method,sparsity`
    curves: list[dict[str, Any]]  # one run per method, its levels' epochs
    trouble: dict[str, Any]  # db.trouble.job_trouble, messages cut
    provenance: dict[str, Any]  # db.provenance.provenance
    search: dict[str, Any] | None  # search_data, for a search

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def sweep_report(db: str | None, sweep: str) -> SweepReport:
    """The report of `sweep` in the store at `db` (--db; else TP_DB_URL or the default)."""
    store = open_reader(db)
    try:
        return collect(store, sweep)
    finally:
        store.close()


def collect(store: StoreReader, sweep: str) -> SweepReport:
    """The report of `sweep`, read from an open store."""
    spec = store.sweep_spec(sweep)
    if spec is None:
        names = store.sweep_names()
        raise ReportError(
            f"no sweep named {sweep!r} in {store.display_url}"
            + (f" (sweeps: {', '.join(names)})" if names else "")
        )
    try:
        runs, totals = sweep_status(store, sweep, details_up_to=0)
        rows = grid_results(store, sweep)
    except QueryError as exc:
        raise ReportError(str(exc)) from None
    counts: dict[str, int] = {}
    by_method: dict[str, dict[str, int]] = {}
    for r in runs:
        counts[r.state] = counts.get(r.state, 0) + 1
        m = by_method.setdefault(r.method, {})
        m[r.state] = m.get(r.state, 0) + 1
    order = {s: i for i, s in enumerate(STATE_ORDER)}
    counts = dict(sorted(counts.items(), key=lambda kv: order.get(kv[0], len(order))))
    axes = [k for k in (rows[0] if rows else {}) if k not in RESULT_KEYS]
    # One run per method for the learning curves: the one with the most finished levels, then
    # the lowest seed.
    chosen: dict[str, Any] = {}
    for r in runs:
        best = chosen.get(r.method)
        if best is None or (-r.levels_done, r.seed, r.run_id) < (-best.levels_done, best.seed, best.run_id):
            chosen[r.method] = r
    curves = run_curves(store, [r.run_id for r in chosen.values()])
    chosen_curves = [
        {
            "method": m,
            "run_id": r.run_id,
            "seed": r.seed,
            "axes": r.axes,
            "levels_done": r.levels_done,
            "levels_total": r.levels_total,
            "levels": [_compact(lv) for lv in curves.get(r.run_id, [])],
        }
        for m, r in sorted(chosen.items())
    ]
    mark_shared_levels(chosen_curves)
    return SweepReport(
        sweep=sweep,
        generated_at=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        store=store.display_url,
        spec=spec,
        runs=len(runs),
        counts=counts,
        by_method={
            m: dict(sorted(c.items(), key=lambda kv: order.get(kv[0], 99))) for m, c in sorted(by_method.items())
        },
        totals=totals.as_dict(),
        grid_points=len(rows),
        finished_points=sum(1 for r in rows if r["test_acc"] is not None),
        axes=axes,
        accuracy=accuracy_by_sparsity(rows, axes),
        table=group(rows, ["method", "sparsity"]) if rows else [],
        curves=chosen_curves,
        trouble=_cut_messages(job_trouble(store, sweep, most=MAX_TROUBLE, events_per_job=MAX_EVENTS)),
        provenance=provenance(store, sweep),
        search=search_data(store, sweep, spec["search"]) if spec.get("search") else None,
    )


def mark_shared_levels(curves: list[dict[str, Any]]) -> None:
    """Give every level of the learning curves `methods`: the methods whose chosen run trains that
    very level at the same place of its curve (dense's level 0 is IMP's level 0), so the chart
    draws it once, named after them all, instead of one line hidden under another."""
    where: dict[tuple[str, int], list[str]] = {}
    for c in curves:
        start = 0
        for lv in c["levels"]:
            lv["_at"] = (lv["level_id"], start)
            where.setdefault(lv["_at"], []).append(c["method"])
            start += len(lv["epochs"])
    for c in curves:
        for lv in c["levels"]:
            lv["methods"] = sorted(set(where[lv.pop("_at")]))


def _compact(level: dict[str, Any]) -> dict[str, Any]:
    """A level of a learning curve with only what the chart draws: its epochs' test accuracy
    (6 decimals), not every column of every epoch (a fifth of the page on a big sweep)."""
    eps = level["epochs"]
    return {
        **{k: v for k, v in level.items() if k != "epochs"},
        "epochs": [
            {"epoch": ep["epoch"], "test_acc": None if ep["test_acc"] is None else round(ep["test_acc"], 6)}
            for ep in eps
        ],
    }


def _cut_messages(trouble: dict[str, Any]) -> dict[str, Any]:
    """Job messages at MAX_MESSAGE characters, event messages at MAX_EVENT_MESSAGE, with the
    length they had (a traceback of a megabyte must not make the page one)."""
    for j in trouble["jobs"]:
        msg = j.get("message") or ""
        j["message_chars"] = len(msg)
        j["message"] = msg[:MAX_MESSAGE] or None
        for ev in j["events"]:
            text = ev.get("message") or ""
            ev["message_chars"] = len(text)
            ev["message"] = text[:MAX_EVENT_MESSAGE] or None
    return trouble


def accuracy_by_sparsity(rows: list[dict[str, Any]], axes: list[str]) -> dict[str, Any]:
    """Accuracy against target sparsity: a line per method (and per combination of the other grid
    axes while there are at most MAX_LINES lines; beyond, averaged over them), each point the mean
    and sample std over the finished grid points at that target, with n, the runs and the ids of
    the levels behind it. Dense (or any method only at sparsity 0) is a reference, not a line."""

    def combo(r: dict[str, Any]) -> tuple:
        return tuple((a, r.get(a)) for a in axes)

    n_lines = len({(r["method"], combo(r)) for r in rows})
    split = bool(axes) and n_lines <= MAX_LINES
    by_line: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        by_line.setdefault((r["method"], combo(r) if split else ()), []).append(r)
    lines = []
    for (method, cmb), rs in sorted(by_line.items(), key=lambda kv: (kv[0][0], [str(v) for _, v in kv[0][1]])):
        name = method + "".join(f" {a}={v}" for a, v in cmb)
        points = []
        for sp in sorted({r["sparsity"] for r in rs}):
            at = [r for r in rs if r["sparsity"] == sp]
            done = [r for r in at if r["test_acc"] is not None]
            accs = [r["test_acc"] for r in done]
            achieved = [r["achieved_sparsity"] for r in done if r["achieved_sparsity"] is not None]
            ids = list(dict.fromkeys(r["level_id"] for r in done))
            points.append(
                {
                    "sparsity": sp,
                    "n": len(done),
                    "runs": len(at),
                    "mean": statistics.fmean(accs) if accs else None,
                    "std": statistics.stdev(accs) if len(accs) > 1 else (0.0 if accs else None),
                    "achieved": statistics.fmean(achieved) if achieved else None,
                    "ids": ids[:MAX_IDS],
                    "more_ids": max(0, len(ids) - MAX_IDS),
                }
            )
        dense = method == "dense" or all(p["sparsity"] == 0 for p in points)
        lines.append({"name": name, "method": method, "dense": dense, "points": points})
    note = None
    if axes and not split:
        values = {a: len({str(r.get(a)) for r in rows}) for a in axes}
        note = (
            "averaged over "
            + ", ".join(f"{n:,} values of {a}" for a, n in values.items())
            + f" ({n_lines:,} method × axes lines would be too many to read; "
            "tp-sweep query --group-by has them all)"
        )
    return {"lines": lines, "note": note, "split_by": axes if split else []}


def search_data(store: StoreReader, sweep: str, search_spec: dict[str, Any]) -> dict[str, Any]:
    """The best trial per cell (`query --best`) and every trial's parameters and value."""
    cells = search_summary(store, sweep)
    trials = search_trials(store, sweep, most=MAX_TRIALS)
    params = search_spec.get("params") or {}
    return {
        "metric": search_spec.get("metric", "test_acc"),
        "direction": search_spec.get("direction", "maximize"),
        "params": {k: (v.get("type") if isinstance(v, dict) else None) for k, v in params.items()},
        "cells": cells,
        "trials": trials,
        "trials_cut": len(trials) >= MAX_TRIALS,
    }
