"""The insider attacks on the audit log, each now caught (SQLite and PostgreSQL): a log
rewritten with every hash recomputed and its newest entry deleted, a discrepancy
resolved by a direct UPDATE, a log truncated together with its stored heads. Caught by
the signed audit heads (Ed25519, key outside the database), by replaying every
discrepancy from the log, and by the head a package's manifest recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlmodel import Session, col, select

from daemon.audit import check, head_of, verify
from daemon.export.service import export
from daemon.service import Service
from daemon.store.audit import entry_hash
from daemon.store.heads import HeadSigner
from daemon.store.models import AuditEntry
from tests.integration.test_workflow import Clock, grow_log, make_world, tamper
from tests.principals import AUDITOR

EXPORT_KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> tuple[Service, Clock]:
    service, clock = make_world(store_url, tmp_path)
    service.head_signer = HeadSigner(Ed25519PrivateKey.generate())
    service.sign_head()
    grow_log(service)
    return service, clock


def rewrite(service: Service, seq: int, actor: str) -> None:
    """The attack: change entry `seq`'s actor and recompute its hash and every later
    entry's prev_hash and hash, so the chain verifies again."""
    with Session(service.store.engine) as session:
        entries = list(session.exec(select(AuditEntry).order_by(col(AuditEntry.seq))))
    statements, prev = [], None
    for entry in entries:
        if (entry.seq or 0) < seq:
            prev = entry.hash
            continue
        who = actor if entry.seq == seq else entry.actor
        digest = entry_hash(entry.seq or 0, entry.at, who, entry.action, entry.discrepancy_id,
                            entry.payload, prev or "")
        statements.append(f"UPDATE audit_entry SET actor = '{who}', prev_hash = '{prev}', "
                          f"hash = '{digest}' WHERE seq = {entry.seq}")
        prev = digest
    tamper(service, *statements)


def test_an_intact_log_verifies_with_its_signed_heads(world: tuple[Service, Clock]) -> None:
    """Every write signed the new head; all checks pass."""
    service, _ = world
    report = verify(service)
    assert report.ok, report.problems
    assert report.heads >= 4 and report.entries == 6


def test_a_rewritten_log_with_recomputed_hashes_is_caught_by_the_signed_heads(
        world: tuple[Service, Clock]) -> None:
    """The issue's attack: an edited actor, every hash recomputed, the newest entry
    deleted. The hash chain alone says intact; the signed heads do not match."""
    service, _ = world
    rewrite(service, 3, "mallory")
    tamper(service, "DELETE FROM audit_entry WHERE seq = 6")
    assert service.store.verify_audit().ok  # what part one reported: "intact"
    report = verify(service)
    assert not report.ok
    assert any("entry 3 no longer has the hash" in p or "entry 4 no longer" in p
               for p in report.problems), report.problems
    assert any("the log ends at entry 5 but the head recorded entry 6" in p
               for p in report.problems), report.problems


def test_a_direct_update_of_a_discrepancy_is_named_by_the_replay(
        world: tuple[Service, Clock]) -> None:
    """`UPDATE discrepancy SET status='resolved'` writes no audit entry; the replay of
    the log says it is still proposed, and verify names the row."""
    service, _ = world
    with service.store.engine.begin() as db:
        db.execute(text("UPDATE discrepancy SET status = 'resolved', resolved_by = 'carl' "
                        "WHERE status = 'proposed'"))
    report = verify(service)
    assert not report.ok
    assert any("the table says status 'resolved', the log says 'proposed'" in p
               for p in report.problems), report.problems


def test_truncation_with_the_stored_heads_deleted_is_caught_against_a_package(
        world: tuple[Service, Clock], tmp_path: Path) -> None:
    """An insider who deletes the newest entries (here: a user's creation and the export's
    own entry) and every stored head leaves a log that verifies on its own; the head an
    export package recorded (outside the database) proves the log no longer extends it."""
    service, _ = world
    service.identity.add_user(None, "root", ["admin"], None)  # entry 7
    package = tmp_path / "package.zip"
    export(service, package, EXPORT_KEY, actor=AUDITOR)
    head = head_of(package)
    assert head.signature and head.seq == 7
    assert verify(service, against=head).ok
    tamper(service, "DELETE FROM audit_head", "DELETE FROM audit_entry WHERE seq >= 7")
    alone = verify(service)
    assert alone.ok  # nothing left in the database to contradict it
    report = verify(service, against=head)
    assert any("entries were deleted (truncated)" in p for p in report.problems)


def test_the_daemons_audit_check_makes_status_fail_closed_after_a_direct_update(
        world: tuple[Service, Clock]) -> None:
    """The issue's attack: `UPDATE discrepancy SET status='resolved'` on the last open
    item made `status` say compliant. The daemon's periodic check (and `run --once`)
    records the mismatch in the log, and from then on every chain is `unverified`
    naming it, until the table matches its history again."""
    service, _ = world
    assert [s.status for s in service.status()] == ["discrepancy"]
    with service.store.engine.begin() as db:
        db.execute(text("UPDATE discrepancy SET status = 'resolved' WHERE status IN "
                        "('open', 'proposed')"))
    assert [s.status for s in service.status()] == ["compliant"]  # what part one said
    assert not check(service).ok
    (chain,) = service.status()
    assert chain.status == "unverified"
    assert chain.last_error is not None and "audit log and table disagree" in \
        chain.last_error and "the table says status 'resolved'" in chain.last_error
    check(service)  # the same problems again: nothing more is written
    assert sum(1 for e in _actions(service) if e == "audit_checked") == 1
    with service.store.engine.begin() as db:  # the table put back as the log says
        db.execute(text("UPDATE discrepancy SET status = 'proposed' WHERE id = 2"))
    assert check(service).ok
    assert [s.status for s in service.status()] == ["discrepancy"]


def _actions(service: Service) -> list[str]:
    with Session(service.store.engine) as session:
        return [e.action for e in session.exec(select(AuditEntry))]
