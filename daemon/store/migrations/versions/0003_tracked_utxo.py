"""tracked utxo outputs and seeded wallets

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import daemon.store.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracked_utxo",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("txid", sa.String(length=64), nullable=False),
        sa.Column("vout", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=100), nullable=False),
        sa.Column("amount", daemon.store.types.Amount(length=80), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("spent_by", sa.String(length=64), nullable=True),
        sa.Column("spent_height", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["chain_id"], ["chain.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chain_id", "txid", "vout"),
    )
    op.create_index("ix_tracked_utxo_unspent", "tracked_utxo", ["chain_id", "spent_height"])
    op.create_table(
        "utxo_seed",
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=100), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["chain_id"], ["chain.id"]),
        sa.PrimaryKeyConstraint("chain_id", "address"),
    )


def downgrade() -> None:
    op.drop_table("utxo_seed")
    op.drop_index("ix_tracked_utxo_unspent", table_name="tracked_utxo")
    op.drop_table("tracked_utxo")
