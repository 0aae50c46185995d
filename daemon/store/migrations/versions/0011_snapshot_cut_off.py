"""snapshot cut-off: allocation_snapshot.as_of, the time the books were cut (SPEC §8)

Nullable: a snapshot imported before this revision has no recorded cut-off, and its
import time stands for it (the code reads a missing as_of as imported_at).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from daemon.store.types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("allocation_snapshot", sa.Column("as_of", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("allocation_snapshot") as batch:
        batch.drop_column("as_of")
