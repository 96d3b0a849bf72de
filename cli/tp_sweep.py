"""`tp-sweep`: launch, supervise, status, resume, cancel, query, plot, report, data, db, cluster.

Imports stay lazy: --help, status, query, cancel and launch --dry-run never import torch.
Exit status: 0 success, 1 a run or check failed, 2 bad input (nothing submitted or changed).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import sys
from typing import Any

from cli.common import (
    console,
    fail,
    json_text,
    report_bad_files,
    report_bad_levels,
    settle,
    settled,
    warn,
)
from cli.common import error as _error
from cli.render.tables import show
from cli.status import show_status, status_output, watch, watch_json
from core import version
from core.errors import TurboPruneError
from orchestrator.operations.stores import open_reader


# ---- launch / supervise: loaded when asked for (YAML and the planner's tables: 0.04 s of every
# other command, a tenth of a 10,000-run status) -------------------------------------------------
def cmd_launch(a: argparse.Namespace) -> int:
    from cli.launch import cmd_launch as launch  # the planner, the store: not for --help or status

    return launch(a)


def cmd_supervise(a: argparse.Namespace) -> int:
    from cli.supervise import cmd_supervise as supervise  # the same

    return supervise(a)


# ---- status ------------------------------------------------------------------------------------
def cmd_status(a: argparse.Namespace) -> int:
    store = open_reader(a.db, target=a.target, runs=True)
    if a.target is None:
        from orchestrator.operations.status import list_sweeps  # the store's summaries: SQLAlchemy, 0.3 s

        listing = list_sweeps(store)
        if not listing.sweeps:
            console.print(f"no sweeps in {listing.display_url}")
            return 0
        settle(0)
        if a.format == "json":
            print(json_text([{"sweep": s.sweep, "counts": s.counts} for s in listing.sweeps]))
            return 0
        for s in listing.sweeps:
            console.print(f"[bold]{s.sweep}[/]: " + ", ".join(f"{st} {c}" for st, c in s.counts.items()))
        return 0
    if not a.watch:
        return show_status(store, a.target, a.format, show_all=a.all)
    if a.format == "json":  # one JSON document per refresh, one per line
        return watch_json(lambda: status_output(store, a.target, a.format), a.interval)

    status_output(store, a.target, a.format)  # a bad target is an error before the screen is taken
    return watch(console, lambda: status_output(store, a.target, a.format, show_all=a.all), a.interval)


# ---- resume / cancel ---------------------------------------------------------------------------
def cmd_resume(a: argparse.Namespace) -> int:
    from cli.progress import local_bar, search_bar  # rich's progress bars (0.025 s)
    from orchestrator.operations.resume import ResumeRequest, resume  # the controller: submitit's side

    out = resume(ResumeRequest(a.sweep, a.db, a.include_failed, a.executor, a.reuse), local_bar, search_bar)
    if out.driven_by is not None or out.search is not None:
        from cli.launch import say_driven, show_search_done  # only for a search

        if out.driven_by is not None:
            say_driven(a.sweep, out.driven_by)
            return 0
        assert out.search is not None
        return show_search_done(out.store, a.sweep, out.search.told)
    res = out.result
    assert res is not None  # not a search: the jobs were resubmitted
    for job, why in res.waiting.items():
        console.print(f"job {job} not submitted: {why}")
    if not res.submitted:
        console.print(f"nothing to resume ({', '.join(f'{n} {s}' for s, n in res.skipped.items())})")
    else:
        console.print(f"resubmitted {len(res.submitted)} jobs; they continue from their last checkpoints")
    code = show_status(out.store, a.sweep, "table", out.local)
    report_bad_levels(res.bad, "not used")
    return 1 if res.bad else code


def cmd_cancel(a: argparse.Namespace) -> int:
    from orchestrator.operations.cancel import cancel  # its imports wait until the target is found

    done = cancel(a.db, a.target).jobs
    console.print(f"cancelled {len(done)} jobs" + (f": {', '.join(done)}" if done else ""))
    return 0


# ---- query / plot ------------------------------------------------------------------------------
def cmd_query(a: argparse.Namespace) -> int:
    store = open_reader(a.db, target=a.sweep)  # first: an unknown sweep answers before the imports
    from cli.render.results import query_table  # the store's queries: SQLAlchemy, 0.25 s
    from orchestrator.operations.query import QueryRequest, best_trials, query  # SQLAlchemy, with it

    best = best_trials(store, a.sweep) if a.best else None
    if best is not None:
        rows = best.rows
    else:
        by = tuple(c.strip() for c in (a.group_by or "").split(",") if c.strip())
        rows = query(store, QueryRequest(a.sweep, a.where, by, a.levels), on_warning=warn).rows
    settle(0)  # found: a reader that stops early (`| head -1`) changes nothing
    if best is not None and a.format == "table":
        from cli.render.search import best_renderables  # rich: not for JSON

        show(console, best_renderables(a.sweep, best.cells, best.metric))
        return 0
    if a.format == "json":
        print(json_text(rows))
    elif a.format == "csv":
        rows = [{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in r.items()} for r in rows]
        if rows:
            w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:  # a level's whole provenance is for JSON; the table names its code and sources
        rows = [{k: v for k, v in r.items() if k != "provenance"} for r in rows]
        show(console, query_table(a.sweep, rows, console.width, levels=a.levels))
    return 0


def cmd_plot(a: argparse.Namespace) -> int:
    store = open_reader(a.db, target=a.sweep)  # first: an unknown sweep answers before matplotlib
    from cli.render.plot import FIELDS, plot_accuracy, unmeasured  # matplotlib (about a second)
    from orchestrator.operations.query import plot_rows  # SQLAlchemy (0.3 s), with the store

    rows = plot_rows(store, a.sweep, a.metric)
    missing = unmeasured(rows, a.metric, a.x)
    if missing:  # levels finished before the measure was recorded: left out, and said so
        named = ", ".join(
            f"{r['method']} {r['sparsity']:g} seed {r['seed']} level {r['level_id']}" for r in missing[:10]
        )
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        print(
            f"warning: {len(missing)} grid point(s) left out of the plot: their level has no {FIELDS[a.x]} "
            f"(finished before it was measured): {named}{more}",
            file=sys.stderr,
        )
    out = a.out or f"{a.sweep}_{a.metric}.png"
    plot_accuracy(rows, a.metric, out, title=a.sweep, x=a.x)
    console.print(f"wrote {out}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from cli.report import cmd_report as report  # the store and plotly's bundle: only for a report

    return report(a)


# ---- data / db / cluster -----------------------------------------------------------------------
def cmd_db(a: argparse.Namespace) -> int:
    from orchestrator.operations import store_admin  # SQLAlchemy, 0.3 s: only once asked

    if a.action == "import":
        done = store_admin.import_output(a.db, a.dir)
        n = done.counts
        console.print(
            f"{done.display_url}: imported {n['sweeps']} sweeps, {n['runs']} runs, "
            f"{n['levels']} levels ({n['finished']} finished) from {a.dir}",
            highlight=False,
        )
        report_bad_files(
            done.refused,
            f"{len(done.refused)} sweep record(s) failed their checks; nothing of them was imported:",
        )
        report_bad_levels(done.bad, "not imported")
        return 1 if done.bad or done.refused else 0
    up = store_admin.upgrade(a.db)
    console.print(f"{up.display_url}: schema {up.before or 'empty'} -> {up.after}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tp-sweep", description="Lottery-ticket pruning sweeps on Slurm.")
    p.add_argument("--version", action=_Version, help="print the version and exit")
    sub = p.add_subparsers(dest="cmd", required=True)

    def with_db(sp: argparse.ArgumentParser, spec: bool = False, **kw: Any) -> argparse.ArgumentParser:
        """--db, as db.requested_url resolves it; a spec's db: only where there is a spec."""
        sp.add_argument(
            "--db",
            metavar="URL",
            **kw,
            help="results store URL (else TP_DB_URL"
            + (", else the spec's db:" if spec else "")
            + ", else sqlite:///tp-results.db in the working directory)",
        )
        return sp

    sp = with_db(sub.add_parser("launch", help="validate, plan, record and submit a sweep spec"), spec=True)
    sp.add_argument("spec")
    sp.add_argument("--dry-run", action="store_true", help="validate and plan only")
    sp.add_argument("--executor", choices=["local", "slurm", "debug"])
    sp.add_argument("--format", choices=["table", "json"], default="table")
    sp.add_argument("--wait", action="store_true", help="slurm: wait until no run is active")
    sp.add_argument(
        "--supervise",
        action="store_true",
        help="start the sweep's supervisor: a Slurm job for Slurm sweeps (the launch "
        "returns at once), else in the foreground (also: a supervisor: block)",
    )
    sp.add_argument(
        "--reuse",
        choices=["same-code", "any"],
        help="same-code (default): a level trained by other code is trained again; any: "
        "reused, and launch says from which code (else the spec's reuse:)",
    )
    how = sp.add_mutually_exclusive_group()
    how.add_argument(
        "--extend",
        dest="mode",
        action="store_const",
        const="extend",
        help="the sweep of this name exists: add the spec's new runs even with other settings, "
        "keeping the sweep's runs as they are (a spec that only adds grid values needs no flag)",
    )
    how.add_argument(
        "--replace",
        dest="mode",
        action="store_const",
        const="replace",
        help="the sweep of this name exists: make it exactly this spec (the runs it drops keep "
        "their results in the store and on disk)",
    )
    sp.set_defaults(fn=cmd_launch, mode=None)

    sp = with_db(
        sub.add_parser(
            "supervise", help="the sweep's autopilot: reconcile, retry by policy, submit what fits, until done"
        )
    )
    sp.add_argument("sweep")
    sp.add_argument(
        "--poll-s", type=float, help="seconds between passes (default: the spec's supervisor.poll_s, 30)"
    )
    sp.add_argument("--once", action="store_true", help="one pass, then exit")
    sp.add_argument("--db-file", help="a file holding the store URL (what the supervisor job gets)")
    sp.add_argument("--in-slurm", action="store_true", help=argparse.SUPPRESS)
    sp.set_defaults(fn=cmd_supervise)

    sp = with_db(sub.add_parser("status", help="where every run stands"))
    sp.add_argument("target", nargs="?", metavar="SWEEP|RUN_ID")
    sp.add_argument(
        "--watch",
        action="store_true",
        help="refresh until every run is finished (or ^C): in place with a progress bar on a "
        "terminal, else a line each time the sweep moves, then the last status",
    )
    sp.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes")
    sp.add_argument("--all", action="store_true", help="list every run of a big sweep")
    sp.add_argument("--format", choices=["table", "json"], default="table")
    sp.set_defaults(fn=cmd_status)

    sp = with_db(sub.add_parser("resume", help="resubmit preempted, timed-out and lost runs"))
    sp.add_argument("sweep")
    sp.add_argument("--include-failed", action="store_true", help="also failed and cancelled runs")
    sp.add_argument("--executor", choices=["local", "slurm", "debug"])
    sp.add_argument(
        "--reuse",
        choices=["same-code", "any"],
        help="same-code: a level stopped mid-way by other code starts over instead of "
        "continuing from its checkpoint; any: it continues (else the launch's policy)",
    )
    sp.set_defaults(fn=cmd_resume)

    sp = with_db(sub.add_parser("cancel", help="cancel a sweep's or one run's jobs"))
    sp.add_argument("target", metavar="SWEEP|RUN_ID")
    sp.set_defaults(fn=cmd_cancel)

    sp = with_db(sub.add_parser("query", help="results, one row per grid point"))
    sp.add_argument("sweep")
    sp.add_argument(
        "--where",
        help="e.g. \"method == 'imp' and sparsity >= 0.8 and test_acc > 0.9\" (accuracies are fractions)",
    )
    sp.add_argument("--group-by", help="comma-separated columns; mean/std/n over the rest")
    sp.add_argument("--levels", action="store_true", help="one row per level of every run: trunk and branches")
    sp.add_argument("--best", action="store_true", help="sweeps with a search: the best trial per cell")
    sp.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sp.set_defaults(fn=cmd_query)

    sp = with_db(
        sub.add_parser("plot", help="accuracy against achieved sparsity (or density, FLOPs), a line per method")
    )
    sp.add_argument("sweep")
    sp.add_argument("--metric", default="test_acc", choices=["test_acc", "best_test_acc", "test_top5"])
    sp.add_argument("--out", help="PNG path (default SWEEP_METRIC.png)")
    sp.add_argument(
        "--x",
        default="sparsity",
        choices=["sparsity", "network", "density", "flops"],
        help="x axis: achieved sparsity of the prunable weights (default) or of the whole "
        "network, %% of weights remaining (log), or multiply-adds per example (log)",
    )
    sp.set_defaults(fn=cmd_plot)

    sp = with_db(sub.add_parser("report", help="the sweep as one self-contained HTML file (opens offline)"))
    sp.add_argument("sweep")
    sp.add_argument("--out", help="HTML path (default SWEEP-report.html here)")
    sp.set_defaults(fn=cmd_report)

    sp = with_db(
        sub.add_parser(
            "db",
            help="schema migrations; rebuild a store from an output folder",
            description="The results store: upgrade its schema, or rebuild it from an output folder.",
        )
    )
    below: dict[str, Any] = {"default": argparse.SUPPRESS}  # `db --db URL upgrade` keeps the URL given above
    actions = sp.add_subparsers(dest="action", required=True, metavar="{upgrade,import}")
    with_db(
        actions.add_parser(
            "upgrade",
            help="apply the schema migrations",
            description="Apply the store's schema migrations (Alembic), creating the store if there is "
            "none; every command also applies them on first use. Prints the schema before and after.",
        ),
        **below,
    )
    act = with_db(
        actions.add_parser(
            "import",
            help="rebuild a store from an output folder",
            description="Rebuild a store from a sweep's output folder: sweeps, runs, grid points, levels "
            "and every epoch. A level folder that fails its checks is named with its reason and "
            "skipped, and the command exits 1.",
        ),
        **below,
    )
    act.add_argument("dir", metavar="OUTPUT_DIR", help="the sweep's output_dir (holds levels/ and sweeps/)")
    sp.set_defaults(fn=cmd_db)

    # `data` and `cluster` belong to their own modules (argparse there); main() hands them over,
    # --help included.
    sub.add_parser(
        "data", help="build FFCV files: tp-sweep data write --from KIND SRC --out F.beton", add_help=False
    )
    sub.add_parser(
        "cluster",
        help="a real Slurm cluster on this machine: up | down | status; "
        "check [PROFILE]: a cluster profile against any cluster",
        add_help=False,
    )
    return p


