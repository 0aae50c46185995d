"""maker-checker workflow columns, escalation, append-only audit log on PostgreSQL

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import daemon.store.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("escalated_at", daemon.store.types.UTCDateTime()),
    ("proposed_by", sa.String(length=200)),
    ("proposed_reason", sa.String(length=40)),
    ("proposed_note", sa.String(length=2000)),
    ("proposed_at", daemon.store.types.UTCDateTime()),
    ("resolved_by", sa.String(length=200)),
)


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("discrepancy", sa.Column(name, type_, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION segwatch_audit_append_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'audit_entry is append-only: % refused', TG_OP;
            END;
            $$ LANGUAGE plpgsql
        """)
        op.execute("""
            CREATE TRIGGER audit_entry_append_only
            BEFORE UPDATE OR DELETE ON audit_entry
            FOR EACH ROW EXECUTE FUNCTION segwatch_audit_append_only()
        """)
        op.execute("""
            CREATE TRIGGER audit_entry_no_truncate
            BEFORE TRUNCATE ON audit_entry
            FOR EACH STATEMENT EXECUTE FUNCTION segwatch_audit_append_only()
        """)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_entry_no_truncate ON audit_entry")
        op.execute("DROP TRIGGER audit_entry_append_only ON audit_entry")
        op.execute("DROP FUNCTION segwatch_audit_append_only()")
    for name, _ in reversed(_COLUMNS):
        op.drop_column("discrepancy", name)
