"""`tp-sweep report SWEEP`: the sweep as one self-contained HTML file, to mail or open offline.

What is in it: the sweep (spec, run states, device-hours used and still planned, provenance as far
as the store records it), accuracy against sparsity per method (mean ± std band over seeds, dense
as a reference line; hover names the method, target, achieved sparsity, n and the level ids;
methods toggle in the legend; linear sparsity or log density), the table of `query --group-by
method,sparsity`, learning curves (test accuracy by epoch across the levels of one run per
method; a level several of those runs share, such as dense's level 0 and IMP's, is drawn once and
named after each of them), what went wrong (failed, lost and retried jobs with their messages)
and, for a search, the best trial per cell and each parameter against the metric. A method has
one colour in every chart (method_colors).

Size: everything is aggregated (a trace per method, never per run; lists are capped), so the page
is the charting library plus tens of kilobytes whatever the sweep's size. The library is plotly's
own bundle (plotly.min.js from the plotly wheel, 4.8 MB): inlined gzip-compressed and base64
encoded (2.0 MB) and decompressed by the browser's built-in DecompressionStream, so a 10,000-run
report stays near 2 MB (BENCHMARKS.md). No network at all: no CDN, no font, nothing fetched.

Safety: every text that comes from the store (names, axes, messages, the spec) is HTML-escaped
where the page shows it; the data the scripts read is JSON inside a non-executed script element,
with <, > and & escaped, and reaches the page only through textContent or plotly text escaped
again in the script. Messages are cut at MAX_MESSAGE characters.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import html
import json
import math
import statistics
from typing import Any

from core.errors import UserError
from db.reader import STATE_ORDER

MAX_MESSAGE = 2000  # characters of a job's message shown (the rest: `tp-sweep status RUN`)
MAX_EVENT_MESSAGE = 300  # characters of a state change's message
MAX_IDS = 6  # level ids named in one hover, then "+N more"
MAX_LINES = 12  # accuracy lines (method x other axes) before averaging over the axes
MAX_TROUBLE = 200  # jobs listed under "what went wrong"
MAX_EVENTS = 10  # their last state changes shown
MAX_TRIALS = 5000  # search trials plotted
STATE_COLOR = {
    "COMPLETED": "#2ca02c",
    "RUNNING": "#17becf",
    "PENDING": "#1f77b4",
    "PLANNED": "#888",
    "FAILED": "#d62728",
    "LOST": "#d62728",
    "PREEMPTED": "#bcbd22",
    "TIMEOUT": "#bcbd22",
    "CANCELLED": "#9467bd",
    "PRUNED": "#7fbfbf",
}


# One colour per method in every chart (accuracy, learning curves, search): dense's is the
# reference line's dark grey, the others plotly's palette in the order of their names.
DENSE_COLOR = "#333333"
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def method_colors(methods: Any) -> dict[str, str]:
    others = sorted(set(methods) - {"dense"})
    return {"dense": DENSE_COLOR, **{m: PALETTE[i % len(PALETTE)] for i, m in enumerate(others)}}


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


class ReportError(UserError, ValueError):
    """No such sweep (the CLI's exit 2)."""


# ---- collecting ----------------------------------------------------------------------------------
def collect(store: Any, sweep: str) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able data, read from the store (as recorded: no
    scheduler is asked; `tp-sweep status` reconciles first)."""
    from db.provenance import provenance  # SQLAlchemy (0.3 s)
    from db.queries import RESULT_KEYS, QueryError, grid_results, group, run_curves  # SQLAlchemy (0.3 s)
    from db.summaries import sweep_status  # SQLAlchemy (0.3 s)
    from db.trouble import job_trouble  # SQLAlchemy (0.3 s)

    row = store.get_sweep(sweep)
    if row is None:
        names = store.sweep_names()
        raise ReportError(
            f"no sweep named {sweep!r} in {store.display_url}"
            + (f" (sweeps: {', '.join(names)})" if names else "")
        )
    spec = row.spec if isinstance(row.spec, dict) else {}
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
    data: dict[str, Any] = {
        "sweep": sweep,
        "generated_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "store": store.display_url,
        "spec": spec,
        "runs": len(runs),
        "counts": counts,
        "by_method": {
            m: dict(sorted(c.items(), key=lambda kv: order.get(kv[0], 99))) for m, c in sorted(by_method.items())
        },
        "totals": totals.as_dict(),
        "grid_points": len(rows),
        "finished_points": sum(1 for r in rows if r["test_acc"] is not None),
        "axes": axes,
        "accuracy": accuracy_lines(rows, axes),
        "table": group(rows, ["method", "sparsity"]) if rows else [],
        "curves": [
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
        ],
        "trouble": _cut_messages(job_trouble(store, sweep, most=MAX_TROUBLE, events_per_job=MAX_EVENTS)),
        "provenance": provenance(store, sweep),
        "search": None,
    }
    mark_shared_levels(data["curves"])
    if spec.get("search"):
        data["search"] = search_data(store, sweep, spec["search"])
    searched = [t["method"] for t in data["search"]["trials"]] if data["search"] else []
    data["colors"] = method_colors([r.method for r in runs] + [r["method"] for r in rows] + searched)
    return data


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


def accuracy_lines(rows: list[dict[str, Any]], axes: list[str]) -> dict[str, Any]:
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


def search_data(store: Any, sweep: str, search_spec: dict[str, Any]) -> dict[str, Any]:
    """The best trial per cell (`query --best`) and every trial's parameters and value."""
    from orchestrator.search.studies import search_summary, search_trials  # Optuna (about a second)

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


# ---- the page --------------------------------------------------------------------------------
def plotly_bundle() -> tuple[str, str]:
    """(base64 of gzip-compressed plotly.min.js, plotly's version), from the installed wheel."""
    from importlib import metadata, resources  # importlib.metadata (a few ms): only for the bundle

    raw = (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    return base64.b64encode(gzip.compress(raw, 6, mtime=0)).decode("ascii"), metadata.version("plotly")


def _clean(obj: Any) -> Any:
    """JSON-able, with NaN and infinities as null (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def script_json(obj: Any) -> str:
    """JSON safe inside <script type="application/json">: no </script>, no <!--, no & entities."""
    text = json.dumps(_clean(obj), ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.2f}"


def _mean_std(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 2) -> str:
    if mean is None:
        return "–"
    return f"{mean * scale:.{digits}f} ± {(std or 0.0) * scale:.{digits}f}"


def _hours(x: float | None) -> str:
    return "–" if x is None else f"{x:,.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    d, h, m = s // 86400, s // 3600 % 24, s // 60 % 60
    return f"{d}d {h}h" if d else f"{h}h {m}m" if h else f"{m}m {s % 60}s" if m else f"{s}s"


def _message(text: str | None, chars: int) -> str:
    if not text:
        return ""
    if chars <= len(text):
        return f"<pre class=msg>{e(text)}</pre>"
    return (
        f"<pre class=msg>{e(text)}</pre><p class=dim>… {chars - len(text):,} more "
        "characters (tp-sweep status RUN_ID --format json has the whole message)</p>"
    )


def _state(s: str) -> str:
    return f'<span class=st style="color:{STATE_COLOR.get(s, "#444")}">{e(s)}</span>'


def _table(head: list[str], body: list[list[str]], cls: str = "") -> str:
    """Cells are HTML already (escaped by the caller)."""
    h = "".join(f"<th>{c}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
    return f"<table class='{cls}'><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def _summary_html(d: dict[str, Any]) -> str:
    t = d["totals"]
    states = " · ".join(f"{_state(s)} {n:,}" for s, n in d["counts"].items()) or "no runs"
    share = f" ({100 * t['levels_done'] / t['levels_total']:.0f} %)" if t["levels_total"] else ""
    dev = t["device"]
    by_method = _table(
        ["method", *[e(s) for s in STATE_ORDER if any(s in c for c in d["by_method"].values())], "runs"],
        [
            [
                e(m),
                *[
                    f"{c.get(s, 0):,}" if c.get(s) else "–"
                    for s in STATE_ORDER
                    if any(s in cc for cc in d["by_method"].values())
                ],
                f"{sum(c.values()):,}",
            ]
            for m, c in d["by_method"].items()
        ],
        "num",
    )
    return (
        f"<p><b>{d['runs']:,} runs</b>: {states}</p>"
        f"<p>levels {t['levels_done']:,} / {t['levels_total']:,} finished{share} · "
        f"grid points with a result {d['finished_points']:,} / {d['grid_points']:,} · "
        f"elapsed {_duration(t['elapsed_s'])}</p>"
        f"<p>{e(dev)}-hours <b>{_hours(t['device_hours_used'])}</b> used, "
        f"<b>{_hours(t['device_hours_left'])}</b> still planned · {t['devices_per_job']} "
        f"{e(dev)}{'s' if t['devices_per_job'] != 1 else ''} a job"
        + (f" · {t['epoch_s']:.1f} s an epoch" if t["epoch_s"] is not None else "")
        + f" · epochs {t['epochs_done']:,} done"
        + (f", {t['epochs_left']:,} to go" if t["epochs_left"] is not None else "")
        + "</p>"
        + "<h3>Runs by method and state</h3>"
        + by_method
    )


def _results_table_html(d: dict[str, Any]) -> str:
    rows = d["table"]
    if not rows:
        return "<p class=dim>no grid points</p>"
    body = [
        [
            e(r["method"]),
            f"{r['sparsity']:g}",
            _mean_std(r["test_acc_mean"], r["test_acc_std"]),
            _mean_std(r["best_test_acc_mean"], r["best_test_acc_std"]),
            _mean_std(r["achieved_sparsity_mean"], r["achieved_sparsity_std"], 1.0, 4),
            f"{r['n']:,}",
            f"{r['runs']:,}",
        ]
        for r in rows
    ]
    return _table(
        ["method", "sparsity", "test_acc (%)", "best_test_acc (%)", "achieved sparsity", "n", "runs"], body, "num"
    )


def _trouble_html(d: dict[str, Any]) -> str:
    t = d["trouble"]
    if not t["total"]:
        return (
            "<p>Nothing: no job of this sweep failed, was lost, timed out, was preempted or cancelled, "
            "or needed a retry.</p>"
        )
    what = ", ".join(f"{_state(s)} {n:,}" for s, n in t["counts"].items())
    head = (
        f"<p>{t['total']:,} jobs: {what or 'none in a bad state'}; {t['retried']:,} retried "
        "(more than one attempt)."
        + (f" The first {t['shown']:,} are listed, worst first." if t["shown"] < t["total"] else "")
        + "</p>"
    )
    body = []
    for j in t["jobs"]:
        runs = ", ".join(
            f"{e(r['method'])} s{e(r['seed'])} <code>{e(r['run_id'][:8])}</code>" for r in j["runs"][:5]
        )
        if len(j["runs"]) > 5:
            runs += f" +{len(j['runs']) - 5} more"
        evs = "".join(
            f"<li>{e(ev['at'])} {e(ev['from'] or '')} → {e(ev['to'])}"
            + (f" <code>{e(ev['sched_id'])}</code>" if ev["sched_id"] else "")
            + (f": {e(ev['message'])}" if ev["message"] else "")
            + (
                f" … ({ev['message_chars'] - len(ev['message']):,} more characters)"
                if ev["message"] and ev["message_chars"] > len(ev["message"])
                else ""
            )
            + "</li>"
            for ev in j["events"]
        )
        older = j["events_total"] - len(j["events"])
        trail = (
            f"<details><summary>{j['events_total']} state changes</summary>"
            + (f"<p class=dim>{older} older not shown</p>" if older else "")
            + f"<ul>{evs}</ul></details>"
        )
        body.append(
            [
                f"<code>{e(j['job'][:8])}</code>",
                e(j["sched_id"] or "–"),
                _state(j["state"]),
                f"{j['attempts']}",
                runs,
                _message(j["message"], j["message_chars"]) + trail,
            ]
        )
    return head + _table(
        ["job", "scheduler id", "state", "attempts", "runs", "message, state changes"], body, "trouble"
    )


def _search_html(d: dict[str, Any]) -> str:
    s = d["search"]
    if s is None:
        return ""
    body = []
    for c in s["cells"]:
        params = ", ".join(f"{e(k)}={e(_short(v))}" for k, v in (c.get("best_params") or {}).items())
        axes = " ".join(f"{e(k)}={e(v)}" for k, v in (c.get("axes") or {}).items())
        body.append(
            [
                e(c["method"]),
                f"{c['sparsity']:g}",
                e(c["seed"]),
                axes,
                f"{c['trials']}",
                f"{c.get('complete', 0)}",
                f"{c.get('fail', 0)}",
                f"{c.get('pruned', 0)}",
                "–" if c.get("best_value") is None else f"{c['best_value']:.4f}",
                params,
                f"<code>{e((c.get('best_run_id') or '')[:8])}</code>",
            ]
        )
    table = _table(
        [
            "method",
            "sparsity",
            "seed",
            "axes",
            "trials",
            "complete",
            "failed",
            "pruned",
            f"best {e(s['metric'])}",
            "best parameters",
            "run",
        ],
        body,
        "num",
    )
    cut = "<p class=dim>only the first trials are plotted</p>" if s["trials_cut"] else ""
    return (
        f"<section id=search><h2>Search: the best trial per cell</h2><p>{e(s['direction'])} "
        f"{e(s['metric'])} of the level serving each cell's target.</p>{table}"
        f"<h3>Each parameter against {e(s['metric'])}</h3>{cut}<div id=search-plots></div></section>"
    )


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _provenance_html(d: dict[str, Any], plotly_version: str) -> str:
    from core import version  # importlib.metadata (a few ms): only for the page's footer

    p = d["provenance"]
    hosts = (
        ", ".join(
            f"{e(h['host'] or '?')} ({h['attempts']:,} attempts, {h['world_size'] or '?'} ranks)"
            for h in p["hosts"]
        )
        or "no attempt recorded yet"
    )
    if p["hosts_total"] > len(p["hosts"]):
        hosts += f", and {p['hosts_total'] - len(p['hosts']):,} more hosts"
    if p["level_provenance"] is None:
        code = "not recorded by this store (no per-level provenance in its schema)"
    else:
        code = (
            "<ul>"
            + "".join(
                f"<li><code>{e(x['provenance'])}</code>: {x['levels']:,} levels</li>"
                for x in p["level_provenance"]
            )
            + "</ul>"
        )
    return (
        f"<dl><dt>sweep recorded</dt><dd>{e(p['created_at'])} UTC, executor {e(p['executor'])}</dd>"
        f"<dt>output folder</dt><dd><code>{e(p['output_dir'])}</code></dd>"
        f"<dt>store</dt><dd><code>{e(d['store'])}</code></dd>"
        f"<dt>ran on</dt><dd>{hosts}</dd>"
        f"<dt>code per level</dt><dd>{code}</dd>"
        f"<dt>this report</dt><dd>{e(d['generated_at'])}, turboprune {e(version())}, plotly.js from "
        f"plotly {e(plotly_version)}; states as recorded in the store "
        "(tp-sweep status asks the scheduler first)</dd></dl>"
    )


def render(d: dict[str, Any]) -> str:
    """The page: tables in HTML (readable without scripts), charts drawn by plotly.js from the
    embedded data."""
    import yaml  # YAML (0.015 s): only to print the spec

    bundle, plotly_version = plotly_bundle()
    spec_text = yaml.safe_dump(_clean(d["spec"]), sort_keys=False, allow_unicode=False, width=100)
    acc = d["accuracy"]
    no_result = d["finished_points"] == 0
    acc_html = (
        "<p class=warn>No grid point has a result yet: nothing to plot.</p>"
        if no_result
        else "<div class=switch role=radiogroup aria-label='x axis'>x axis: "
        "<label><input type=radio name=xmode value=linear checked id=x-linear> sparsity (linear)</label> "
        "<label><input type=radio name=xmode value=log id=x-log> % of weights remaining (log)</label>"
        "</div><div id=acc-plot class=plot></div>"
        + (f"<p class=dim>{e(acc['note'])}</p>" if acc["note"] else "")
        + "<p class=dim>Band: mean ± std over seeds; dense: the dashed line. Click a method in "
        "the legend to hide it, double-click to show it alone.</p>"
    )
    curves_html = (
        "<p class=dim>No epoch recorded yet.</p>"
        if not any(lv["epochs"] for c in d["curves"] for lv in c["levels"])
        else "<div id=curve-plot class=plot></div><p class=dim>One run per method (the one with the "
        "most finished levels, then the lowest seed): every epoch of its levels in training "
        "order; gaps separate levels.</p>"
    )
    title = f"turboprune report: {d['sweep']}"
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{e(title)}</title>
<style>
{asset("report.css")}</style></head>
<body>
<header><h1>Sweep <span class=name>{e(d["sweep"])}</span></h1>
<p class=dim>generated {e(d["generated_at"])} from <code>{e(d["store"])}</code></p>
<p id=tp-js-status class=dim>drawing the charts…</p></header>
<section id=summary><h2>Where it stands</h2>{_summary_html(d)}</section>
<section id=accuracy><h2>Accuracy against sparsity</h2>{acc_html}</section>
<section id=results><h2>Results by method and sparsity</h2>
<p class=dim>tp-sweep query {e(d["sweep"])} --group-by method,sparsity: mean ± std over the finished
grid points (n of runs).</p>
{_results_table_html(d)}</section>
<section id=curves><h2>Learning curves</h2>{curves_html}</section>
<section id=trouble><h2>What went wrong</h2>{_trouble_html(d)}</section>
{_search_html(d)}
<section id=spec><h2>Spec</h2><details><summary>the sweep's spec as recorded</summary>
<pre>{e(spec_text)}</pre></details></section>
<section id=provenance><h2>Provenance</h2>{_provenance_html(d, plotly_version)}</section>
<script type="application/json" id=tp-data>{script_json(_payload(d))}</script>
<script type="text/plain" id=tp-plotly-gz>{bundle}</script>
<script>
{asset("report.js")}</script>
</body></html>
"""


def _payload(d: dict[str, Any]) -> dict[str, Any]:
    """The data embedded for the scripts (and for anyone who reads the file): all of it but the
    jobs' state changes, which the page shows as HTML only."""
    t = d["trouble"]
    jobs = [
        {**{k: v for k, v in j.items() if k not in ("events", "runs")}, "runs": j["runs"][:5]} for j in t["jobs"]
    ]
    return {**d, "trouble": {**t, "jobs": jobs}}


def build(store: Any, sweep: str) -> str:
    return render(collect(store, sweep))


# No network at all: nothing may be fetched, whatever a message or a name in the page holds.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval' blob:; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src blob: data:"
)


def asset(name: str) -> str:
    """A file of report_assets/, shipped as package data: the page's CSS, and its script, which
    decompresses plotly.js (DecompressionStream), runs it and draws from #tp-data."""
    from importlib import resources  # a few ms: only when a page is built

    return (resources.files("cli.render") / "report_assets" / name).read_text(encoding="utf-8")
