"""`tp-sweep report`: one self-contained HTML file, opened in a real headless browser (Debian's
chromium through Selenium, tests/browserutil.py) with no network at all.

One small sweep trained once for the session (sweeputil.finished_sweep, shared with
test_notebook.py); the adversarial sweeps are written straight into stores of their own. What the
page holds is read in-process (orchestrator.operations.report, then cli.render.report); the real
`tp-sweep report` writes the page the browser opens, and answers bad input and the big sweep.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import require_service
from tests.inprocess import query_rows
from tests.sweeputil import REPO, finished_sweep, tiny_spec, tp

MB = 1_000_000
METHODS = {"dense", "imp", "random"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return finished_sweep(tmp_path_factory)


@pytest.fixture(scope="module")
def report(shared, tmp_path_factory):
    """The shared sweep's report, written by the CLI to its default path in a fresh folder."""
    tmp, url = shared
    out = tmp_path_factory.mktemp("report")
    proc = tp("report", "share", "--db", url, cwd=out, check=True)
    path = out / "share-report.html"
    assert str(path.name) in proc.stdout and path.is_file()
    return path


@pytest.fixture(scope="module")
def browser():
    from tests.browserutil import browser_problem, chromium

    require_service("headless chromium", browser_problem())
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def built(shared):
    """The shared sweep's report, read and rendered in-process: (SweepReport, page)."""
    from cli.render.report import render
    from orchestrator.operations.report import sweep_report

    _, url = shared
    got = sweep_report(url, "share")
    return got, render(got)


def _page_data(path: Path) -> dict:
    return _embedded(path.read_text())


def _embedded(text: str) -> dict:
    """The data a page embeds for its scripts."""
    start = text.index('<script type="application/json" id=tp-data>') + len(
        '<script type="application/json" id=tp-data>'
    )
    return json.loads(text[start : text.index("</script>", start)])


# ---- in the browser ----------------------------------------------------------------------------
@pytest.mark.slow  # the shared sweep trains through real processes
def test_report_renders_offline_with_a_trace_per_method_and_hover(report, shared, browser, tmp_path):
    from PIL import Image

    from tests.browserutil import console_errors, network_requests, open_report

    state = open_report(browser, report)
    assert state == {"ready": True, "error": None}
    assert console_errors(browser) == []
    urls, failed = network_requests(browser)
    assert urls and all(u.startswith(("file://", "data:", "blob:")) for u in urls), urls
    assert failed == []  # the proxy is a dead address: any network request would have failed

    lines = browser.execute_script(
        "return document.getElementById('acc-plot').data.filter(t => t.meta)"
        ".map(t => ({method: t.meta.method, dense: t.meta.dense, x: t.x}))"
    )
    assert sorted(t["method"] for t in lines) == sorted(METHODS)  # one trace per method, no more
    assert [t["method"] for t in lines if t["dense"]] == ["dense"]

    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    img = Image.open(shot).convert("RGB")
    colors = img.getcolors(maxcolors=1 << 20)
    assert len(colors) > 50, "the screenshot is (nearly) blank"
    assert max(n for n, _ in colors) < 0.97 * img.width * img.height

    # Hover the imp point at 0.75 with the real mouse: its method and level id show.
    tmp, url = shared
    (level_id,) = {
        r["level_id"]
        for r in query_rows("share", tmp, db=url)
        if r["method"] == "imp" and r["sparsity"] == 0.75 and r["seed"] == 0
    }
    text = _hover(browser, "imp", 0.75)
    assert "imp" in text and "0.75" in text and "achieved sparsity" in text, text
    assert level_id in text, text  # both seeds' levels are named (up to 6, then "+N more")

    # The switch: log density ("% of weights remaining"), legend state kept.
    browser.execute_script("""
        var gd = document.getElementById('acc-plot');
        var i = gd.data.findIndex(t => t.meta && t.meta.method === 'random');
        Plotly.restyle(gd, {visible: 'legendonly'}, [i]);""")
    browser.find_element("id", "x-log").click()
    axis, xs, hidden = browser.execute_script("""
        var gd = document.getElementById('acc-plot');
        var imp = gd.data.find(t => t.meta && t.meta.method === 'imp');
        var rnd = gd.data.find(t => t.meta && t.meta.method === 'random');
        return [gd.layout.xaxis.type, imp.x, rnd.visible];""")
    assert axis == "log" and sorted(xs) == pytest.approx([25.0, 50.0]) and hidden == "legendonly"
    assert "imp" in _hover(browser, "imp", 0.75)
    assert console_errors(browser) == []
    # One colour per method in both charts; level 0, which dense and imp share, drawn once and
    # named after both (it hid dense's curve under imp's). random's level 0 is a level of its own.
    acc = browser.execute_script(
        "return document.getElementById('acc-plot').data.filter(t => t.meta && t.meta.method)"
        ".map(t => [t.meta.method, t.line.color])"
    )
    curves = browser.execute_script(
        "return document.getElementById('curve-plot').data.map(t => [t.meta.methods, t.name, t.x, t.line.color])"
    )
    by_methods = {
        tuple(methods): (name, [x for x in xs if x is not None], color) for methods, name, xs, color in curves
    }
    assert set(by_methods) == {("imp",), ("random",), ("dense", "imp")}, curves  # dense: only level 0
    name, xs, _ = by_methods[("dense", "imp")]
    assert xs == [1, 2] and "dense" in name and "imp" in name, curves
    assert min(by_methods[("imp",)][1]) > 2 and min(by_methods[("random",)][1]) == 1, curves  # drawn once
    colors = dict(acc)
    assert len(set(colors.values())) == len(METHODS)
    assert all(colors[k[0]] == color for k, (_, _, color) in by_methods.items() if len(k) == 1), (acc, curves)


