"""The inbox feed (SPEC §8) on a real store (SQLite and PostgreSQL): complete files only,
all or nothing, processed/ and rejected/ with the errors beside, the same content
imported once, a pick-up interrupted midway finished at the next poll, imported as the
configured feeder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.runtime.inbox import PROCESSED, REJECTED, WORK, Inbox, plan
from daemon.service import Service
from tests.integration.test_workflow import ALICE, BOB, Clock, make_world

LEDGER = ("chain,address,structure,owner,asset,amount\n"
          f"ethereum,{ALICE},segregated,alice,ETH,0.5\n"
          f"ethereum,{BOB},segregated,bob,ETH,1\n")


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> tuple[Service, Clock, Inbox]:
    service, clock = make_world(store_url, tmp_path)
    identity = service.identity
    identity.add_user(None, "root", ["admin"], "correct horse battery")
    admin = identity.from_token(identity.create_own_token(
        "root", "correct horse battery", "t", None, None)[1], "t")
    identity.add_user(admin, "books", ["feeder"], None)
    return service, clock, Inbox(tmp_path / "inbox", service, "books")


def drop(inbox: Inbox, name: str, text: str) -> Path:
    """As a books system does: write under a temporary name, then rename."""
    temporary = inbox.folder / f".{name}.tmp"
    temporary.write_text(text)
    final = inbox.folder / name
    temporary.rename(final)
    return final


def test_names_decide_kind_and_cut_off() -> None:
    """Temporary names and other extensions are never read; `withdrawals…` files are
    withdrawals; a ledger's name may carry its cut-off."""
    assert plan(".ledger.csv.tmp") is None and plan("ledger.csv.part") is None
    assert plan("notes.txt") is None and plan(".hidden.csv") is None
    assert plan("withdrawals-42.json") is not None
    assert plan("withdrawals-42.json").kind == "withdrawals"  # type: ignore[union-attr]
    dated = plan("books.asof-20261204T160000Z.csv")
    assert dated is not None and dated.kind == "ledger"
    assert dated.as_of == datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
    assert plan("books.csv").as_of is None  # type: ignore[union-attr]


def test_a_snapshot_is_imported_once_as_the_feeder(
        world: tuple[Service, Clock, Inbox]) -> None:
    """A complete file becomes a snapshot imported by `books` with the cut-off of its
    name, and moves to processed/; the same content dropped again is not imported twice;
    a file still under its temporary name is left alone."""
    service, clock, inbox = world
    clock.now += timedelta(minutes=10)
    moment = clock.now - timedelta(minutes=5)
    cut = moment.strftime("%Y%m%dT%H%M%SZ")
    drop(inbox, f"books.asof-{cut}.csv", LEDGER)
    (inbox.folder / ".next.csv.tmp").write_text(LEDGER[:40])  # still being written
    (outcome,) = inbox.poll()
    assert (outcome.status, outcome.kind) == ("imported", "ledger")
    newest = service.store.snapshots()[0]
    assert newest["imported_by"] == "books" and newest["id"] == 2
    assert newest["as_of"] == moment.isoformat()
    assert (inbox.folder / PROCESSED / f"books.asof-{cut}.csv").exists()
    drop(inbox, "again.csv", LEDGER)
    (again,) = inbox.poll()
    assert again.status == "already" and len(service.store.snapshots()) == 2
    assert (inbox.folder / ".next.csv.tmp").exists()
    # the same books cut again later are a new snapshot: a quiet ledger stays fresh
    # (ledger_stale) and its cut-off moves on; the same file with the same cut-off is not
    later = (moment + timedelta(minutes=4)).strftime("%Y%m%dT%H%M%SZ")
    drop(inbox, f"books.asof-{later}.csv", LEDGER)
    (recut,) = inbox.poll()
    assert recut.status == "imported" and len(service.store.snapshots()) == 3
    assert service.store.ledger_cut_off() == moment + timedelta(minutes=4)
    drop(inbox, f"copy.asof-{later}.csv", LEDGER)
    (copy,) = inbox.poll()
    assert copy.status == "already" and len(service.store.snapshots()) == 3


def test_a_bad_file_is_rejected_whole_with_its_errors(
        world: tuple[Service, Clock, Inbox]) -> None:
    """A file with a bad line lands in rejected/ with FILE.errors.txt naming the line;
    the current snapshot is unchanged; a snapshot cut before the current one is refused."""
    service, _, inbox = world
    drop(inbox, "bad.csv", LEDGER + "ethereum,0xnope,segregated,x,ETH,1\n")
    drop(inbox, "old.asof-20200101T000000Z.csv", LEDGER)
    outcomes = {o.name: o for o in inbox.poll()}
    assert {o.status for o in outcomes.values()} == {"rejected"}
    errors = (inbox.folder / REJECTED / "bad.csv.errors.txt").read_text()
    assert "bad.csv:4:" in errors and str(inbox.folder) not in errors
    assert "older than the current snapshot" in \
        (inbox.folder / REJECTED / "old.asof-20200101T000000Z.csv.errors.txt").read_text()
    assert len(service.store.snapshots()) == 1


def test_a_pick_up_interrupted_midway_is_finished_once(
        world: tuple[Service, Clock, Inbox]) -> None:
    """A daemon killed after moving a file into .work/ (and even after importing it)
    finishes it at the next poll: imported exactly once, then in processed/."""
    service, _, inbox = world
    (inbox.folder / WORK / "crashed.csv").write_text(LEDGER)
    (first,) = inbox.poll()
    assert first.status == "imported" and len(service.store.snapshots()) == 2
    (inbox.folder / WORK / "crashed-after-import.csv").write_text(LEDGER)  # imported before
    (second,) = inbox.poll()
    assert second.status == "already" and len(service.store.snapshots()) == 2
    assert sorted(p.name for p in (inbox.folder / PROCESSED).iterdir()) == [
        "crashed-after-import.csv", "crashed.csv"]


def test_withdrawals_come_the_same_way_and_need_a_feeder(
        world: tuple[Service, Clock, Inbox], tmp_path: Path) -> None:
    """A withdrawals file is imported by ids (again: nothing new); without the configured
    feeder user every file is rejected saying so."""
    service, clock, inbox = world
    approved = (clock.now - timedelta(hours=1)).isoformat()
    text = ("id,chain,from_address,to_address,asset,amount,approved_by,approved_at\n"
            f"w-1,ethereum,{ALICE},{BOB},ETH,0.1,carl,{approved}\n")
    drop(inbox, "withdrawals-1.csv", text)
    assert [o.status for o in inbox.poll()] == ["imported"]
    drop(inbox, "withdrawals-2.csv", text)
    assert [o.status for o in inbox.poll()] == ["already"]
    orphan = Inbox(tmp_path / "other", service, "nobody")
    drop(orphan, "ledger.csv", LEDGER)
    (refused,) = orphan.poll()
    assert refused.status == "rejected" and "inbox_user 'nobody'" in refused.detail
