"""levels as the unit of work: content-addressed levels, runs without state, jobs

Revision ID: 0002
Revises: 0001

0001 stored one trajectory per run: runs carried the state and scheduler job, and results were
keyed (run_id, level index). From 0002 a level is its own content-addressed row shared by every run
and sweep that needs it, runs only name a configuration, and jobs (chains of levels) carry states,
attempts and events.

Carrying a 0001 store forward, nothing recorded is lost and every sweep still queries:
- each old run becomes a job with the same id, state, scheduler id, attempts and events;
- each old (run, level) becomes a level of kind "legacy" with id "<run_id>.<level>", parented on
  the run's previous level, with its results and epochs;
- grid points point at the legacy level that reached their target.
Legacy levels cannot be resumed by the new trainer (their folders have the old layout); a relaunch
of the same spec plans new, content-addressed levels.
"""

from typing import Any, Union
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _rows(conn, table: str) -> list[dict[str, Any]]:
    meta = sa.MetaData()
    t = sa.Table(table, meta, autoload_with=conn)
    return [dict(r._mapping) for r in conn.execute(sa.select(t))]


def _create_tables() -> dict[str, sa.Table]:
    ts = sa.DateTime()
    t = {}
    t["runs"] = op.create_table(
        "runs",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("method", sa.String(32), nullable=False, index=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("axes", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
    )
    t["sweep_runs"] = op.create_table(
        "sweep_runs",
        sa.Column("sweep_id", sa.Integer(), sa.ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), primary_key=True),
    )
    t["levels"] = op.create_table(
        "levels",
        sa.Column("level_id", sa.String(40), primary_key=True),
        sa.Column("parent_id", sa.String(40), nullable=True),
        sa.Column("root_id", sa.String(40), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("density", sa.Float(), nullable=False),
        sa.Column("step", sa.JSON(), nullable=True),
        sa.Column("level_dir", sa.Text(), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True, index=True),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("finished_at", ts, nullable=True, index=True),
        *[
            sa.Column(c, sa.Float(), nullable=True)
            for c in (
                "achieved_sparsity",
                "test_acc",
                "test_top5",
                "test_loss",
                "best_test_acc",
                "train_loss",
                "train_acc",
            )
        ],
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
    )
    t["run_levels"] = op.create_table(
        "run_levels",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("level_id", sa.String(40), sa.ForeignKey("levels.level_id"), primary_key=True, index=True),
        sa.Column("position", sa.Integer(), nullable=False),
    )
    t["grid_points"] = op.create_table(
        "grid_points",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "sweep_id", sa.Integer(), sa.ForeignKey("sweeps.id", ondelete="CASCADE"), nullable=False, index=True
        ),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False, index=True),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("sparsity", sa.Float(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("axes", sa.JSON(), nullable=False),
        sa.Column("axes_key", sa.Text(), nullable=False),
        sa.Column("level_id", sa.String(40), sa.ForeignKey("levels.level_id"), nullable=False, index=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("naive_levels", sa.Integer(), nullable=False),
        sa.UniqueConstraint("sweep_id", "method", "sparsity", "seed", "axes_key"),
    )
    t["epochs"] = op.create_table(
        "epochs",
        sa.Column("level_id", sa.String(40), primary_key=True),
        sa.Column("epoch", sa.Integer(), primary_key=True),
        sa.Column("train_loss", sa.Float(), nullable=False),
        sa.Column("train_acc", sa.Float(), nullable=False),
        sa.Column("test_loss", sa.Float(), nullable=True),
        sa.Column("test_acc", sa.Float(), nullable=True),
        sa.Column("test_top5", sa.Float(), nullable=True),
        sa.Column("lr", sa.Float(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("images_per_s", sa.Float(), nullable=False),
        sa.Column("at", ts, nullable=False),
    )
    t["jobs"] = op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(40), primary_key=True),
        sa.Column("levels", sa.JSON(), nullable=False),
        sa.Column("depends_on", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("executor", sa.String(16), nullable=True),
        sa.Column("sched_id", sa.String(64), nullable=True),
        sa.Column("sweep", sa.String(128), nullable=False),
        sa.Column("job_file", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("level_id", sa.String(40), nullable=True),
        sa.Column("heartbeat_at", ts, nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )
    t["events"] = op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), nullable=False, index=True),
        sa.Column("at", ts, nullable=False),
        sa.Column("state_from", sa.String(16), nullable=True),
        sa.Column("state_to", sa.String(16), nullable=False),
        sa.Column("sched_id", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
    )
    t["attempts"] = op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), nullable=False, index=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("sched_id", sa.String(64), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("world_size", sa.Integer(), nullable=False),
        sa.Column("resumed_from", sa.Text(), nullable=True),
        sa.Column("started_at", ts, nullable=False),
        sa.Column("ended_at", ts, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
    )
    return t


def upgrade() -> None:
    conn = op.get_bind()
    old = {
        name: _rows(conn, name)
        for name in ("runs", "sweep_runs", "grid_points", "levels", "epochs", "events", "attempts")
    }
    for name in ("epochs", "levels", "events", "attempts", "grid_points", "sweep_runs", "runs"):
        op.drop_table(name)
    t = _create_tables()

    def lid(run_id: str, level: int) -> str:
        return f"{run_id}.{level}"

    done = {(r["run_id"], r["level"]): r for r in old["levels"]}
    runs, levels, run_levels, jobs = [], [], [], []
    for r in old["runs"]:
        runs.append({k: r[k] for k in ("run_id", "method", "seed", "axes", "config", "created_at")})
        ids = []
        for i, density in enumerate(r["densities"]):
            res = done.get((r["run_id"], i), {})
            levels.append(
                {
                    "level_id": lid(r["run_id"], i),
                    "parent_id": lid(r["run_id"], i - 1) if i else None,
                    "root_id": lid(r["run_id"], 0),
                    "depth": i,
                    "kind": "legacy",
                    "density": density,
                    "step": None,
                    "level_dir": f"{r['run_dir']}/level_{i}",
                    "job_id": r["run_id"],
                    "epoch": 0,
                    "finished_at": res.get("finished_at"),
                    **{
                        c: res.get(c)
                        for c in (
                            "achieved_sparsity",
                            "test_acc",
                            "test_top5",
                            "test_loss",
                            "best_test_acc",
                            "train_loss",
                            "train_acc",
                        )
                    },
                    "epochs": res.get("epochs", 0),
                    "seconds": res.get("seconds", 0.0),
                    "created_at": r["created_at"],
                }
            )
            run_levels.append({"run_id": r["run_id"], "level_id": lid(r["run_id"], i), "position": i})
            ids.append(lid(r["run_id"], i))
        jobs.append(
            {
                "job_id": r["run_id"],
                "levels": ids,
                "depends_on": [],
                "state": r["state"],
                "executor": r["executor"],
                "sched_id": r["job_id"],
                "sweep": "",
                "job_file": f"{r['run_dir']}/run.json",
                "attempts": r["attempts"],
                "level_id": None,
                "heartbeat_at": r["heartbeat_at"],
                "message": r["message"],
                "created_at": r["created_at"],
                "updated_at": r["updated_at"],
            }
        )
    points = [
        {
            **{
                k: p[k]
                for k in ("id", "sweep_id", "run_id", "method", "sparsity", "seed", "axes", "axes_key", "level")
            },
            "level_id": lid(p["run_id"], p["level"]),
            "naive_levels": p["level"] + 1,
        }
        for p in old["grid_points"]
    ]
    epochs = [
        {**{k: e[k] for k in e if k not in ("run_id", "level")}, "level_id": lid(e["run_id"], e["level"])}
        for e in old["epochs"]
    ]
    events = [
        {
            "id": e["id"],
            "job_id": e["run_id"],
            "at": e["at"],
            "state_from": e["state_from"],
            "state_to": e["state_to"],
            "sched_id": e["job_id"],
            "message": e["message"],
        }
        for e in old["events"]
    ]
    attempts = [
        {**{k: a[k] for k in a if k not in ("run_id", "job_id")}, "job_id": a["run_id"], "sched_id": a["job_id"]}
        for a in old["attempts"]
    ]
    for name, rows in (
        ("runs", runs),
        ("sweep_runs", old["sweep_runs"]),
        ("levels", levels),
        ("run_levels", run_levels),
        ("grid_points", points),
        ("epochs", epochs),
        ("jobs", jobs),
        ("events", events),
        ("attempts", attempts),
    ):
        if rows:
            op.bulk_insert(t[name], rows)
    # Specs stored before 0002 kept a `db:` URL as written, password included: remove it.
    sweeps = sa.Table("sweeps", sa.MetaData(), autoload_with=conn)
    for row in conn.execute(sa.select(sweeps.c.id, sweeps.c.spec)):
        spec = row.spec
        if isinstance(spec, dict) and spec.get("db"):
            try:
                safe = sa.engine.make_url(str(spec["db"])).render_as_string(hide_password=True)
            except Exception:  # noqa: BLE001 - unparsable: drop it rather than keep a secret
                safe = None
            conn.execute(sweeps.update().where(sweeps.c.id == row.id).values(spec={**spec, "db": safe}))
    if conn.dialect.name == "postgresql":  # explicit ids were inserted: move the sequences past them
        for name in ("grid_points", "events", "attempts"):
            conn.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f"COALESCE((SELECT MAX(id) FROM {name}), 0) + 1, false)"
                )
            )


def downgrade() -> None:
    raise NotImplementedError("0002 reshapes the store around levels; restore a backup to go back")