def _point_xy(browser, method: str, sparsity: float) -> tuple[float, float]:
    """Page pixel of a point of the accuracy chart, from plotly's own axis mapping."""
    return browser.execute_script(
        """
        var gd = document.getElementById('acc-plot'), L = gd._fullLayout;
        var i = gd.data.findIndex(t => t.meta && t.meta.method === arguments[0]);
        var t = gd.data[i], log = L.xaxis.type === 'log';
        var k = t.x.findIndex(x => Math.abs((log ? 1 - x / 100 : x) - arguments[1]) < 1e-9);
        var box = gd.getBoundingClientRect();
        var x = L.xaxis._offset + L.xaxis.l2p(log ? Math.log10(t.x[k]) : t.x[k]);
        var y = L.yaxis._offset + L.yaxis.l2p(t.y[k]);
        return [box.left + x, box.top + y];""",
        method,
        sparsity,
    )


def _hover(browser, method: str, sparsity: float) -> str:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    browser.execute_script("document.getElementById('acc-plot').scrollIntoView()")
    x, y = _point_xy(browser, method, sparsity)
    for dx in (0, 1):  # a second small move makes sure plotly sees a mousemove over the point
        actions = ActionBuilder(browser)
        actions.pointer_action.move_to_location(int(round(x)) + dx, int(round(y)))
        actions.perform()
    ActionChains(browser).pause(0.3).perform()
    return browser.execute_script(
        "var h = document.querySelector('#acc-plot .hoverlayer'); return h ? h.textContent : ''"
    )


