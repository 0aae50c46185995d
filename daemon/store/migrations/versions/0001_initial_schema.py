"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import daemon.store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "allocation_snapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("imported_at", daemon.store.types.UTCDateTime(), nullable=False),
        sa.Column("source_name", sa.String(length=500), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "chain",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("family", sa.String(length=8), nullable=False),
        sa.Column("network", sa.String(length=32), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("last_error_at", daemon.store.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "asset",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(length=20), nullable=False),
        sa.Column("contract", sa.String(length=64), nullable=True),
        sa.Column("decimals", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["chain_id"],
            ["chain.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chain_id", "symbol"),
    )
    with op.batch_alter_table("asset", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_asset_chain_id"), ["chain_id"], unique=False)

    op.create_table(
        "checkpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("cycle_id", sa.String(length=40), nullable=False),
        sa.Column("block_height", sa.Integer(), nullable=False),
        sa.Column("block_hash", sa.String(length=100), nullable=False),
        sa.Column("block_time", daemon.store.types.UTCDateTime(), nullable=True),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("wallets", sa.Integer(), nullable=False),
        sa.Column("observations", sa.Integer(), nullable=False),
        sa.Column("read_errors", sa.Integer(), nullable=False),
        sa.Column("findings", sa.Integer(), nullable=False),
        sa.Column("finished_at", daemon.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["chain_id"],
            ["chain.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("checkpoint", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_checkpoint_chain_id"), ["chain_id"], unique=False)

    op.create_table(
        "discrepancy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=300), nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=100), nullable=True),
        sa.Column("asset", sa.String(length=20), nullable=True),
        sa.Column("contract", sa.String(length=64), nullable=True),
        sa.Column("owners", daemon.store.types.JSONText(), nullable=False),
        sa.Column("onchain", daemon.store.types.Amount(length=80), nullable=True),
        sa.Column("ledger", daemon.store.types.Amount(length=80), nullable=True),
        sa.Column("difference", daemon.store.types.Amount(length=80), nullable=True),
        sa.Column("tx_hash", sa.String(length=100), nullable=True),
        sa.Column("block_number", sa.Integer(), nullable=True),
        sa.Column("block_hash", sa.String(length=100), nullable=True),
        sa.Column("detected_at", daemon.store.types.UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", daemon.store.types.UTCDateTime(), nullable=False),
        sa.Column("cure_deadline", daemon.store.types.UTCDateTime(), nullable=False),
        sa.Column("closed_at", daemon.store.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["chain_id"],
            ["chain.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_discrepancy_chain_id"), ["chain_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_discrepancy_fingerprint"), ["fingerprint"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_discrepancy_status"), ["status"], unique=False)
        batch_op.create_index(
            "ux_discrepancy_open_fingerprint",
            ["fingerprint"],
            unique=True,
            sqlite_where=sa.text("status IN ('open', 'proposed')"),
            postgresql_where=sa.text("status IN ('open', 'proposed')"),
        )

    op.create_table(
        "wallet",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chain_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=100), nullable=False),
        sa.Column("structure", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("mpc_key_id", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["chain_id"],
            ["chain.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chain_id", "address"),
    )
    with op.batch_alter_table("wallet", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_wallet_chain_id"), ["chain_id"], unique=False)

    op.create_table(
        "allocation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("wallet_id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("amount", daemon.store.types.Amount(length=80), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["asset.id"],
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["allocation_snapshot.id"],
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallet.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("allocation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_allocation_snapshot_id"), ["snapshot_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_allocation_wallet_id"), ["wallet_id"], unique=False)

    op.create_table(
        "audit_entry",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", daemon.store.types.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("discrepancy_id", sa.Integer(), nullable=True),
        sa.Column("payload", daemon.store.types.JSONText(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["discrepancy_id"],
            ["discrepancy.id"],
        ),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("hash"),
    )
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_entry_discrepancy_id"), ["discrepancy_id"], unique=False
        )

    op.create_table(
        "balance_observation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("wallet_id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("amount", daemon.store.types.Amount(length=80), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("block_height", sa.Integer(), nullable=False),
        sa.Column("block_hash", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("observed_at", daemon.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["asset.id"],
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallet.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("balance_observation", schema=None) as batch_op:
        batch_op.create_index(
            "ix_balance_observation_pair", ["wallet_id", "asset_id", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("balance_observation", schema=None) as batch_op:
        batch_op.drop_index("ix_balance_observation_pair")

    op.drop_table("balance_observation")
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entry_discrepancy_id"))

    op.drop_table("audit_entry")
    with op.batch_alter_table("allocation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_allocation_wallet_id"))
        batch_op.drop_index(batch_op.f("ix_allocation_snapshot_id"))

    op.drop_table("allocation")
    with op.batch_alter_table("wallet", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wallet_chain_id"))

    op.drop_table("wallet")
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.drop_index(
            "ux_discrepancy_open_fingerprint",
            sqlite_where=sa.text("status IN ('open', 'proposed')"),
            postgresql_where=sa.text("status IN ('open', 'proposed')"),
        )
        batch_op.drop_index(batch_op.f("ix_discrepancy_status"))
        batch_op.drop_index(batch_op.f("ix_discrepancy_fingerprint"))
        batch_op.drop_index(batch_op.f("ix_discrepancy_chain_id"))

    op.drop_table("discrepancy")
    with op.batch_alter_table("checkpoint", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_checkpoint_chain_id"))

    op.drop_table("checkpoint")
    with op.batch_alter_table("asset", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_asset_chain_id"))

    op.drop_table("asset")
    op.drop_table("chain")
    op.drop_table("allocation_snapshot")
