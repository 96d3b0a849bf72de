"""`tp-sweep`: launch, status, resume, cancel, query, plot, data, db, cluster.

Imports stay lazy: --help, status, query, cancel and launch --dry-run never import torch.
Exit status: 0 success, 1 a run or check failed, 2 bad input (nothing submitted or changed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from contextlib import nullcontext

from rich.console import Console

from orchestrator.progress import LaunchProgress, wait_until_idle

console = Console()
err = Console(stderr=True)


class BadInput(Exception):
    """Reported as `error: ...` with exit status 2."""


def _error(msg: str) -> None:
    from rich.markup import escape

    err.print(f"[red]error:[/] {escape(msg)}", highlight=False)


def _store(url: str | None, spec_url: str | None = None):
    from db.store import Store, StoreError, resolve_url

    try:
        return Store(resolve_url(url, spec_url))
    except StoreError as exc:
        raise BadInput(str(exc)) from None


# ---- launch ------------------------------------------------------------------------------------
def cmd_launch(a: argparse.Namespace) -> int:
    from orchestrator.controller import SubmitError, launch
    from orchestrator.plan import plan_sweep
    from orchestrator.spec import SpecError, load_spec
    from trainer.config import load_yaml

    try:
        spec = load_spec(a.spec)
        plan = plan_sweep(spec)
    except (SpecError, ValueError) as exc:
        raise BadInput(str(exc)) from None
    kind = a.executor or spec.executor.kind
    counts = plan.counts()
    if a.dry_run:
        if a.format == "json":
            print(json.dumps({"sweep": spec.name, **counts}))
        else:
            console.print(f"sweep [bold]{spec.name}[/]: {counts['grid_points']} grid points -> "
                          f"{counts['runs']} runs, {counts['level_trainings']} level trainings "
                          f"({counts['naive_level_trainings']} naive), {counts['epochs']} epochs "
                          f"({counts['naive_epochs']} naive); executor {kind}. Nothing submitted.")
        return 0
    from orchestrator.preflight import PreflightError, check_plan

    try:
        check_plan(plan)
    except PreflightError as exc:
        raise BadInput(f"{a.spec}: {exc}") from None
    store = _store(a.db, spec.db)
    spec_dict = load_yaml(open(a.spec).read())
    console.print(f"sweep [bold]{spec.name}[/]: {counts['runs']} runs "
                  f"({counts['level_trainings']} level trainings) -> {kind}, store {store.display_url}")
    progress = LaunchProgress(store, spec.name, console) if kind in ("local", "debug") else None
    try:
        with progress or nullcontext():
            res = launch(store, plan, spec_dict, kind, on_progress=progress.update if progress else None)
    except SubmitError as exc:
        _error(str(exc))
        return 1
    if not res.submitted:
        left = ", ".join(f"{n} {s}" for s, n in res.skipped.items())
        console.print(f"nothing to submit: every run is done or running ({left})")
    else:
        console.print(f"submitted {len(res.submitted)} runs"
                      + (f"; left alone: {res.skipped}" if res.skipped else ""))
    if kind == "slurm" and a.wait:
        wait_until_idle(store, spec.name, console)
    return _show_status(store, spec.name, "table", progress is not None or a.wait)


# ---- status ------------------------------------------------------------------------------------
def _show_status(store, target: str, fmt: str, show_results: bool = True) -> int:
    from db.queries import grid_results
    from db.store import level_summary
    from orchestrator import render
    from orchestrator.controller import reconcile

    runs = store.sweep_runs(target)
    if not runs:
        found = store.find_runs(target)
        if len(found) == 1:
            return _show_run(store, found[0], fmt)
        raise BadInput(f"no sweep or run {target!r} in {store.display_url}"
                       + (f" (sweeps: {', '.join(store.sweep_names())})" if store.sweep_names() else ""))
    runs = reconcile(store, runs)
    done, last = level_summary(store, [r.run_id for r in runs])
    if fmt == "json":
        print(json.dumps(render.status_json(target, runs, done)))
    else:
        console.print(render.status_table(target, runs, done, last))
        if show_results:
            table = render.accuracy_table(target, grid_results(store, target))
            if table is not None:
                console.print(table)
    bad = [r for r in runs if r.state in ("FAILED", "LOST")]
    return 1 if bad else 0


def _show_run(store, run, fmt: str) -> int:
    from orchestrator.render import rows_table

    levels = [{"level": lv.level, "density": lv.density, "achieved_sparsity": lv.achieved_sparsity,
               "test_acc": lv.test_acc, "best_test_acc": lv.best_test_acc, "epochs": lv.epochs,
               "seconds": lv.seconds} for lv in store.levels(run.run_id)]
    events = [{"at": e.at.isoformat(timespec="seconds"), "from": e.state_from, "to": e.state_to,
               "job": e.job_id, "message": e.message} for e in store.events(run.run_id)]
    if fmt == "json":
        print(json.dumps({"run_id": run.run_id, "state": run.state, "method": run.method,
                          "seed": run.seed, "sparsities": run.sparsities, "run_dir": run.run_dir,
                          "job_id": run.job_id, "attempts": run.attempts, "levels": levels,
                          "events": events}))
        return 0
    console.print(f"run [bold]{run.run_id}[/] {run.method} seed {run.seed} -> {run.state}; "
                  f"dir {run.run_dir}; job {run.job_id}; attempts {run.attempts}")
    console.print(rows_table(levels, "levels"))
    console.print(rows_table(events, "events"))
    return 1 if run.state in ("FAILED", "LOST") else 0


def cmd_status(a: argparse.Namespace) -> int:
    store = _store(a.db)
    if a.target is None:
        names = store.sweep_names()
        if not names:
            console.print(f"no sweeps in {store.display_url}")
            return 0
        if a.format == "json":
            from orchestrator.render import counts
            print(json.dumps([{"sweep": n, "counts": counts(store.sweep_runs(n))} for n in names]))
            return 0
        for n in names:
            from orchestrator.render import counts
            console.print(f"[bold]{n}[/]: " + ", ".join(f"{s} {c}" for s, c in counts(store.sweep_runs(n)).items()))
        return 0
    if not a.watch:
        return _show_status(store, a.target, a.format)
    try:
        while True:
            console.clear()
            _show_status(store, a.target, a.format)
            time.sleep(a.interval)
    except KeyboardInterrupt:
        return 0


# ---- resume / cancel ---------------------------------------------------------------------------
def cmd_resume(a: argparse.Namespace) -> int:
    from orchestrator.controller import SubmitError, resume, stored_spec

    store = _store(a.db)
    try:
        kind = a.executor or stored_spec(store, a.sweep).executor.kind
    except LookupError as exc:
        raise BadInput(str(exc)) from None
    progress = LaunchProgress(store, a.sweep, console) if kind in ("local", "debug") else None
    try:
        with progress or nullcontext():
            res = resume(store, a.sweep, a.include_failed, kind, progress.update if progress else None)
    except SubmitError as exc:
        _error(str(exc))
        return 1
    if not res.submitted:
        console.print(f"nothing to resume ({', '.join(f'{n} {s}' for s, n in res.skipped.items())})")
    else:
        console.print(f"resubmitted {len(res.submitted)} runs from their last checkpoints")
    return _show_status(store, a.sweep, "table", progress is not None)


def cmd_cancel(a: argparse.Namespace) -> int:
    from orchestrator.controller import cancel

    store = _store(a.db)
    runs = store.sweep_runs(a.target) or store.find_runs(a.target)
    if not runs:
        raise BadInput(f"no sweep or run {a.target!r} in {store.display_url}")
    done = cancel(store, runs)
    console.print(f"cancelled {len(done)} runs" + (f": {', '.join(r[:10] for r in done)}" if done else ""))
    return 0


# ---- query / plot ------------------------------------------------------------------------------
def _query_rows(store, a: argparse.Namespace) -> list[dict[str, Any]]:
    from db.queries import QueryError, compile_where, grid_results, group

    try:
        rows = grid_results(store, a.sweep, levels=getattr(a, "levels", False))
        if getattr(a, "where", None):
            match = compile_where(a.where)
            rows = [r for r in rows if match(r)]
        if getattr(a, "group_by", None):
            rows = group(rows, [c.strip() for c in a.group_by.split(",") if c.strip()])
    except QueryError as exc:
        raise BadInput(str(exc)) from None
    return rows


def cmd_query(a: argparse.Namespace) -> int:
    from orchestrator.render import rows_table

    rows = _query_rows(_store(a.db), a)
    if a.format == "json":
        print(json.dumps(rows))
    elif a.format == "csv":
        import csv

        if rows:
            w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        console.print(rows_table(rows, f"{a.sweep}: {len(rows)} rows"))
    return 0


def cmd_plot(a: argparse.Namespace) -> int:
    from orchestrator.plot import plot_accuracy

    store = _store(a.db)
    a.levels, a.where, a.group_by = False, None, None
    rows = _query_rows(store, a)
    if not any(r.get(a.metric) is not None for r in rows):
        raise BadInput(f"sweep {a.sweep!r} has no finished {a.metric} yet")
    out = a.out or f"{a.sweep}_{a.metric}.png"
    plot_accuracy(rows, a.metric, out, title=a.sweep)
    console.print(f"wrote {out}")
    return 0


# ---- data / db / cluster -----------------------------------------------------------------------
def cmd_db(a: argparse.Namespace) -> int:
    from db import migrate
    from db.store import Store, StoreError, resolve_url

    url = resolve_url(a.db)
    try:
        store = Store(url, migrate_schema=False)
        before, after = migrate.upgrade(store.engine)
    except StoreError as exc:
        raise BadInput(str(exc)) from None
    console.print(f"{store.display_url}: schema {before or 'empty'} -> {after}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tp-sweep", description="Lottery-ticket pruning sweeps on Slurm.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def with_db(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--db", help="results store URL (else TP_DB_URL, the spec's db:, "
                                     "sqlite:///tp-results.db)")
        return sp

    sp = with_db(sub.add_parser("launch", help="validate, plan, record and submit a sweep spec"))
    sp.add_argument("spec")
    sp.add_argument("--dry-run", action="store_true", help="validate and plan only")
    sp.add_argument("--executor", choices=["local", "slurm", "debug"])
    sp.add_argument("--format", choices=["table", "json"], default="table")
    sp.add_argument("--wait", action="store_true", help="slurm: wait until no run is active")
    sp.set_defaults(fn=cmd_launch)

    sp = with_db(sub.add_parser("status", help="where every run stands"))
    sp.add_argument("target", nargs="?", metavar="SWEEP|RUN_ID")
    sp.add_argument("--watch", action="store_true")
    sp.add_argument("--interval", type=float, default=5.0)
    sp.add_argument("--format", choices=["table", "json"], default="table")
    sp.set_defaults(fn=cmd_status)

    sp = with_db(sub.add_parser("resume", help="resubmit preempted, timed-out and lost runs"))
    sp.add_argument("sweep")
    sp.add_argument("--include-failed", action="store_true", help="also failed and cancelled runs")
    sp.add_argument("--executor", choices=["local", "slurm", "debug"])
    sp.set_defaults(fn=cmd_resume)

    sp = with_db(sub.add_parser("cancel", help="cancel a sweep's or one run's jobs"))
    sp.add_argument("target", metavar="SWEEP|RUN_ID")
    sp.set_defaults(fn=cmd_cancel)

    sp = with_db(sub.add_parser("query", help="results, one row per grid point"))
    sp.add_argument("sweep")
    sp.add_argument("--where", help="e.g. \"method == 'imp' and sparsity >= 0.8\"")
    sp.add_argument("--group-by", help="comma-separated columns; mean/std/n over the rest")
    sp.add_argument("--levels", action="store_true", help="one row per level of every run")
    sp.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sp.set_defaults(fn=cmd_query)

    sp = with_db(sub.add_parser("plot", help="accuracy against sparsity, a line per method"))
    sp.add_argument("sweep")
    sp.add_argument("--metric", default="test_acc", choices=["test_acc", "best_test_acc", "test_top5"])
    sp.add_argument("--out", help="PNG path (default SWEEP_METRIC.png)")
    sp.set_defaults(fn=cmd_plot)

    sp = with_db(sub.add_parser("db", help="schema migrations"))
    sp.add_argument("action", choices=["upgrade"])
    sp.set_defaults(fn=cmd_db)

    # `data` and `cluster` belong to their own modules (argparse there); main() hands them over.
    sub.add_parser("data", help="build FFCV files: tp-sweep data write --from KIND SRC --out F.beton")
    sub.add_parser("cluster", help="a real Slurm cluster on this machine: up | down | status")
    return p


DELEGATED = {"data": "trainer.data.write", "cluster": "slurm.dev.cluster"}


def _delegate(cmd: str, argv: list[str]) -> int:
    import importlib

    if cmd == "data":
        if argv[:1] != ["write"]:
            raise BadInput("usage: tp-sweep data write --from imagefolder|cifar|digits|synthetic "
                           "SRC --out FILE.beton [options]   (tp-sweep data write --help)")
        argv = argv[1:]
    return int(importlib.import_module(DELEGATED[cmd]).main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] and argv[0] in DELEGATED:
            return _delegate(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.fn(args) or 0)
    except BadInput as exc:
        _error(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
