"""reopens: a balance finding that was resolved and whose condition persists reopens as a
new discrepancy linked to the previous one (SPEC §8)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # ADD COLUMN … REFERENCES in place: a batch rebuild of the table would have to
        # recreate the partial unique index on open fingerprints
        op.execute("ALTER TABLE discrepancy ADD COLUMN reopens INTEGER "
                   "REFERENCES discrepancy (id)")
        return
    op.add_column("discrepancy", sa.Column("reopens", sa.Integer(), nullable=True))
    op.create_foreign_key("discrepancy_reopens_fkey", "discrepancy", "discrepancy",
                          ["reopens"], ["id"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("discrepancy_reopens_fkey", "discrepancy", type_="foreignkey")
    op.drop_column("discrepancy", "reopens")
