"""a discrepancy's asset may be an unconfigured token's contract address (42 characters):
widen the column from 20 to 64 characters, as the transfer tables have it

An unauthorized outflow of a token the chain does not configure names the token by its
contract; on PostgreSQL that insert failed ("value too long for type character
varying(20)") and the whole cycle with it. SQLite does not enforce the length.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("discrepancy") as batch:
        batch.alter_column("asset", existing_type=sa.String(20), type_=sa.String(64),
                           existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("discrepancy") as batch:
        batch.alter_column("asset", existing_type=sa.String(64), type_=sa.String(20),
                           existing_nullable=True)
