"""runs: the number of levels each run trains and the last of them, kept by the planner

Revision ID: 0006
Revises: 0005

`status` shows every run by its last level (in training order) and its number of levels. Found
by aggregating run_levels, that cost PostgreSQL a pass and a hash over every row of it (0.08 s at
150,000 levels, on the path of every status refresh); these two columns are written with the
plan (Store.record_plan, whenever a run's levels change) and filled here for stores of before.
"""

from typing import Union
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("n_levels", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_level_id", sa.String(40), nullable=True))
    op.execute(
        "UPDATE runs SET n_levels = (SELECT count(*) FROM run_levels r WHERE r.run_id = runs.run_id), "
        "last_level_id = (SELECT r.level_id FROM run_levels r WHERE r.run_id = runs.run_id "
        "ORDER BY r.position DESC, r.level_id DESC LIMIT 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("last_level_id")
        batch.drop_column("n_levels")
