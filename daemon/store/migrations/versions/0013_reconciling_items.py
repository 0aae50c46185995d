"""reconciling items: each transfer's and fee's block time (and the time of the block
that replaced it when a reorg orphaned it), and the in-transit amount a balance finding
carries (SPEC §8)

Nullable: transfers scanned before this revision have no recorded block time; they
cannot be placed against a cut-off and are never reconciling items.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.store.types import Amount, UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("transfer", sa.Column("block_time", UTCDateTime(), nullable=True))
    op.add_column("fee_payment", sa.Column("block_time", UTCDateTime(), nullable=True))
    op.add_column("transfer", sa.Column("orphaned_at", UTCDateTime(), nullable=True))
    op.add_column("fee_payment", sa.Column("orphaned_at", UTCDateTime(), nullable=True))
    op.add_column("discrepancy", sa.Column("in_transit", Amount(), nullable=True))
    op.create_index("ix_transfer_chain_time", "transfer", ["chain_id", "block_time"])
    op.create_index("ix_fee_payment_chain_time", "fee_payment", ["chain_id", "block_time"])
    op.create_index("ix_transfer_chain_orphaned_at", "transfer", ["chain_id", "orphaned_at"])
    op.create_index("ix_fee_payment_chain_orphaned_at", "fee_payment",
                    ["chain_id", "orphaned_at"])
    op.create_index("ix_fee_payment_chain_block", "fee_payment", ["chain_id", "block_number"])


def downgrade() -> None:
    op.drop_index("ix_fee_payment_chain_block", "fee_payment")
    op.drop_index("ix_fee_payment_chain_orphaned_at", "fee_payment")
    op.drop_index("ix_transfer_chain_orphaned_at", "transfer")
    op.drop_index("ix_fee_payment_chain_time", "fee_payment")
    op.drop_index("ix_transfer_chain_time", "transfer")
    op.drop_column("discrepancy", "in_transit")
    op.drop_column("fee_payment", "orphaned_at")
    op.drop_column("transfer", "orphaned_at")
    op.drop_column("fee_payment", "block_time")
    op.drop_column("transfer", "block_time")
