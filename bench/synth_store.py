"""A synthetic results store the size of a big sweep, written fast, in the layout the real code writes.

One sweep `bench` of RUNS runs (5 iterative methods x 10 seeds x an `optimizer.lr` axis), each
with 15 levels (trunk 0..11 at prune.rate 0.2 and three branches, to 0.5, 0.8 and 0.9: the grid
points it serves), one job per run, its attempts and events, and SCHEDULE_EPOCHS epochs for every
finished level (10,000 runs: 150,000 levels and about 2,000,000 epoch rows). Run states are mixed
as on a long sweep: most COMPLETED, some RUNNING (a level half trained), PENDING, PLANNED,
PREEMPTED, FAILED and LOST.

Tables are created by the project's migrations (db.store.Store); rows go in through the schema's
own tables with the driver's bulk path (sqlite3 executemany, PostgreSQL COPY), so building the
10,000-run store takes about a minute instead of an hour of ORM inserts. Levels are not shared
between runs here (a real plan shares level 0 between methods); the store's size is what matters.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from db.schema import Attempt, Epoch, Event, GridPoint, Job, Level, Run, RunLevel, Sweep, SweepRun
from db.store import Store

METHODS = ["imp", "imp_lrr", "imp_wr", "random", "random_erk"]
SEEDS = 10
SCHEDULE_EPOCHS = 14
TRUNK_DEPTH = 11  # trunk levels 0..11
BRANCHES = {3: 0.5, 7: 0.8, 10: 0.9}  # trunk depth -> target sparsity of the branch from it
GPUS_PER_NODE = 4
# Share of runs per state (the rest COMPLETED): what a sweep of this size looks like mid-way.
STATE_SHARE = {
    "RUNNING": 0.04,
    "PENDING": 0.02,
    "PLANNED": 0.01,
    "PREEMPTED": 0.01,
    "FAILED": 0.015,
    "LOST": 0.005,
}


def spec_dict(name: str, lrs: list[float], output_dir: str) -> dict[str, Any]:
    return {
        "name": name,
        "output_dir": output_dir,
        "max_grid_points": 1_000_000,
        "trainer": {"config": "digits_mlp", "overrides": {"schedule.epochs": SCHEDULE_EPOCHS}},
        "grid": {
            "method": METHODS,
            "sparsity": sorted(BRANCHES.values()),
            "seed": list(range(SEEDS)),
            "optimizer.lr": lrs,
        },
        "executor": {
            "kind": "slurm",
            "gpus_per_node": GPUS_PER_NODE,
            "nodes": 1,
            "procs_per_node": GPUS_PER_NODE,
            "array_parallelism": 512,
        },
    }


def _jitter(epoch: int) -> float:
    """Epoch-to-epoch variation of an epoch's time, deterministic so level sums match."""
    return 0.95 + 0.01 * ((epoch * 7) % 10)


def _epoch_rows(specs: list[tuple]) -> Iterable[dict]:
    for lid, n_epochs, epoch_s, lr, density, t in specs:
        acc = 0.97 - 0.3 * (1 - density) ** 8
        for e in range(n_epochs):
            sec = epoch_s * _jitter(e)
            t += dt.timedelta(seconds=sec)
            yield {
                "level_id": lid,
                "epoch": e,
                "train_loss": 0.1,
                "train_acc": 0.99,
                "test_loss": 0.2,
                "test_acc": acc,
                "test_top5": None,
                "lr": lr,
                "steps": 28,
                "seconds": sec,
                "images_per_s": 1797 / sec,
                "at": t,
            }


