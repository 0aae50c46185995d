"""transfers withdrawals scan cursor

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import daemon.store.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approved_withdrawal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ext_id", sa.String(length=200), nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("from_address", sa.String(length=100), nullable=False),
        sa.Column("to_address", sa.String(length=100), nullable=False),
        sa.Column("asset", sa.String(length=64), nullable=False),
        sa.Column("amount", daemon.store.types.Amount(length=80), nullable=False),
        sa.Column("approved_by", sa.String(length=200), nullable=False),
        sa.Column("approved_at", daemon.store.types.UTCDateTime(), nullable=False),
        sa.Column("tx_hash", sa.String(length=100), nullable=True),
        sa.Column("imported_at", daemon.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["chain_id"],
            ["chain.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ext_id"),
    )
    with op.batch_alter_table("approved_withdrawal", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_approved_withdrawal_chain_id"), ["chain_id"], unique=False
        )

    op.create_table(
        "fee_payment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.Integer(), nullable=False),
        sa.Column("block_hash", sa.String(length=100), nullable=False),
        sa.Column("tx_hash", sa.String(length=100), nullable=False),
        sa.Column("payer", sa.String(length=100), nullable=False),
        sa.Column("amount", daemon.store.types.Amount(length=80), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("orphaned", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["chain_id"],
            ["chain.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chain_id", "tx_hash"),
    )
    with op.batch_alter_table("fee_payment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fee_payment_chain_id"), ["chain_id"], unique=False)

    op.create_table(
        "scan_cursor",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("start_height", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=100), nullable=False),
        sa.Column("updated_at", daemon.store.types.UTCDateTime(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("error_at", daemon.store.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["chain_id"],
            ["chain.id"],
        ),
        sa.PrimaryKeyConstraint("chain_id"),
    )
    op.create_table(
        "scanned_block",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=100), nullable=False),
        sa.Column("parent_hash", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["chain_id"],
            ["chain.id"],
        ),
        sa.PrimaryKeyConstraint("chain_id", "height"),
    )
    op.create_table(
        "transfer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("block_number", sa.Integer(), nullable=False),
        sa.Column("block_hash", sa.String(length=100), nullable=False),
        sa.Column("tx_hash", sa.String(length=100), nullable=True),
        sa.Column("log_index", sa.Integer(), nullable=True),
        sa.Column("trace_path", sa.String(length=100), nullable=True),
        sa.Column("sender", sa.String(length=100), nullable=True),
        sa.Column("recipient", sa.String(length=100), nullable=False),
        sa.Column("contract", sa.String(length=64), nullable=True),
        sa.Column("asset", sa.String(length=64), nullable=False),
        sa.Column("amount", daemon.store.types.Amount(length=80), nullable=False),
        sa.Column("orphaned", sa.Boolean(), nullable=False),
        sa.Column("withdrawal_id", sa.Integer(), nullable=True),
        sa.Column("seen_at", daemon.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["chain_id"],
            ["chain.id"],
        ),
        sa.ForeignKeyConstraint(
            ["withdrawal_id"],
            ["approved_withdrawal.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chain_id", "key"),
    )
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.create_index("ix_transfer_chain_block", ["chain_id", "block_number"], unique=False)

    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("amount", daemon.store.types.Amount(length=80), nullable=True)
        )
        batch_op.add_column(sa.Column("counterparty", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("event", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.drop_column("event")
        batch_op.drop_column("counterparty")
        batch_op.drop_column("amount")

    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.drop_index("ix_transfer_chain_block")

    op.drop_table("transfer")
    op.drop_table("scanned_block")
    op.drop_table("scan_cursor")
    with op.batch_alter_table("fee_payment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fee_payment_chain_id"))

    op.drop_table("fee_payment")
    with op.batch_alter_table("approved_withdrawal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approved_withdrawal_chain_id"))

    op.drop_table("approved_withdrawal")
