"""The audit log's append lock on a real PostgreSQL: taken at once by default, and by a
deferred log (a cycle's write) only at `hold()` or its first entry, so that work before
it does not make other writers wait, while entries still chain across transactions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from daemon.store.audit import AuditLog, verify
from daemon.store.db import make_engine, upgrade
from tests.realdeps import postgres_schema

pytestmark = pytest.mark.postgres

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine() -> Iterator[Engine]:
    with postgres_schema() as url:
        engine = make_engine(url)
        upgrade(engine)
        try:
            yield engine
        finally:
            engine.dispose()


def impatient(engine: Engine) -> Session:
    """A session whose lock waits give up after half a second."""
    session = Session(engine)
    session.execute(text("SET lock_timeout = '500ms'"))
    return session


def test_a_deferred_log_lets_other_appenders_run_until_it_holds(engine: Engine) -> None:
    """While a deferred log has not held, another transaction appends and commits without
    waiting; the deferred log's first entry then chains to that one (it reads the last
    entry once it holds). Once it holds, an appender waits for its commit."""
    with Session(engine) as first:
        first.execute(text("SELECT 1"))  # its transaction is open
        audit = AuditLog(first, defer=True)
        with impatient(engine) as other:
            AuditLog(other).append(AT, "other", "ledger_imported", None, {"n": 1})
            other.commit()  # did not wait: no lock was taken by the deferred log
        audit.append(AT, "engine", "detected", None, {"n": 2})
        first.flush()
        with impatient(engine) as blocked, pytest.raises(OperationalError,
                                                         match="lock timeout"):
            AuditLog(blocked)
        first.commit()
    with Session(engine) as check:
        result = verify(check)
        assert result.ok and result.checked == 2
        assert [row[0] for row in check.execute(text(
            "SELECT actor FROM audit_entry ORDER BY seq"))] == ["other", "engine"]


def test_an_eager_log_holds_from_its_start(engine: Engine) -> None:
    """The default log (imports, reviews) takes the lock when it is made: another
    appender waits for its transaction."""
    with Session(engine) as first:
        AuditLog(first)
        with impatient(engine) as blocked, pytest.raises(OperationalError,
                                                         match="lock timeout"):
            AuditLog(blocked)
        first.rollback()
    with Session(engine) as after:
        AuditLog(after).append(AT, "engine", "detected", None, {})
        after.commit()
        assert verify(after).ok


def test_hold_is_taken_once(engine: Engine) -> None:
    """Holding again, or appending after holding, reads the last entry only once: two
    entries of one transaction chain to each other."""
    with Session(engine) as session:
        audit = AuditLog(session, defer=True)
        audit.hold()
        audit.hold()
        audit.append(AT, "engine", "detected", None, {"n": 1})
        audit.append(AT, "engine", "detected", None, {"n": 2})
        session.commit()
        result = verify(session)
        assert result.ok and result.checked == 2
