"""The CLI at scale: whole `tp-sweep` processes against a synthetic store of 10,000 runs, 150,000
levels and about 2,000,000 epochs (bench/synth_store.py), on SQLite and on PostgreSQL, timed
against a bare `python -c pass` measured in the same run. Goals, start-up included:

    status SWEEP --format json            < 1 s
    query SWEEP --group-by method,sparsity < 1 s
    status SWEEP (the table)               < 1.5 s
    every --help                           < 0.5 s
    plan_sweep + Store.record_plan of 10,000 grid points < 5 s (in one process, after imports)
    scheduler calls per status refresh     1, whatever the number of jobs

The two status commands are measured again after plan + record, beside the sweep it adds (2,500
runs, 23,500 levels, none trained): a store holding more than the one sweep takes another path to
the sweep's totals, and a lab's store holds several.

Each command runs `--repeats` times, interleaved with the baseline; the table gives the median
wall time, the median CPU time of the process (what an idle machine would take, roughly, on a
loaded one) and the ratio to the baseline. Slurm is stood in for by a stub `squeue`/`scontrol` on
PATH that counts its calls and knows no job (TP_LOST_AFTER_S keeps the jobs from turning LOST,
so every repetition sees the same store).

    python bench/bench_store.py [--small] [--runs N] [--pg URL] [--repeats 5] [--keep DIR] [--settle-s 120]
                                [--against DIR]

Beside them, the error exits (an unknown sweep, a missing spec, a malformed spec: exit 2) and
`launch --dry-run` of the 10,000-point grid, whole processes: what a restructure of the commands
must not slow down. `--against DIR` runs every command a second time, interleaved, on the code of
another checkout (`git worktree add DIR COMMIT`), on the same stores: the table gives both and
their ratio, side by side.

After building each store it waits (up to --settle-s) until the machine is idle again: the
measurements should not share the CPUs with the database still flushing the load.

--small: 200 runs, 2 repeats, SQLite (and PostgreSQL with --pg or TP_TEST_PG_URL): a check that
everything runs, in well under a minute. PostgreSQL: a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import synth_store  # noqa: E402

# `tp-sweep` as its console script runs it: the module imported, so its bytecode is cached (`-m`
# would compile cli/tp_sweep.py afresh in every process).
TP_SWEEP = [sys.executable, "-c", "import sys; from cli.tp_sweep import main; sys.exit(main())"]
STUB = '#!/bin/sh\necho "$(basename "$0") $*" >> "$TP_BENCH_CALLS"\n'
PACKAGES = ["cli", "core", "db", "orchestrator", "slurm", "trainer"]
HELP = [
    "--help",
    "launch --help",
    "status --help",
    "query --help",
    "data --help",
    "data write --help",
    "cluster --help",
    "db --help",
]


def run_timed(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, float, int, str]:
    """(wall s, CPU s of the child, exit status, stderr) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode, proc.stderr


AGAINST: str | None = None  # --against: another checkout whose code runs every command as well


def measure(
    commands: dict[str, list[str]], env: dict[str, str], cwd: str, repeats: int
) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) of each command, the baseline included, interleaved repetitions; with
    --against, each command also as `NAME [against]` on the other checkout's code."""
    runs = [(name, cmd, env) for name, cmd in commands.items()]
    if AGAINST:
        other = {**env, "PYTHONPATH": AGAINST}
        runs = [r for name, cmd, e in runs for r in ((name, cmd, e), (f"{name} [against]", cmd, other))]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in runs}
    for _ in range(repeats):
        for name, cmd, e in runs:
            wall, cpu, rc, err = run_timed(cmd, e, cwd)
            # status exits 1 when a run FAILED or is LOST: expected here; an error exit, 2.
            if rc not in ((2,) if name.startswith("error exit") else (0, 1)):
                raise SystemExit(f"{name}: exit {rc}\n{err}")
            times[name].append((wall, cpu))
    return {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}


def _cpu_times() -> tuple[float, float]:
    """(idle, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user .. steal


def settle(max_s: float, idle: float = 0.9) -> float:
    """Wait until the machine is idle (at least `idle` of its CPU time over 2 s), at most max_s;
    returns the seconds waited. After a bulk load PostgreSQL flushes hundreds of MB in the
    background: measuring then measures that too."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_s and os.path.exists("/proc/stat"):
        i0, t0_ = _cpu_times()
        time.sleep(2)
        i1, t1 = _cpu_times()
        if t1 > t0_ and (i1 - i0) / (t1 - t0_) >= idle:
            break
    return time.perf_counter() - t0


