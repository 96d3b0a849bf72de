"""levels: cost, whole-network sparsity, code identity and provenance

Revision ID: 0003
Revises: 0002

A finished level now also records what it costs and who computed it:
- network_sparsity: the fraction of all its parameters at zero (achieved_sparsity counts the
  prunable weights only);
- params, nonzero_params: all parameters, and those not zero;
- flops_dense, flops: multiply-adds per example of its conv and linear layers, dense and with
  its zeros skipped (the theoretical speed-up is their ratio);
- code: the identity of the code that trained it (core/code.py: the code its computation runs),
  sources: that of the whole tree it came from, and provenance: that code's version, git commit
  and diff, the torch, FFCV, CUDA and cuDNN versions, device, world size and hosts.
All are nullable: levels finished before this revision keep null there (their metrics.json has
none of it), and nothing else changes.
"""

from typing import Union
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = (
    ("network_sparsity", sa.Float()),
    ("params", sa.BigInteger()),
    ("nonzero_params", sa.BigInteger()),
    ("flops_dense", sa.Float()),
    ("flops", sa.Float()),
    ("code", sa.String(40)),
    ("sources", sa.String(40)),
    ("provenance", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("levels") as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("levels") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
