"""Shared fixtures: store URLs on both backends, clean global state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests.realdeps import postgres_schema


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Every test starts with structlog's defaults (the CLI configures it per run)."""
    yield
    structlog.reset_defaults()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store URL: an SQLite file, or an isolated PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'segwatch.db'}"
        return
    with postgres_schema() as url:
        yield url

pytest_plugins = ["tests.anvil", "tests.devnodes", "tests.litecoind", "tests.esplora_server", "tests.oidcprovider", "tests.evmnodes"]
