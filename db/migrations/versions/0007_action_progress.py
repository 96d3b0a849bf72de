"""actions: the progress a failed job had saved, for telling a slow level from a stuck one

Revision ID: 0007
Revises: 0006

A level longer than its job's time limit times out slice after slice while it advances; the
supervisor must not count that as the same failure again (retry.same_error_limit), only a time-out
that saved no more than the one before. Each `failure` action now keeps the steps the job's level
had saved (its checkpoint) when it failed; None where the job did not say.
"""

from typing import Union
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: Union[str, Sequence[str], None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("progress", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("actions") as batch:
        batch.drop_column("progress")
