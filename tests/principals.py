"""Authenticated actors for service-level tests (the CLI and API tests sign in for real)."""

from __future__ import annotations

from daemon.auth.policy import Principal

FEEDER = Principal("feeder-test", frozenset({"feeder"}), "test")
"""The books system pushing ledgers and approved withdrawals."""


AUDITOR = Principal("audrey", frozenset({"auditor"}), "test")
"""An auditor making export packages."""


def acting(name: str, *roles: str) -> Principal:
    """A principal called `name` holding `roles`."""
    return Principal(name, frozenset(roles), "test")
