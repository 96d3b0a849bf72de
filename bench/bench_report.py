"""`tp-sweep report` at scale: the HTML report of bench/synth_store.py's 10,000-run sweep (150,000
levels, about 2,000,000 epoch rows), timed as whole processes against two baselines measured in
the same run on the same store: `python -c pass` and `tp-sweep query SWEEP --format json` (every
grid point as JSON). Goals: written in under 10 s, under 5 MB.

    python bench/bench_report.py [--runs N] [--repeats 3] [--pg URL] [--keep DIR] [--small]

--small: 200 runs, 1 repeat (a check that it runs). Prints the time (median wall and CPU of the
process), the report's size, the share of it that is plotly.js, and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import synth_store  # noqa: E402
from bench_store import _with_pg_schema, measure  # noqa: E402

TIME_GOAL_S = 10.0
SIZE_GOAL = 5_000_000


def bench(name: str, url: str, runs: int, repeats: int, work: str) -> list[tuple]:
    print(f"[{name}] building {runs:,} runs ...", flush=True)
    t0 = time.perf_counter()
    counts = synth_store.write(url, synth_store.generate(runs, f"{work}/out"))
    print(
        f"[{name}] {counts['runs']:,} runs, {counts['levels']:,} levels, {counts['epochs']:,} epochs "
        f"in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
    env.pop("TP_DB_URL", None)
    tp = [sys.executable, "-m", "cli.tp_sweep"]
    out = Path(work) / f"{name}-report.html"
    commands = {
        "baseline: python -c pass": [sys.executable, "-c", "pass"],
        "baseline: query SWEEP --format json": [*tp, "query", "bench", "--db", url, "--format", "json"],
        "report SWEEP": [*tp, "report", "bench", "--db", url, "--out", str(out)],
    }
    got = measure(commands, env, work, repeats)
    size = out.stat().st_size
    text = out.read_text()
    start = text.index("id=tp-plotly-gz>") + len("id=tp-plotly-gz>")
    bundle = text.index("</script>", start) - start
    base = got["baseline: python -c pass"][0]
    rows = [
        (name, k, w, c, w / base if base else None, TIME_GOAL_S if k == "report SWEEP" else None)
        for k, (w, c) in got.items()
    ]
    rows.append((name, "report size, MB", size / 1e6, None, None, SIZE_GOAL / 1e6))
    rows.append((name, "  of which plotly.js (gzip + base64), MB", bundle / 1e6, None, None, None))
    rows.append((name, "  of which everything else, kB", (size - bundle) / 1e3, None, None, None))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="200 runs, 1 repeat: a quick check")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--pg", default=None, help="also on PostgreSQL (a schema of its own, dropped)")
    p.add_argument("--keep", default=None, help="work in this folder and keep it")
    a = p.parse_args()
    runs = a.runs or (200 if a.small else 10_000)
    repeats = a.repeats or (1 if a.small else 3)
    work = a.keep or tempfile.mkdtemp(prefix="tp-bench-report-")
    os.makedirs(work, exist_ok=True)
    rows: list[tuple] = []
    try:
        db = Path(work) / "bench.db"
        for f in Path(work).glob("bench.db*"):
            f.unlink()
        rows += bench("sqlite", f"sqlite:///{db}", runs, repeats, work)
        if a.pg:
            rows += _with_pg_schema(a.pg, lambda url: bench("postgresql", url, runs, repeats, work))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{runs:,} runs, median of {repeats}, load average {load} (1, 5, 15 min), {os.cpu_count()} CPUs")
    print(f"{'store':<11}{'what':<44}{'value':>9}{'cpu s':>8}{'ratio':>7}{'goal':>7}  met")
    for store, what, value, cpu, ratio, goal in rows:
        c = f"{cpu:>8.2f}" if cpu is not None else f"{'':>8}"
        r = f"{ratio:>7.1f}" if ratio is not None else f"{'':>7}"
        g = f"{goal:>7.1f}" if goal is not None else f"{'':>7}"
        met = "" if goal is None else ("yes" if value <= goal else "NO")
        print(f"{store:<11}{what:<44}{value:>9.2f}{c}{r}{g}  {met}")
    return 0 if all(r[5] is None or r[2] <= r[5] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
