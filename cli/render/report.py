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
again in the script. Messages are cut (orchestrator.operations.report.MAX_MESSAGE).

What the page shows is read by orchestrator.operations.report (SweepReport); this module only
turns it into HTML, with the script and CSS of report_assets/ (package data).
"""

from __future__ import annotations

import base64
import gzip
from typing import TYPE_CHECKING, Any

from cli.render.html_parts import (
    clean,
    duration,
    e,
    hours,
    mean_std,
    message_html,
    script_json,
    state_html,
    table_html,
)
from db.reader import STATE_ORDER

if TYPE_CHECKING:
    from orchestrator.operations.report import SweepReport

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


# ---- the page --------------------------------------------------------------------------------
def plotly_bundle() -> tuple[str, str]:
    """(base64 of gzip-compressed plotly.min.js, plotly's version), from the installed wheel."""
    from importlib import metadata, resources  # importlib.metadata (a few ms): only for the bundle

    raw = (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    return base64.b64encode(gzip.compress(raw, 6, mtime=0)).decode("ascii"), metadata.version("plotly")


def _summary_html(report: SweepReport) -> str:
    t = report.totals
    states = " · ".join(f"{state_html(s)} {n:,}" for s, n in report.counts.items()) or "no runs"
    share = f" ({100 * t['levels_done'] / t['levels_total']:.0f} %)" if t["levels_total"] else ""
    dev = t["device"]
    by_method = table_html(
        ["method", *[e(s) for s in STATE_ORDER if any(s in c for c in report.by_method.values())], "runs"],
        [
            [
                e(m),
                *[
                    f"{c.get(s, 0):,}" if c.get(s) else "–"
                    for s in STATE_ORDER
                    if any(s in cc for cc in report.by_method.values())
                ],
                f"{sum(c.values()):,}",
            ]
            for m, c in report.by_method.items()
        ],
        "num",
    )
    return (
        f"<p><b>{report.runs:,} runs</b>: {states}</p>"
        f"<p>levels {t['levels_done']:,} / {t['levels_total']:,} finished{share} · "
        f"grid points with a result {report.finished_points:,} / {report.grid_points:,} · "
        f"elapsed {duration(t['elapsed_s'])}</p>"
        f"<p>{e(dev)}-hours <b>{hours(t['device_hours_used'])}</b> used, "
        f"<b>{hours(t['device_hours_left'])}</b> still planned · {t['devices_per_job']} "
        f"{e(dev)}{'s' if t['devices_per_job'] != 1 else ''} a job"
        + (f" · {t['epoch_s']:.1f} s an epoch" if t["epoch_s"] is not None else "")
        + f" · epochs {t['epochs_done']:,} done"
        + (f", {t['epochs_left']:,} to go" if t["epochs_left"] is not None else "")
        + "</p>"
        + "<h3>Runs by method and state</h3>"
        + by_method
    )


def _results_table_html(report: SweepReport) -> str:
    rows = report.table
    if not rows:
        return "<p class=dim>no grid points</p>"
    body = [
        [
            e(r["method"]),
            f"{r['sparsity']:g}",
            mean_std(r["test_acc_mean"], r["test_acc_std"]),
            mean_std(r["best_test_acc_mean"], r["best_test_acc_std"]),
            mean_std(r["achieved_sparsity_mean"], r["achieved_sparsity_std"], 1.0, 4),
            f"{r['n']:,}",
            f"{r['runs']:,}",
        ]
        for r in rows
    ]
    return table_html(
        ["method", "sparsity", "test_acc (%)", "best_test_acc (%)", "achieved sparsity", "n", "runs"], body, "num"
    )


def _trouble_html(report: SweepReport) -> str:
    t = report.trouble
    if not t["total"]:
        return (
            "<p>Nothing: no job of this sweep failed, was lost, timed out, was preempted or cancelled, "
            "or needed a retry.</p>"
        )
    what = ", ".join(f"{state_html(s)} {n:,}" for s, n in t["counts"].items())
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
                state_html(j["state"]),
                f"{j['attempts']}",
                runs,
                message_html(j["message"], j["message_chars"]) + trail,
            ]
        )
    return head + table_html(
        ["job", "scheduler id", "state", "attempts", "runs", "message, state changes"], body, "trouble"
    )


