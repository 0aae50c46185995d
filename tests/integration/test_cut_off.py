"""The ledger's cut-off (SPEC §8) on a real store (SQLite and PostgreSQL): every snapshot
carries `as_of`, given or the import time; one in the future, without a timezone, or
older than the current snapshot's is refused and nothing changes; status, the snapshot
list and the API show it."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from daemon.errors import InputError
from daemon.service import Service
from tests.integration.test_workflow import ALICE, FRIDAY, Clock, make_world
from tests.principals import FEEDER


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> tuple[Service, Clock, Path]:
    service, clock = make_world(store_url, tmp_path)
    ledger = tmp_path / "again.csv"
    ledger.write_text("chain,address,structure,owner,asset,amount\n"
                      f"ethereum,{ALICE},segregated,alice,ETH,1\n")
    return service, clock, ledger


def test_a_snapshot_records_its_cut_off_or_the_import_time(
        world: tuple[Service, Clock, Path]) -> None:
    """Without as_of the import time is the cut-off (and the summary says it was not
    given); with one, it is stored as given and shown by status and the list."""
    service, clock, ledger = world
    first = service.store.snapshots()[-1]
    assert first["as_of"] == FRIDAY.isoformat()
    clock.now += timedelta(hours=1)
    cut = clock.now - timedelta(minutes=10)
    result = service.import_ledger(ledger, dry_run=False, actor=FEEDER, as_of=cut)
    assert result.summary["as_of"] == cut.isoformat() and result.summary["as_of_given"]
    assert service.store.snapshots()[0]["as_of"] == cut.isoformat()
    assert service.status()[0].ledger_as_of == cut


@pytest.mark.parametrize(("shift", "naive", "message"), [
    (timedelta(hours=1), False, "is in the future"),
    (timedelta(hours=-1), True, "give a timezone"),
    (timedelta(hours=-1), False, "older than the current snapshot"),
])
def test_a_bad_cut_off_is_refused_and_changes_nothing(
        world: tuple[Service, Clock, Path], shift: timedelta, naive: bool,
        message: str) -> None:
    """A cut-off in the future (beyond two minutes of skew), without a timezone, or older
    than the current snapshot's: one line, no new snapshot, no audit entry."""
    service, clock, ledger = world
    before = (len(service.store.snapshots()), service.store.verify_audit().checked)
    moment: datetime = clock.now + shift
    with pytest.raises(InputError, match=message):
        service.import_ledger(ledger, dry_run=False, actor=FEEDER,
                              as_of=moment.replace(tzinfo=None) if naive else moment)
    assert (len(service.store.snapshots()), service.store.verify_audit().checked) == before


def test_a_stale_ledger_raises_one_warning_that_a_newer_snapshot_clears(
        world: tuple[Service, Clock, Path]) -> None:
    """Past ledger_max_age_seconds (default one day) after the cut-off, the chain's
    cycle opens one `ledger_stale` warning naming the cut-off (the next cycles refresh
    it, never a second one); a snapshot cut later self-clears it at the next cycle."""
    service, clock, ledger = world
    chain = service.settings.chains[0]
    clock.now += timedelta(days=1, minutes=1)
    service.run_cycle(chain)
    service.run_cycle(chain)
    stale = service.discrepancies(type_="ledger_stale")
    assert [(r.row.status, r.row.severity) for r in stale] == [("open", "warning")]
    assert stale[0].row.counterparty is not None and \
        FRIDAY.isoformat() in stale[0].row.counterparty
    assert service.status()[0].status == "discrepancy"
    service.import_ledger(ledger, dry_run=False, actor=FEEDER, as_of=clock.now)
    service.run_cycle(chain)
    assert [r.row.status for r in service.discrepancies(type_="ledger_stale")] == \
        ["self_cleared"]


def test_the_unit_rule_for_a_stale_ledger() -> None:
    """No ledger, or one within its age: no finding; older: one warning."""
    from daemon.rules.reconcile import ledger_stale_finding

    assert ledger_stale_finding("eth", None, FRIDAY, 60) is None
    assert ledger_stale_finding("eth", FRIDAY, FRIDAY + timedelta(seconds=60), 60) is None
    found = ledger_stale_finding("eth", FRIDAY, FRIDAY + timedelta(seconds=61), 60)
    assert found is not None and (found.type, found.severity) == ("ledger_stale", "warning")


def test_check_and_the_export_name_the_cut_off(world: tuple[Service, Clock, Path],
                                              tmp_path: Path) -> None:
    """The spot check reports the cut-off it compared with; an export's manifest names the
    snapshot it books and its cut-off."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from daemon.export.package import read_package
    from daemon.export.service import export
    from tests.principals import AUDITOR

    service, clock, ledger = world
    clock.now += timedelta(minutes=30)
    cut = clock.now - timedelta(minutes=20)
    service.import_ledger(ledger, dry_run=False, actor=FEEDER, as_of=cut)
    report = service.check(service.settings.chains[0], ALICE)
    assert report.ledger_as_of == cut
    export(service, tmp_path / "p.zip", Ed25519PrivateKey.generate(), actor=AUDITOR)
    import json

    manifest = json.loads(read_package(tmp_path / "p.zip")["manifest.json"])
    assert manifest["ledger"] == {"snapshot": 2, "as_of": cut.isoformat()}
