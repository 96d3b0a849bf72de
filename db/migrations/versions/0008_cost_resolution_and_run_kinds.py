"""levels: the resolution a level's cost was counted at

Revision ID: 0008
Revises: 0007

A level's multiply-adds per example depend on the input's size: ResNet-50 is 4.1 G at 224 px and
5.3 G at 256. The cost is counted at the resolution the level trains at (its last epoch's, under
progressive resizing), and `resolution` (the training input's height in pixels) now says which,
beside flops_dense and flops. Null for levels finished before: their cost was counted at the
test resolution, and their metrics.json does not say so.
"""

from typing import Union
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("levels") as batch:
        batch.add_column(sa.Column("resolution", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("levels") as batch:
        batch.drop_column("resolution")