def _search_html(report: SweepReport) -> str:
    s = report.search
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
    table = table_html(
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


def _provenance_html(report: SweepReport, plotly_version: str) -> str:
    from core import version  # importlib.metadata (a few ms): only for the page's footer

    p = report.provenance
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
        f"<dt>store</dt><dd><code>{e(report.store)}</code></dd>"
        f"<dt>ran on</dt><dd>{hosts}</dd>"
        f"<dt>code per level</dt><dd>{code}</dd>"
        f"<dt>this report</dt><dd>{e(report.generated_at)}, turboprune {e(version())}, plotly.js from "
        f"plotly {e(plotly_version)}; states as recorded in the store "
        "(tp-sweep status asks the scheduler first)</dd></dl>"
    )


def render(report: SweepReport) -> str:
    """The page: tables in HTML (readable without scripts), charts drawn by plotly.js from the
    embedded data."""
    import yaml  # YAML (0.015 s): only to print the spec

    bundle, plotly_version = plotly_bundle()
    spec_text = yaml.safe_dump(clean(report.spec), sort_keys=False, allow_unicode=False, width=100)
    acc = report.accuracy
    no_result = report.finished_points == 0
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
        if not any(lv["epochs"] for c in report.curves for lv in c["levels"])
        else "<div id=curve-plot class=plot></div><p class=dim>One run per method (the one with the "
        "most finished levels, then the lowest seed): every epoch of its levels in training "
        "order; gaps separate levels.</p>"
    )
    title = f"turboprune report: {report.sweep}"
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{e(title)}</title>
<style>
{asset("report.css")}</style></head>
<body>
<header><h1>Sweep <span class=name>{e(report.sweep)}</span></h1>
<p class=dim>generated {e(report.generated_at)} from <code>{e(report.store)}</code></p>
<p id=tp-js-status class=dim>drawing the charts…</p></header>
<section id=summary><h2>Where it stands</h2>{_summary_html(report)}</section>
<section id=accuracy><h2>Accuracy against sparsity</h2>{acc_html}</section>
<section id=results><h2>Results by method and sparsity</h2>
<p class=dim>tp-sweep query {e(report.sweep)} --group-by method,sparsity: mean ± std over the finished
grid points (n of runs).</p>
{_results_table_html(report)}</section>
<section id=curves><h2>Learning curves</h2>{curves_html}</section>
<section id=trouble><h2>What went wrong</h2>{_trouble_html(report)}</section>
{_search_html(report)}
<section id=spec><h2>Spec</h2><details><summary>the sweep's spec as recorded</summary>
<pre>{e(spec_text)}</pre></details></section>
<section id=provenance><h2>Provenance</h2>{_provenance_html(report, plotly_version)}</section>
<script type="application/json" id=tp-data>{script_json(_payload(report))}</script>
<script type="text/plain" id=tp-plotly-gz>{bundle}</script>
<script>
{asset("report.js")}</script>
</body></html>
"""


def _payload(report: SweepReport) -> dict[str, Any]:
    """The data embedded for the scripts (and for anyone who reads the file): all of it but the
    jobs' state changes, which the page shows as HTML only, and each method's colour."""
    t = report.trouble
    jobs = [
        {**{k: v for k, v in j.items() if k not in ("events", "runs")}, "runs": j["runs"][:5]} for j in t["jobs"]
    ]
    searched = [trial["method"] for trial in report.search["trials"]] if report.search else []
    colors = method_colors([*report.by_method, *(row["method"] for row in report.table), *searched])
    return {**report.as_dict(), "trouble": {**t, "jobs": jobs}, "colors": colors}


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
