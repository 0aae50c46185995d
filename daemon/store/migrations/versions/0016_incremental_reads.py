"""incremental reads: where each checkpoint's rotating re-read stopped and how many
wallets it read, and from which height the scan traced internal transfers

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import daemon.store.types

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoint") as batch:
        batch.add_column(sa.Column("swept_at", daemon.store.types.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("wallets_read", sa.Integer(), nullable=True))
    with op.batch_alter_table("scan_cursor") as batch:
        batch.add_column(sa.Column("traced_from", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scan_cursor") as batch:
        batch.drop_column("traced_from")
    with op.batch_alter_table("checkpoint") as batch:
        batch.drop_column("wallets_read")
        batch.drop_column("swept_at")
