"""Persistence: SQLModel tables, Alembic migrations, idempotent repository functions."""
