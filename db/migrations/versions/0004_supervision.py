"""unattended sweeps: the supervisor's lease and actions, and each job's failure, verdict and retries

Revision ID: 0004
Revises: 0003

A sweep's supervisor (`tp-sweep supervise`) holds a lease (table supervisors) and records every
action it takes, with its reason (table actions). Each job gets the class of its last failure,
the supervisor's verdict on it, when it is retried, how often it was, and the sbatch settings its
resubmissions get (more memory after an OOM, nodes to exclude). Nothing recorded before changes:
the new job columns start empty (retries 0).
"""

from typing import Union
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("failure", sa.String(24), nullable=True))
        batch.add_column(sa.Column("verdict", sa.String(16), nullable=True))
        batch.add_column(sa.Column("retry_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("sbatch", sa.JSON(), nullable=True))
    op.create_table(
        "supervisors",
        sa.Column("sweep", sa.String(128), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("where", sa.String(16), nullable=False),
        sa.Column("sched_id", sa.String(64), nullable=True),
        sa.Column("lease_s", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("stopped", sa.Text(), nullable=True),
        sa.Column("submit", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sweep", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("failure", sa.String(24), nullable=True),
        sa.Column("level_id", sa.String(40), nullable=True),
        sa.Column("node", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
    )
    op.create_index("ix_actions_sweep", "actions", ["sweep"])
    op.create_index("ix_actions_job_id", "actions", ["job_id"])


def downgrade() -> None:
    op.drop_table("actions")
    op.drop_table("supervisors")
    with op.batch_alter_table("jobs") as batch:
        for col in ("sbatch", "retries", "retry_at", "verdict", "failure"):
            batch.drop_column(col)