def grid_10k(name: str, out: str, seeds: int = 500) -> dict:
    """A spec of 10,000 grid points: 5 methods x 4 sparsities x 500 seeds."""
    return {
        "name": name,
        "output_dir": out,
        "max_grid_points": 10_000,
        "trainer": {"config": "digits_mlp", "overrides": {"schedule.epochs": 2}},
        "grid": {
            "method": ["imp", "imp_lrr", "random", "snip", "synflow"],
            "sparsity": [0.5, 0.8, 0.9, 0.95],
            "seed": list(range(seeds)),
        },
    }


def plan_and_record(url: str, out: str) -> float:
    """Seconds for plan_sweep + Store.record_plan of a 10,000-point grid, in this process after
    its imports."""
    from db.store import Store
    from orchestrator.plan.grid import plan_sweep
    from orchestrator.plan.spec import parse_spec

    spec = parse_spec(grid_10k("plan10k", out))
    store = Store(url)
    t0 = time.perf_counter()
    plan = plan_sweep(spec)
    store.record_plan(plan, {"name": "plan10k"}, plan.levels_dir)
    seconds = time.perf_counter() - t0
    store.close()
    assert len(plan.points) == 10_000, len(plan.points)
    return seconds


def bench_backend(name: str, url: str, runs: int, repeats: int, work: str, settle_s: float) -> list[tuple]:
    print(f"[{name}] building {runs:,} runs ...", flush=True)
    t0 = time.perf_counter()
    counts = synth_store.write(url, synth_store.generate(runs, f"{work}/out"))
    print(
        f"[{name}] {counts['runs']:,} runs, {counts['levels']:,} levels, {counts['epochs']:,} epochs "
        f"in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    if settle_s:
        print(f"[{name}] waited {settle(settle_s):.0f} s for the machine to be idle", flush=True)
    stub = Path(work) / "stub"
    stub.mkdir(exist_ok=True)
    for tool in ("squeue", "scontrol"):
        (stub / tool).write_text(STUB)
        (stub / tool).chmod(0o755)
    calls = Path(work) / f"calls-{name}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "COLUMNS": "100",
        "TP_LOST_AFTER_S": "1e12",
        "PATH": f"{stub}:{os.environ['PATH']}",
        "TP_BENCH_CALLS": str(calls),
    }
    env.pop("TP_DB_URL", None)
    tp = TP_SWEEP
    commands = {
        "baseline: python -c pass": [sys.executable, "-c", "pass"],
        "status SWEEP --format json": [*tp, "status", "bench", "--db", url, "--format", "json"],
        "query SWEEP --group-by method,sparsity": [
            *tp,
            "query",
            "bench",
            "--db",
            url,
            "--group-by",
            "method,sparsity",
        ],
        "status SWEEP (table)": [*tp, "status", "bench", "--db", url],
        **process_commands(url, work, 500 if runs >= 10_000 else 10),
    }
    got = measure(commands, env, work, repeats)
    calls.unlink(missing_ok=True)
    run_timed(commands["status SWEEP --format json"], env, work)
    n_calls = len(calls.read_text().splitlines()) if calls.exists() else 0
    base = got.pop("baseline: python -c pass")
    goals = {
        "status SWEEP --format json": 1.0,
        "query SWEEP --group-by method,sparsity": 1.0,
        "status SWEEP (table)": 1.5,
    }
    rows = [(name, "baseline: python -c pass", base[0], base[1], None, None)]
    rows += [
        (name, k, w, c, w / base[0], goals.get(k.removesuffix(" [against]")))
        for k, (w, c) in got.items()
        if not k.startswith("baseline")
    ]
    rows.append((name, "scheduler calls per status refresh", n_calls, None, None, 1))
    rows.append((name, "plan + record 10,000 grid points", plan_and_record(url, f"{work}/plan"), None, None, 5.0))
    # The store now holds a second sweep (plan10k: 2,500 runs, 23,500 levels, none trained), as a
    # lab's store holds several: status must not lean on a store of one sweep.
    beside = {
        f"{k.replace('SWEEP', 'SWEEP beside plan10k', 1)}": commands[k]
        for k in ("status SWEEP --format json", "status SWEEP (table)")
    }
    got = measure({"baseline: python -c pass": commands["baseline: python -c pass"], **beside}, env, work, repeats)
    base = got.pop("baseline: python -c pass")
    rows += [
        (name, k, w, c, w / base[0], 1.0 if "json" in k else 1.5)
        for k, (w, c) in got.items()
        if not k.startswith("baseline")
    ]
    return rows