# ---- the page's contents ---------------------------------------------------------------------
@pytest.mark.slow  # the shared sweep trains through real processes
def test_report_holds_the_query_table_curves_and_spec(built, shared):
    tmp, url = shared
    got, page = built
    grouped = query_rows("share", tmp, db=url, group_by=("method", "sparsity"))
    assert len(got.table) == len(grouped)
    for mine, theirs in zip(got.table, grouped):
        for k, v in theirs.items():
            assert mine[k] == pytest.approx(v) if isinstance(v, float) else mine[k] == v, k
    for g in grouped:  # shown as the query table shows it: percent, mean ± std
        assert f"{g['test_acc_mean'] * 100:.2f} ± {g['test_acc_std'] * 100:.2f}" in page
    assert got.counts == {"COMPLETED": 6} and got.totals["levels_done"] == got.totals["levels_total"]
    assert got.trouble["total"] == 0 and "Nothing: no job" in page
    assert {c["method"] for c in got.curves} == METHODS
    assert {c["method"]: c["levels"][0]["methods"] for c in got.curves} == {
        "dense": ["dense", "imp"],  # one level 0
        "imp": ["dense", "imp"],
        "random": ["random"],
    }
    data = _embedded(page)
    assert data["colors"]["dense"] == "#333333" and len(set(data["colors"].values())) == len(METHODS)
    assert data["table"] == json.loads(json.dumps(got.table))  # the page embeds what it shows
    imp = next(c for c in got.curves if c["method"] == "imp")
    assert [len(lv["epochs"]) for lv in imp["levels"]] == [2, 2, 2]  # level 0, trunk 0.5, trunk 0.75
    assert [lv["methods"] for lv in imp["levels"][1:]] == [["imp"], ["imp"]]
    assert "schedule.epochs: 2" in page and "model.hidden" in page  # the spec
    assert got.provenance["attempts"] >= 1 and "code per level" in page
    assert 1.5 * MB < len(page.encode()) < 2.5 * MB  # the bundle (2 MB) and a little data


