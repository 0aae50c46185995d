"""The exception workflow on a real store (SQLite and PostgreSQL): maker-checker
lifecycle, refusals (audited, nothing else written), escalation once past the cure
deadline, and the audit log's hash chain — verified, and tampering detected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select

from chains.evm.address import canonical_evm_address
from chains.fake import FakeAdapter
from daemon.bootstrap import open_store
from daemon.errors import InputError, Unauthenticated
from daemon.inputs.config import Settings
from daemon.service import Service
from daemon.store.db import make_engine, upgrade
from daemon.store.models import AuditEntry
from tests.principals import FEEDER, acting
from tests.realdeps import postgres_schema

ALICE = canonical_evm_address("0x" + "a1" * 20)
BOB = canonical_evm_address("0x" + "b2" * 20)
FRIDAY = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # 10:00 in New York
USERS = [{"name": "mia", "roles": ["maker"]}, {"name": "carl", "roles": ["checker"]},
         {"name": "cora", "roles": ["maker", "checker"]}, {"name": "val", "roles": ["viewer"]}]


USER = {u["name"]: acting(u["name"], *u["roles"]) for u in USERS}  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = FRIDAY

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> tuple[Service, Clock]:
    return make_world(store_url, tmp_path)


def make_world(store_url: str, tmp_path: Path) -> tuple[Service, Clock]:
    fake = FakeAdapter(balances_by_key={(ALICE, "ETH"): 10**17, (BOB, "ETH"): 10**17})
    settings = Settings(store={"url": store_url}, users=USERS, daemon={"allow_dual_role": True},
                        chains=[{  # type: ignore[arg-type, list-item]
        "name": "ethereum", "family": "evm", "chain_id": 1, "confirmations": 0,
        "sources": [{"kind": "jsonrpc", "url": "http://127.0.0.1:1/"}]}])
    upgrade(make_engine(store_url))
    clock = Clock()
    service = Service(settings, open_store(store_url), lambda _c, _s: fake, clock)
    ledger = tmp_path / "ledger.csv"
    ledger.write_text("chain,address,structure,owner,asset,amount\n"
                      f"ethereum,{ALICE},segregated,alice,ETH,1\n"
                      f"ethereum,{BOB},segregated,bob,ETH,1\n")
    service.import_ledger(ledger, dry_run=False, actor=FEEDER)
    assert service.run_cycle(settings.chains[0]).error is None  # two shortfalls
    return service, clock


def ids(service: Service) -> tuple[int, int]:
    first, second = (r.row.id for r in service.discrepancies(status="open"))
    assert first is not None and second is not None
    return first, second


def history(service: Service, id_: int) -> list[tuple[str, str]]:
    found = service.store.discrepancy(id_)
    assert found is not None
    return [(e.actor, e.action) for e in found[1]]


def test_propose_approve_resolves_and_reject_reopens(world: tuple[Service, Clock]) -> None:
    """A maker proposes (open → proposed), another checker approves (→ resolved, closed);
    a rejection with a note sends a proposal back to open. Each step is an audit entry."""
    service, clock = world
    first, second = ids(service)
    proposed = service.act(first, "propose", USER["mia"], reason="ledger_corrected",
                           note="ledger row fixed in ticket 42")
    assert proposed.row.status == "proposed" and proposed.row.proposed_by == "mia"
    clock.now += timedelta(minutes=5)
    resolved = service.act(first, "approve", USER["carl"])
    assert (resolved.row.status, resolved.row.resolved_by) == ("resolved", "carl")
    assert resolved.row.closed_at == clock.now
    service.act(second, "propose", USER["cora"], reason="false_positive", note="test wallet")
    reopened = service.act(second, "reject", USER["carl"], note="not a test wallet")
    assert reopened.row.status == "open"
    assert history(service, first) == [("engine", "detected"), ("mia", "proposed"),
                                       ("carl", "resolved")]
    assert history(service, second)[-2:] == [("cora", "proposed"), ("carl", "rejected")]
    assert service.store.verify_audit().ok


@pytest.mark.parametrize(("action", "user", "kwargs", "message"), [
    ("propose", "carl", {"reason": "false_positive", "note": "x"}, "needs the maker role"),
    ("propose", "val", {"reason": "false_positive", "note": "x"}, "needs the maker role"),
    ("propose", "mia", {"reason": "because", "note": "x"}, "unknown reason code"),
    ("propose", "mia", {"reason": "false_positive", "note": "  "}, "needs a note"),
    ("approve", "carl", {}, "cannot approve a discrepancy that is open"),
    ("reject", "carl", {"note": "no"}, "cannot reject a discrepancy that is open"),
])
def test_refused_actions_change_nothing_but_are_audited(
        world: tuple[Service, Clock], action: str, user: str, kwargs: dict[str, str],
        message: str) -> None:
    """A refused action raises one line (exit 2 at the CLI), leaves the discrepancy as it
    was, and is recorded as a `refused` audit entry."""
    service, _ = world
    first, _ = ids(service)
    with pytest.raises(InputError, match=message):
        service.act(first, action, USER[user], **kwargs)  # type: ignore[arg-type]
    found = service.store.discrepancy(first)
    assert found is not None and found[0].row.status == "open"
    assert history(service, first)[-1] == (user, "refused")


def test_self_approval_is_refused(world: tuple[Service, Clock]) -> None:
    """The checker who proposed may not approve; another checker may."""
    service, _ = world
    first, _ = ids(service)
    service.act(first, "propose", USER["cora"], reason="funds_restored", note="returned")
    with pytest.raises(InputError, match="may not approve it too"):
        service.act(first, "approve", USER["cora"])
    assert service.act(first, "approve", USER["carl"]).row.status == "resolved"


def test_unknown_id_and_finished_items_are_refused(world: tuple[Service, Clock]) -> None:
    """An unknown id, or proposing a resolved item, is refused (and audited)."""
    service, _ = world
    first, _ = ids(service)
    with pytest.raises(InputError, match="no discrepancy with id 9999"):
        service.act(9999, "propose", USER["mia"], reason="false_positive", note="x")
    service.act(first, "propose", USER["mia"], reason="false_positive", note="x")
    service.act(first, "approve", USER["carl"])
    with pytest.raises(InputError, match="that is resolved"):
        service.act(first, "propose", USER["mia"], reason="false_positive", note="again")
    assert service.store.verify_audit().ok


def test_items_past_their_cure_deadline_escalate_exactly_once(
        world: tuple[Service, Clock]) -> None:
    """Detected Friday 10:00 New York: due Monday 10:00. Before it nothing escalates;
    after it both open items are escalated once (severity raised, audit entry), and a
    later run escalates nothing again. `--overdue` lists them."""
    service, clock = world
    first, _ = ids(service)
    found = service.store.discrepancy(first)
    assert found is not None
    assert found[0].row.cure_deadline == datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    clock.now = datetime(2026, 11, 23, 14, 59, tzinfo=UTC)
    assert service.escalate() == [] and service.discrepancies(overdue=True) == []
    clock.now = datetime(2026, 11, 23, 15, 1, tzinfo=UTC)
    assert sorted(service.escalate()) == sorted(ids(service))
    assert len(service.discrepancies(overdue=True)) == 2
    assert service.escalate() == []
    row = service.store.discrepancy(first)
    assert row is not None and row[0].row.escalated_at == clock.now
    assert history(service, first)[-1] == ("engine", "escalated")
    assert row[1][-1].payload["from_severity"] == "critical"


def tamper(service: Service, *statements: str) -> None:
    """Run raw SQL as an attacker with database access (PostgreSQL: past the trigger)."""
    engine = service.store.engine
    with engine.begin() as db:
        if engine.dialect.name == "postgresql":
            db.execute(text("ALTER TABLE audit_entry DISABLE TRIGGER USER"))
        for statement in statements:
            db.execute(text(statement))
        if engine.dialect.name == "postgresql":
            db.execute(text("ALTER TABLE audit_entry ENABLE TRIGGER USER"))


def grow_log(service: Service) -> None:
    first, second = ids(service)
    service.act(first, "propose", USER["mia"], reason="false_positive", note="a")
    service.act(second, "propose", USER["mia"], reason="false_positive", note="b")
    service.act(first, "approve", USER["carl"])
    verified = service.store.verify_audit()
    assert verified.ok and verified.checked == 6  # ledger import, 2 detected, 3 actions


@pytest.mark.parametrize(("statements", "broken", "why"), [
    (["UPDATE audit_entry SET actor = 'someone' WHERE seq = 3"], 3, "edited"),
    (["UPDATE audit_entry SET payload = '{\"note\":\"changed\"}' WHERE seq = 4"], 4, "edited"),
    (["DELETE FROM audit_entry WHERE seq = 2"], 3, "deleted"),
    (["DELETE FROM audit_entry WHERE seq = 6"], None, None),  # the tail: see below
    (["UPDATE audit_entry SET seq = 100 WHERE seq = 3",
      "UPDATE audit_entry SET seq = 3 WHERE seq = 4",
      "UPDATE audit_entry SET seq = 4 WHERE seq = 100"], 3, "removed or reordered"),
])
def test_tampering_with_the_audit_log_is_detected(
        world: tuple[Service, Clock], statements: list[str], broken: int | None,
        why: str | None) -> None:
    """Editing a row, deleting one or swapping two breaks the chain at the first affected
    entry, which `verify` names. (Dropping only the newest entry leaves a shorter valid
    chain: the count verified shows it; exports pin the head hash for that reason.)"""
    service, _ = world
    grow_log(service)
    tamper(service, *statements)
    result = service.store.verify_audit()
    if broken is None:
        assert result.ok and result.checked == 5
        return
    assert not result.ok and result.broken_seq == broken
    assert why is not None and result.reason is not None and why in result.reason


def test_postgresql_refuses_updates_and_deletes_of_the_audit_log(tmp_path: Path) -> None:
    """On PostgreSQL a trigger rejects UPDATE, DELETE and TRUNCATE of audit entries
    (SQLite has no server-side guard; there the hash chain alone shows tampering)."""
    with postgres_schema() as url:
        service, _ = make_world(url, tmp_path)
        refuse_changes(service)


def refuse_changes(service: Service) -> None:
    for statement in ("UPDATE audit_entry SET actor = 'x'", "DELETE FROM audit_entry",
                      "TRUNCATE audit_entry"):
        with pytest.raises(DBAPIError, match="append-only"), \
                service.store.engine.begin() as db:
            db.execute(text(statement))
    assert service.store.verify_audit().ok


def test_a_person_holding_maker_and_checker_is_refused_unless_allowed(
        store_url: str, tmp_path: Path) -> None:
    """With daemon.allow_dual_role off (the default), a principal holding both maker and
    checker may not propose or approve; the refusal is audited and nothing else changes."""
    service, _ = make_world(store_url, tmp_path)
    strict = Service(service.settings.model_copy(update={"daemon": service.settings.daemon
                                                         .model_copy(update={
                                                             "allow_dual_role": False})}),
                     service.store, lambda _c, _s: FakeAdapter())
    first, _ = ids(strict)
    with pytest.raises(InputError, match="holds both maker and checker"):
        strict.act(first, "propose", USER["cora"], reason="false_positive", note="x")
    assert history(strict, first)[-1] == ("cora", "refused")
    found = strict.store.discrepancy(first)
    assert found is not None and found[0].row.status == "open"


def test_an_action_without_credentials_is_refused_and_writes_nothing(
        world: tuple[Service, Clock]) -> None:
    """No principal (no token): refused as unauthenticated; no audit entry, no change."""
    service, _ = world
    first, _ = ids(service)
    before = service.store.verify_audit().checked
    with pytest.raises(Unauthenticated, match="needs credentials"):
        service.act(first, "propose", None, reason="false_positive", note="x")
    assert service.store.verify_audit().checked == before


def test_a_ledger_cut_that_would_clear_a_shortfall_goes_to_a_checker(
        world: tuple[Service, Clock], tmp_path: Path) -> None:
    """The insider attack: re-importing the ledger with alice's allocation cut to what is
    on chain would self-clear her shortfall. Instead the finding becomes proposed with
    reason ledger_corrected by the importer, survives the next cycles, and closes only
    when a checker approves (the importer cannot)."""
    service, clock = world
    first, second = ids(service)
    service.act(second, "propose", USER["mia"], reason="false_positive", note="looks fine")
    cut = tmp_path / "cut.csv"
    cut.write_text("chain,address,structure,owner,asset,amount\n"
                   f"ethereum,{ALICE},segregated,alice,ETH,0.1\n"
                   f"ethereum,{BOB},segregated,bob,ETH,0.1\n")
    result = service.import_ledger(cut, dry_run=False, actor=FEEDER)
    assert sorted(result.summary["ledger_corrected"]) == sorted([first, second])  # type: ignore[arg-type]
    for id_ in (first, second):
        found = service.store.discrepancy(id_)
        assert found is not None
        row = found[0].row
        assert (row.status, row.proposed_by, row.proposed_reason) == \
            ("proposed", "feeder-test", "ledger_corrected")
    clock.now += timedelta(minutes=5)
    service.run_cycle(service.settings.chains[0])
    assert {r.row.id for r in service.discrepancies(status="proposed")} == {first, second}
    with pytest.raises(InputError, match="needs the checker role"):
        service.act(first, "approve", FEEDER)
    assert service.act(first, "approve", USER["carl"]).row.status == "resolved"
    assert history(service, first)[-3:] == [("feeder-test", "proposed"),
                                            ("feeder-test", "refused"), ("carl", "resolved")]
    assert service.store.verify_audit().ok


def test_a_feeder_is_needed_to_import_and_the_importer_is_recorded(
        world: tuple[Service, Clock], tmp_path: Path) -> None:
    """Imports without credentials or by a maker are refused; a feeder's import is audited
    under the feeder's name, not `engine`."""
    service, _ = world
    again = tmp_path / "again.csv"
    again.write_text("chain,address,structure,owner,asset,amount\n"
                     f"ethereum,{ALICE},segregated,alice,ETH,1\n")
    with pytest.raises(Unauthenticated):
        service.import_ledger(again, dry_run=False)
    with pytest.raises(InputError, match="needs the feeder role"):
        service.import_ledger(again, dry_run=False, actor=USER["mia"])
    assert service.import_ledger(again, dry_run=True).snapshot_id is None
    service.import_ledger(again, dry_run=False, actor=FEEDER)
    with Session(service.store.engine) as session:
        last = session.exec(select(AuditEntry).where(AuditEntry.action == "ledger_imported")
                            .order_by(col(AuditEntry.seq).desc())).first()
    assert last is not None and last.actor == "feeder-test"


def test_a_resolved_shortfall_that_persists_reopens_with_the_first_cure_deadline(
        world: tuple[Service, Clock]) -> None:
    """A checker resolves a shortfall ("deposit in transit"), but the deposit never comes:
    the next cycle opens a new discrepancy linked to the resolved one (`reopens`) with the
    first detection's cure deadline, not a fresh one; show lists the chain both ways."""
    service, clock = world
    first, _ = ids(service)
    found = service.store.discrepancy(first)
    assert found is not None
    deadline = found[0].row.cure_deadline
    service.act(first, "propose", USER["mia"], reason="deposit_in_transit", note="coming")
    service.act(first, "approve", USER["carl"])
    clock.now += timedelta(hours=5)
    service.run_cycle(service.settings.chains[0])
    (again,) = [r for r in service.discrepancies(status="open") if r.row.reopens == first]
    assert again.row.cure_deadline == deadline and again.row.detected_at == clock.now
    assert service.store.reopenings(again.row.id or 0) == {"earlier": [first], "later": []}
    assert service.store.reopenings(first) == {"earlier": [], "later": [again.row.id]}
    assert service.store.replay_audit() == []