def process_commands(url: str, work: str, seeds: int) -> dict[str, list[str]]:
    """The error exits and `launch --dry-run` of 10,000 grid points (20 x `seeds`), against the
    store at `url`."""
    import yaml

    specs = Path(work) / "specs"
    specs.mkdir(exist_ok=True)
    (specs / "grid10k.yaml").write_text(yaml.safe_dump(grid_10k("dry10k", f"{work}/dry", seeds)))
    (specs / "bad.yaml").write_text(yaml.safe_dump({**grid_10k("bad", f"{work}/bad"), "grdi": {}}))
    tp = TP_SWEEP
    return {
        "error exit: status of an unknown sweep": [*tp, "status", "nosuch", "--db", url],
        "error exit: launch of a missing spec": [*tp, "launch", str(specs / "missing.yaml"), "--db", url],
        "error exit: launch of a malformed spec": [*tp, "launch", str(specs / "bad.yaml"), "--db", url],
        f"launch --dry-run of {20 * seeds:,} grid points": [
            *tp,
            "launch",
            str(specs / "grid10k.yaml"),
            "--dry-run",
            "--db",
            url,
        ],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="200 runs, 2 repeats: a quick check")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--pg", default=os.environ.get("TP_TEST_PG_URL"), help="PostgreSQL URL (a schema is made)")
    p.add_argument("--no-pg", action="store_true")
    p.add_argument("--keep", default=None, help="work in this folder and keep it")
    p.add_argument("--against", default=None, help="a checkout of another commit: every command runs on both")
    p.add_argument(
        "--settle-s",
        type=float,
        default=120.0,
        help="after building a store, wait up to this long for an idle machine",
    )
    a = p.parse_args()
    global AGAINST
    AGAINST = str(Path(a.against).resolve()) if a.against else None
    runs = a.runs or (200 if a.small else 10_000)
    repeats = a.repeats or (2 if a.small else 5)
    # Cached bytecode for the project, as any installed program has: where
    # PYTHONDONTWRITEBYTECODE is set, every process would otherwise compile it from source.
    for tree in (REPO, *([AGAINST] if AGAINST else [])):
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", *PACKAGES], cwd=tree, check=True, stdout=subprocess.DEVNULL
        )
    work = a.keep or tempfile.mkdtemp(prefix="tp-bench-store-")
    os.makedirs(work, exist_ok=True)
    rows = []
    try:
        help_env = {**os.environ, "PYTHONPATH": str(REPO)}
        help_cmds = {"baseline: python -c pass": [sys.executable, "-c", "pass"]}
        help_cmds.update({f"tp-sweep {h}": [*TP_SWEEP, *h.split()] for h in HELP})
        got = measure(help_cmds, help_env, work, repeats)
        base = got.pop("baseline: python -c pass")
        rows.append(("-", "baseline: python -c pass", base[0], base[1], None, None))
        rows += [("-", k, w, c, w / base[0], 0.5) for k, (w, c) in got.items() if not k.startswith("baseline")]
        db = Path(work) / "bench.db"
        for f in Path(work).glob("bench.db*"):
            f.unlink()
        settle_s = 0.0 if a.small else a.settle_s
        rows += bench_backend("sqlite", f"sqlite:///{db}", runs, repeats, work, settle_s)
        if a.pg and not a.no_pg:
            rows += _with_pg_schema(
                a.pg, lambda url: bench_backend("postgresql", url, runs, repeats, work, settle_s)
            )
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    _print(rows, runs, repeats)
    return 0 if all(r[5] is None or r[2] <= r[5] for r in rows) else 1


def _with_pg_schema(url: str, fn):
    import sqlalchemy as sa

    schema = f"tp_bench_{os.getpid()}"
    admin = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        sep = "&" if "?" in url else "?"
        return fn(f"{url}{sep}options=-csearch_path%3D{schema}")
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def _print(rows: list[tuple], runs: int, repeats: int) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{runs:,} runs, median of {repeats}, load average {load}, {os.cpu_count()} CPUs")
    if AGAINST:
        print(
            f"[against]: the same command on the code of {AGAINST}; its ratio is this checkout's wall time over it"
        )
    print(f"{'store':<11}{'what':<50}{'wall s':>8}{'cpu s':>8}{'ratio':>7}{'goal':>7}  met")
    walls = {(r[0], r[1]): r[2] for r in rows}
    for store, what, wall, cpu, ratio, goal in rows:
        mine = walls.get((store, what.removesuffix(" [against]")))
        if what.endswith(" [against]") and mine is not None and not what.startswith("scheduler"):
            ratio = mine / wall  # side by side: this checkout's time over the other's

        count = what.startswith("scheduler calls")
        w = f"{wall:>8.0f}" if count else f"{wall:>8.2f}"
        c = f"{cpu:>8.2f}" if cpu is not None else f"{'':>8}"
        r = f"{ratio:>7.2f}" if ratio is not None else f"{'':>7}"
        g = "" if goal is None else (f"{goal:>7.0f}" if count else f"{goal:>7.1f}")
        met = "" if goal is None else ("yes" if wall <= goal else "NO")
        print(f"{store:<11}{what:<50}{w}{c}{r}{g:>7}  {met}")


if __name__ == "__main__":
    sys.exit(main())
