"""levels: the resolution a level's cost was counted at; run_levels: each level's role in its run

Revision ID: 0008
Revises: 0007

A level's multiply-adds per example depend on the input's size: ResNet-50 is 4.1 G at 224 px and
5.3 G at 256. The cost is counted at the resolution the level trains at (its last epoch's, under
progressive resizing), and `levels.resolution` (the training input's height in pixels) now says
which, beside flops_dense and flops. Null for levels finished before: their cost was counted at
the test resolution, and their metrics.json does not say so.

A level is shared by every run that computes it, and its role differs between them: trunk level
1 at prune.rate 0.2 (density 0.8) is, to a run at rate 0.5 with target 0.2, a branch from its
level 0. `levels.kind` holds the role in whichever run planned it first; `run_levels.kind` now
holds each run's, what query and status show. Filled here by the rule the planner follows
(core.levels.kind_in_run, written out below so this migration never changes): trunk when the
level's density is the run's trunk density at its depth, branch otherwise; other kinds as they
were. And a control's grid points show IMP's level (the one it controls), not its depth.
"""

import json
from typing import Any, Union
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _rate(config: Any) -> float:
    if isinstance(config, str):
        config = json.loads(config)
    return float(((config or {}).get("prune") or {}).get("rate", 0.2))


def upgrade() -> None:
    with op.batch_alter_table("levels") as batch:
        batch.add_column(sa.Column("resolution", sa.Integer(), nullable=True))
    with op.batch_alter_table("run_levels") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=True))
    op.execute("UPDATE run_levels SET kind = (SELECT l.kind FROM levels l WHERE l.level_id = run_levels.level_id)")
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT rl.run_id, rl.level_id, l.kind, l.depth, l.density, CAST(r.config AS TEXT) "
            "FROM run_levels rl JOIN levels l ON l.level_id = rl.level_id JOIN runs r ON r.run_id = rl.run_id "
            "WHERE l.kind IN ('trunk', 'branch')"
        )
    ).all()
    rates: dict[str, float] = {}
    changed = []
    for run_id, level_id, kind, depth, density, config in rows:
        if run_id not in rates:
            rates[run_id] = _rate(config)
        trunk = abs(round((1.0 - rates[run_id]) ** int(depth), 12) - float(density)) <= 1e-9
        role = "trunk" if trunk else "branch"
        if role != kind:
            changed.append({"run_id": run_id, "level_id": level_id, "kind": role})
    if changed:
        conn.execute(
            sa.text("UPDATE run_levels SET kind = :kind WHERE run_id = :run_id AND level_id = :level_id"), changed
        )
    with op.batch_alter_table("run_levels") as batch:
        batch.alter_column("kind", existing_type=sa.String(16), nullable=False)
    op.execute(
        "UPDATE grid_points SET level = level - 1 "
        "WHERE level_id IN (SELECT level_id FROM levels WHERE kind = 'control')"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE grid_points SET level = level + 1 "
        "WHERE level_id IN (SELECT level_id FROM levels WHERE kind = 'control')"
    )
    with op.batch_alter_table("run_levels") as batch:
        batch.drop_column("kind")
    # not a batch: SQLite would rebuild levels, which other tables' foreign keys refer to
    op.drop_column("levels", "resolution")