@pytest.mark.slow  # the shared sweep trains through real processes
def test_status_of_a_finished_sweep_names_the_report(shared):
    tmp, url = shared
    out = tp("status", "share", "--db", url, cwd=tmp, check=True).stdout
    assert "tp-sweep report share" in out


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.slow  # the shared sweep trains through real processes
def test_bad_sweep_or_out_path_exits_2_and_writes_nothing(shared, tmp_path):
    _, url = shared
    proc = tp("report", "nosuch", "--db", url, cwd=tmp_path)
    assert proc.returncode == 2 and "no sweep named 'nosuch'" in proc.stderr and "share" in proc.stderr
    for out, why in (
        (tmp_path / "missing" / "r.html", "does not exist"),
        (tmp_path, "is a folder"),
        (Path("/proc/tp-report.html"), "cannot write"),
    ):
        proc = tp("report", "share", "--db", url, "--out", str(out), cwd=tmp_path)
        assert proc.returncode == 2 and why in proc.stderr, (out, proc.stderr)
    assert list(tmp_path.iterdir()) == []  # no report, no temporary file
    missing = tp("report", "share", "--db", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert missing.returncode == 2


# ---- the attacker: HTML in names and messages, a huge message, nothing finished ----------------
EVIL = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def _evil_store(tmp: Path) -> tuple[str, str]:
    """A planned sweep with no finished level, renamed to HTML, whose jobs FAILED with a 1 MB
    message full of markup, were LOST after three attempts, and were preempted."""
    from db.schema import Attempt, Event, Job, Sweep
    from db.store import Store
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.jobs import group_jobs
    from orchestrator.plan.spec import parse_spec

    spec = tiny_spec("evil")
    spec["grid"]["method"] = ["dense", "imp", "random"]
    spec["output_dir"] = str(tmp / "runs")
    plan = plan_sweep(parse_spec(spec))
    url = f"sqlite:///{tmp / 'evil.db'}"
    store = Store(url)
    spec["name"] = name = f"x{EVIL}&amp;"
    store.record_plan(plan, spec, plan.levels_dir)
    with store.serialized() as s:
        jobs = group_jobs(list(plan.levels.values()), {}, plan.snapshots)
        store.create_jobs(s, jobs, "evil", {j.job_id: str(tmp / f"{j.job_id}.json") for j in jobs})
    huge = ("Traceback " + EVIL + "\n") * 12_000  # about 1 MB
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    states = ["FAILED", "LOST", "PREEMPTED"]
    with store.session() as s:
        s.execute(sa.update(Sweep).where(Sweep.name == "evil").values(name=name))
        for j, st in zip(jobs, states):
            s.execute(
                sa.update(Job)
                .where(Job.job_id == j.job_id)
                .values(
                    state=st,
                    sweep=name,
                    attempts=3,
                    sched_id=f"9{EVIL}",
                    executor="debug",
                    message=huge if st == "FAILED" else f"{st.lower()}: {EVIL}",
                )
            )
            for a in range(3):
                s.add(
                    Attempt(
                        job_id=j.job_id,
                        attempt=a + 1,
                        host=f"node{EVIL}",
                        started_at=now,
                        ended_at=now,
                        outcome=st,
                    )
                )
            s.add(Event(job_id=j.job_id, state_from="RUNNING", state_to=st, message=huge[:5000]))
    store.close()
    return url, name


def test_an_html_named_sweep_with_failures_and_nothing_finished(tmp_path, browser):
    from cli.render.report import render
    from orchestrator.operations.report import ReportError, sweep_report
    from tests.browserutil import console_errors, network_requests, open_report

    url, name = _evil_store(tmp_path)
    with pytest.raises(ReportError, match=r"no sweep named 'evil' in .*\(sweeps: x<script>"):
        sweep_report(url, "evil")  # renamed: the error names the sweep the store has
    out = tmp_path / "evil.html"
    out.write_text(render(sweep_report(url, name)), encoding="utf-8")
    page = out.read_text(encoding="utf-8")
    assert out.stat().st_size < 2.5 * MB  # the 1 MB message is cut
    assert "<script>window.__pwned" not in page and "<img src=x" not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    assert "No grid point has a result yet" in page and "more characters" in page
    data = _page_data(out)
    assert data["trouble"]["counts"] == {"FAILED": 1, "LOST": 1, "PREEMPTED": 1}
    assert data["trouble"]["retried"] == 3 and data["sweep"] == name
    state = open_report(browser, out)
    assert state == {"ready": True, "error": None}
    assert browser.execute_script("return window.__pwned === undefined")
    assert console_errors(browser) == []
    urls, failed = network_requests(browser)
    assert all(u.startswith(("file://", "data:", "blob:")) for u in urls) and failed == [], (urls, failed)
    title = browser.find_element("css selector", "h1 .name").text
    assert title == name  # shown as text, not markup
    rows = browser.find_elements("css selector", "#trouble table.trouble tbody tr")
    assert len(rows) == 3 and "FAILED" in rows[0].text


# ---- size --------------------------------------------------------------------------------------
def test_a_big_synthetic_sweep_stays_small_and_needs_no_pandas_or_torch(tmp_path):
    """The report aggregates: 500 runs (7,500 levels) cost the page a few kilobytes more than
    6 runs. The time on 10,000 runs is bench/bench_report.py's."""
    sys.path.insert(0, str(REPO / "bench"))
    import synth_store

    url = f"sqlite:///{tmp_path / 'synth.db'}"
    synth_store.write(url, synth_store.generate(500, str(tmp_path / "runs")))
    probe = (
        "import sys\nfrom cli.tp_sweep import main\ncode = main(sys.argv[1:])\n"
        "print('PANDAS=' + str('pandas' in sys.modules), 'TORCH=' + str('torch' in sys.modules),"
        " 'CODE=' + str(code))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, "report", "bench", "--db", url, "--out", str(tmp_path / "r.html")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
    )
    assert proc.stdout.strip().splitlines()[-1] == "PANDAS=False TORCH=False CODE=0", proc.stdout + proc.stderr
    size = (tmp_path / "r.html").stat().st_size
    assert size < 2.5 * MB < 5 * MB
    data = _page_data(tmp_path / "r.html")
    assert data["trouble"]["shown"] <= 200 and data["trouble"]["total"] > 0
    assert len(data["accuracy"]["lines"]) == 5 and data["accuracy"]["note"]  # averaged over the lr axis