def _hex(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def _level_shape() -> list[tuple[int, str, float, int | None]]:
    """(depth, kind, density, index of the parent in this list) of a run's 15 levels, in order."""
    out: list[tuple[int, str, float, int | None]] = []
    trunk_at: dict[int, int] = {}
    for depth in range(TRUNK_DEPTH + 1):
        out.append((depth, "dense" if depth == 0 else "trunk", round(0.8**depth, 12), trunk_at.get(depth - 1)))
        trunk_at[depth] = len(out) - 1
        if depth in BRANCHES:
            out.append((depth + 1, "branch", round(1 - BRANCHES[depth], 12), trunk_at[depth]))
    return out


def generate(runs: int, output_dir: str, name: str = "bench", seed: int = 0) -> dict[str, list[dict]]:
    """Rows for every table, as dicts keyed by column name."""
    from core import config as trainer_config

    global T0
    T0 = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0) - dt.timedelta(days=2)
    rng = random.Random(seed)
    n_lr = max(1, runs // (len(METHODS) * SEEDS))
    lrs = [round(0.01 + 0.001 * i, 6) for i in range(n_lr)]
    base = trainer_config.resolve("digits_mlp", {"schedule.epochs": SCHEDULE_EPOCHS})
    shape = _level_shape()
    states = []
    for st, share in STATE_SHARE.items():
        states += [st] * int(runs * share)
    states += ["COMPLETED"] * (runs - len(states))
    rng.shuffle(states)
    levels_dir = f"{output_dir}/levels"
    rows: dict[str, list[dict]] = {
        t: []
        for t in (
            "sweeps",
            "runs",
            "sweep_runs",
            "levels",
            "run_levels",
            "grid_points",
            "jobs",
            "attempts",
            "events",
            "epochs",
        )
    }
    spec = spec_dict(name, lrs, output_dir)
    rows["sweeps"].append(
        {"id": 1, "name": name, "spec": spec, "executor": "slurm", "output_dir": output_dir, "created_at": T0}
    )
    i = 0
    for lr in lrs:
        for method in METHODS:
            for s in range(SEEDS):
                if i >= runs:
                    break
                _one_run(rows, rng, i, method, s, lr, base, shape, states[i], levels_dir, output_dir, name)
                i += 1
    return rows


def _one_run(rows, rng, i, method, seed, lr, base, shape, state, levels_dir, output_dir, name) -> None:
    run_id = _hex(rng)
    config = {**base, "method": method, "seed": seed, "optimizer": {**base["optimizer"], "lr": lr}}
    created = T0 + dt.timedelta(seconds=i)
    rows["runs"].append(
        {
            "run_id": run_id,
            "method": method,
            "seed": seed,
            "axes": {"optimizer.lr": lr},
            "config": config,
            "created_at": created,
        }
    )
    rows["sweep_runs"].append({"sweep_id": 1, "run_id": run_id})
    job_id = _hex(rng)
    n = len(shape)
    done = {"COMPLETED": n, "PLANNED": 0, "PENDING": 0}.get(state, rng.randrange(1, n))
    epoch_s = rng.uniform(20.0, 40.0)  # this run's epoch time, seconds
    ids = [_hex(rng) for _ in shape]
    rows["runs"][-1].update(n_levels=n, last_level_id=ids[-1])  # as Store.record_plan keeps them
    start = created + dt.timedelta(hours=1)
    t = start
    for pos, (depth, kind, density, parent) in enumerate(shape):
        lid = ids[pos]
        finished = pos < done
        partial = rng.randrange(1, SCHEDULE_EPOCHS) if (state == "RUNNING" and pos == done) else 0
        n_epochs = SCHEDULE_EPOCHS if finished else partial
        secs = [epoch_s * _jitter(e) for e in range(n_epochs)]
        if n_epochs:  # expanded into rows by _epoch_rows when written: 2M dicts would not fit
            rows["epochs"].append((lid, n_epochs, epoch_s, lr, density, t))
        t += dt.timedelta(seconds=sum(secs))
        acc = 0.97 - 0.3 * (1 - density) ** 8 + rng.uniform(-0.01, 0.01)
        rows["levels"].append(
            {
                "level_id": lid,
                "parent_id": ids[parent] if parent is not None else None,
                "root_id": ids[0],
                "depth": depth,
                "kind": kind,
                "density": density,
                "step": None
                if parent is None
                else {"criterion": "magnitude", "density": density, "rewind": "init"},
                "level_dir": f"{levels_dir}/{lid}",
                "job_id": None if state == "PLANNED" and rng.random() < 0.5 else job_id,
                "epoch": n_epochs,
                "finished_at": t if finished else None,
                "achieved_sparsity": round(1 - density, 6) if finished else None,
                "test_acc": acc if finished else None,
                "test_top5": None,
                "test_loss": 0.2 if finished else None,
                "best_test_acc": acc + 0.002 if finished else None,
                "train_loss": 0.1 if finished else None,
                "train_acc": 0.99 if finished else None,
                "epochs": n_epochs if finished else 0,
                "seconds": sum(secs) if finished else 0.0,
                "created_at": created,
            }
        )
        rows["run_levels"].append({"run_id": run_id, "level_id": lid, "position": pos, "kind": kind})
        if kind == "branch":
            rows["grid_points"].append(
                {
                    "sweep_id": 1,
                    "run_id": run_id,
                    "method": method,
                    "sparsity": round(1 - density, 12),
                    "seed": seed,
                    "axes": {"optimizer.lr": lr},
                    "axes_key": json.dumps({"optimizer.lr": lr}),
                    "level_id": lid,
                    "level": depth,
                    "naive_levels": depth + 1,
                }
            )
    sched = None if state == "PLANNED" else f"{100000 + i}"
    attempts = {"PLANNED": 0, "PENDING": 0, "PREEMPTED": 1, "COMPLETED": 1}.get(state, rng.choice([1, 1, 2]))
    rows["jobs"].append(
        {
            "job_id": job_id,
            "levels": ids,
            "depends_on": [],
            "state": state,
            "executor": "slurm",
            "sched_id": sched,
            "sweep": name,
            "job_file": f"{output_dir}/jobs/{job_id}.json",
            "attempts": attempts,
            "level_id": ids[done] if state == "RUNNING" else None,
            "heartbeat_at": t if attempts else None,
            "message": None if state != "FAILED" else "trainer exit 1",
            "created_at": created,
            "updated_at": t,
        }
    )
    rows["events"].append(
        {
            "job_id": job_id,
            "at": created,
            "state_from": None,
            "state_to": "PLANNED",
            "sched_id": None,
            "message": f"planned by sweep {name}: {n} levels",
        }
    )
    if sched:
        rows["events"].append(
            {
                "job_id": job_id,
                "at": created,
                "state_from": "PLANNED",
                "state_to": "PENDING",
                "sched_id": sched,
                "message": "submitted to slurm",
            }
        )
    for a in range(attempts):
        last = a == attempts - 1
        open_ = last and state == "RUNNING"
        rows["attempts"].append(
            {
                "job_id": job_id,
                "attempt": a + 1,
                "sched_id": sched,
                "host": f"gpu{i % 64:03d}",
                "world_size": GPUS_PER_NODE,
                "resumed_from": None,
                "started_at": start + dt.timedelta(minutes=5 * a),
                "ended_at": None if open_ else t,
                "outcome": None if open_ else (state if last else "PREEMPTED"),
            }
        )
        rows["events"].append(
            {
                "job_id": job_id,
                "at": start,
                "state_from": "PENDING",
                "state_to": "RUNNING",
                "sched_id": sched,
                "message": f"attempt {a + 1}",
            }
        )
    if state not in ("PLANNED", "PENDING", "RUNNING"):
        rows["events"].append(
            {
                "job_id": job_id,
                "at": t,
                "state_from": "RUNNING",
                "state_to": state,
                "sched_id": sched,
                "message": None,
            }
        )


TABLES = {
    "sweeps": Sweep,
    "runs": Run,
    "sweep_runs": SweepRun,
    "levels": Level,
    "run_levels": RunLevel,
    "grid_points": GridPoint,
    "jobs": Job,
    "attempts": Attempt,
    "events": Event,
    "epochs": Epoch,
}


def write(url: str, rows: dict[str, list]) -> dict[str, int]:
    """Create the schema (migrations) and bulk-load every table; returns rows per table."""
    store = Store(url)
    counts = {}
    try:
        with store.engine.begin() as conn:
            for name, model in TABLES.items():
                data = _epoch_rows(rows[name]) if name == "epochs" else rows[name]
                counts[name] = _load(conn, model.__table__, data)
            if conn.dialect.name == "postgresql":
                # Explicit ids went in: move the sequences past them, as inserts would have.
                for t in ("sweeps", "grid_points", "attempts", "events"):
                    conn.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                        f"coalesce((SELECT max(id) FROM {t}), 0) + 1, false)"
                    )
        if store.engine.dialect.name == "postgresql":
            # What autovacuum does to freshly loaded tables (statistics, and the visibility map
            # that index-only scans need), done now: else it does it while the benchmark runs,
            # on the same two cores.
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        # SQLite: no ANALYZE, as in the stores the real code writes (it never runs one).
    finally:
        store.close()
    return counts