# Commands with parsers of their own; each module imports nothing heavy until its arguments are good.
DELEGATED = ("data", "cluster")


def _delegate(cmd: str, argv: list[str]) -> int:
    if cmd == "data":
        from cli.data import main as data_main  # the beton writer's options, torch-free

        return int(data_main(argv) or 0)
    from cli.cluster import main as cluster_main  # the dev cluster and cluster profiles

    return int(cluster_main(argv) or 0)


class _Version(argparse.Action):
    """--version, worked out only when asked (importlib.metadata costs a few milliseconds)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"tp-sweep (turboprune) {version()}")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Reading a big sweep builds hundreds of thousands of rows that live until the output is
    # written and hold no cycles: the default threshold (700) ran a dozen fruitless collections
    # over them, 0.06 CPU-s of a 10,000-run status. Cycles are still collected, less often.
    gc.set_threshold(50_000, 20, 20)
    code: int | None = None
    try:
        if argv[:1] and argv[0] in DELEGATED:
            code = _delegate(argv[0], argv[1:])
        else:
            args = build_parser().parse_args(argv)
            code = int(args.fn(args) or 0)
        sys.stdout.flush()  # a reader that went away is found here, not in Python's exit
        return code
    except BrokenPipeError:
        # The reader of stdout went away (`query ... | head -1`): what is left to print goes to
        # devnull (Python's own flush at exit would fail again), and the command's status stands.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return settled() if code is None else code
    except TurboPruneError as exc:  # every error of ours, by its kind: 2 bad input, 1 a failure
        return fail(exc)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the store going away mid-command is an outage, not a bug
        outage = _store_outage(exc)
        if outage is None:
            raise
        _error(outage)
        return 1


def _store_outage(exc: BaseException) -> str | None:
    """A one-line message for a store that became unreachable or failed mid-command (SQL
    parameters are hidden by the engine, so nothing secret is in it); None for anything else.
    Our own StoreError is an OutageError, which main maps before it gets here."""
    import sqlalchemy as sa  # SQLAlchemy (0.3 s)

    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return (
            f"the results store became unreachable ({text[0] if text else type(exc).__name__}); "
            "nothing is lost: running jobs keep their results on disk and in their write "
            "queues, and the next launch, status or resume picks them up"
        )
    return None


if __name__ == "__main__":
    sys.exit(main())
