"""Real components tests depend on: with CI=true a missing one fails, never skips."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get("SEGWATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def missing(component: str, reason: str) -> None:
    """Fail under CI, skip elsewhere: a test that needs `component` cannot run."""
    message = f"{component} is not available: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """Create an isolated PostgreSQL schema; yield a store URL bound to it; drop it after."""
    schema = f"sw_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # any connection failure means the server is unavailable
        admin.dispose()
        missing("PostgreSQL", f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
