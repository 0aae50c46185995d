"""checkpoint.scanned: continuity is checked from checkpoints whose scan succeeded

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("checkpoint", sa.Column("scanned", sa.Boolean(), nullable=False,
                                          server_default=sa.text("true")))


def downgrade() -> None:
    op.drop_column("checkpoint", "scanned")
