"""checkpoint.shard, checkpoint.shards: a cycle reads one wallet shard of its chain

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("checkpoint", sa.Column("shard", sa.Integer(), nullable=False,
                                          server_default=sa.text("0")))
    op.add_column("checkpoint", sa.Column("shards", sa.Integer(), nullable=False,
                                          server_default=sa.text("1")))
    op.create_index("ix_checkpoint_chain_shard", "checkpoint", ["chain_id", "shards", "shard",
                                                                 "id"])


def downgrade() -> None:
    op.drop_index("ix_checkpoint_chain_shard", table_name="checkpoint")
    with op.batch_alter_table("checkpoint") as batch:
        batch.drop_column("shards")
        batch.drop_column("shard")