def _load(conn: sa.Connection, table: sa.Table, rows: Iterable[dict], chunk: int = 50_000) -> int:
    it = iter(rows)
    first = next(it, None)
    if first is None:
        return 0
    auto_id = "id" in table.c and "id" not in first  # autoincrement ids: number them here
    cols = [c for c in table.columns if c.name in first or (auto_id and c.name == "id")]
    names = [c.name for c in cols]
    json_cols = {c.name for c in cols if isinstance(c.type, sa.JSON)}
    pg = conn.dialect.name == "postgresql"
    # SQLite: values as SQLAlchemy's own types bind them (DateTime's text format, JSON text).
    procs = [None if pg else c.type.bind_processor(conn.dialect) for c in cols]
    n = 0

    def tuples() -> Iterable[tuple]:
        nonlocal n
        for r in _chain(first, it):
            n += 1
            if auto_id:
                r = {**r, "id": n}
            if pg:
                yield tuple(json.dumps(r[c]) if c in json_cols and r[c] is not None else r[c] for c in names)
            else:
                yield tuple(p(r[c]) if p is not None and r[c] is not None else r[c] for c, p in zip(names, procs))

    if pg:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as cp:
            for row in tuples():
                cp.write_row(row)
        return n
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    batch: list[tuple] = []
    for row in tuples():
        batch.append(row)
        if len(batch) >= chunk:
            conn.exec_driver_sql(sql, batch)
            batch = []
    if batch:
        conn.exec_driver_sql(sql, batch)
    return n


def _chain(first: dict, rest: Iterable[dict]) -> Iterable[dict]:
    yield first
    yield from rest
