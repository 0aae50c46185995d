"""Store behaviour, identical on SQLite and PostgreSQL (the `store_url` fixture runs both)."""

from __future__ import annotations

import stat
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from chains.evm.address import canonical_evm_address
from chains.fake import FakeAdapter
from daemon.bootstrap import open_store
from daemon.inputs.chain_settings import ChainSettings
from daemon.inputs.config import Settings
from daemon.inputs.source_settings import SourceSettings
from daemon.service import Service
from daemon.store import models as m
from daemon.store.db import current_revision, head_revision, make_engine, upgrade
from tests.principals import FEEDER

ALICE = canonical_evm_address("0x" + "a1" * 20)
OMNI = canonical_evm_address("0x" + "b2" * 20)
HOUSE = canonical_evm_address("0x" + "c3" * 20)
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
WEI = 10**18


def settings(url: str) -> Settings:
    return Settings(
        store={"url": url},  # type: ignore[arg-type]
        chains=[{"name": "ethereum", "family": "evm", "chain_id": 1, "confirmations": 0,  # type: ignore[list-item]
                 # the fake answers at one fixed block whatever it changes: every cycle
                 # reads every wallet (a real chain's state at a block does not change)
                 "full_recheck_seconds": 0,
                 "sources": [{"kind": "jsonrpc", "url": "http://127.0.0.1:1/"}],
                 "tokens": [{"symbol": "USDC", "contract": USDC, "decimals": 6}]}],
    )


LEDGER = f"""chain,address,structure,owner,asset,amount
ethereum,{ALICE},segregated,alice,ETH,1.5
ethereum,{ALICE},segregated,alice,USDC,100
ethereum,{OMNI},omnibus,bob,ETH,2
ethereum,{OMNI},omnibus,carol,ETH,3
ethereum,{HOUSE},house,FIRM,ETH,10
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(store_url: str, tmp_path: Path) -> tuple[Service, FakeAdapter, Clock]:
    adapter = FakeAdapter()
    clock = Clock()
    config = settings(store_url)
    upgrade(make_engine(store_url))
    service = Service(config, open_store(store_url), lambda _c, _s: adapter, clock)
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(LEDGER)
    service.import_ledger(ledger, dry_run=False, actor=FEEDER)
    return service, adapter, clock


def chain(service: Service) -> ChainSettings:
    return service.settings.chains[0]


def balanced(adapter: FakeAdapter) -> None:
    adapter.balances_by_key = {(ALICE, "ETH"): 15 * WEI // 10, (ALICE, "USDC"): 100_000_000,
                               (OMNI, "ETH"): 5 * WEI, (HOUSE, "ETH"): 1}


def test_empty_sqlite_store_is_migrated_on_first_use(tmp_path: Path) -> None:
    """Opening a new embedded store applies every migration."""
    store = open_store(f"sqlite:///{tmp_path / 'new.db'}")
    assert current_revision(store.engine) == head_revision()


def test_a_new_sqlite_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """A new embedded store (client allocations, findings) is created 0600, its new
    directory 0700, and SQLite's -wal/-shm files take the same mode; an existing file
    keeps its mode."""
    store = open_store(f"sqlite:///{tmp_path / 'private' / 'new.db'}")
    store.sync_catalog(Settings())
    files = sorted((tmp_path / "private").iterdir())
    assert [f.name for f in files][:1] == ["new.db"]
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {
        f.name: 0o600 for f in files}
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o700
    existing = tmp_path / "old.db"
    existing.touch(mode=0o640)
    existing.chmod(0o640)
    open_store(f"sqlite:///{existing}")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640


def test_server_store_must_be_upgraded_explicitly(store_url: str) -> None:
    """A PostgreSQL store is never migrated behind the operator's back; SQLite is."""
    from daemon.errors import ConfigError

    if store_url.startswith("sqlite"):
        assert current_revision(open_store(store_url).engine) == head_revision()
        return
    with pytest.raises(ConfigError, match="segwatch db upgrade"):
        open_store(store_url)
    assert upgrade(make_engine(store_url)) == head_revision()
    assert current_revision(open_store(store_url).engine) == head_revision()


def test_reconciled_cycle_records_checkpoint_and_no_findings(world) -> None:  # type: ignore[no-untyped-def]
    """A cycle where chain matches ledger stores a checkpoint and opens nothing."""
    service, adapter, _ = world
    balanced(adapter)
    result = service.run_cycle(chain(service))
    assert result.error is None and result.findings == ()
    checkpoint = service.store.last_checkpoint("ethereum")
    assert checkpoint is not None and checkpoint.block_height == 100
    assert checkpoint.wallets == 3 and checkpoint.observations == 6
    assert [s.status for s in service.status()] == ["compliant"]


def test_persisting_condition_updates_one_open_discrepancy(world) -> None:  # type: ignore[no-untyped-def]
    """The same shortfall seen in three cycles is one open discrepancy with current amounts."""
    service, adapter, clock = world
    balanced(adapter)
    adapter.balances_by_key = {**adapter.balances_by_key, (OMNI, "ETH"): 4 * WEI}
    service.run_cycle(chain(service))
    clock.now += timedelta(minutes=1)
    adapter.balances_by_key = {**adapter.balances_by_key, (OMNI, "ETH"): 3 * WEI}
    service.run_cycle(chain(service))
    service.run_cycle(chain(service))
    (record,) = service.discrepancies()
    row = record.row
    assert (row.type, row.status, row.severity) == ("balance_shortfall", "open", "critical")
    assert (row.onchain, row.ledger, row.difference) == (3 * WEI, 5 * WEI, -2 * WEI)
    assert row.owners == ["bob", "carol"]
    assert row.last_seen_at == clock.now and row.detected_at < row.last_seen_at
    assert row.cure_deadline == datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # Fri → Mon


def test_cleared_condition_is_self_cleared_with_audit_entry(world) -> None:  # type: ignore[no-untyped-def]
    """A shortfall that disappears is closed as self_cleared, kept, and audited."""
    service, adapter, _ = world
    balanced(adapter)
    adapter.balances_by_key = {**adapter.balances_by_key, (ALICE, "USDC"): 1}
    service.run_cycle(chain(service))
    balanced(adapter)
    service.run_cycle(chain(service))
    (record,) = service.discrepancies()
    assert record.row.status == "self_cleared" and record.row.closed_at is not None
    found = service.store.discrepancy(record.row.id or 0)
    assert found is not None
    assert [e.action for e in found[1]] == ["detected", "self_cleared"]
    service.run_cycle(chain(service))
    assert len(service.discrepancies()) == 1


def test_unreadable_balance_neither_clears_nor_opens(world) -> None:  # type: ignore[no-untyped-def]
    """A read error leaves an open finding open: a failed read proves nothing."""
    service, adapter, _ = world
    balanced(adapter)
    adapter.balances_by_key = {**adapter.balances_by_key, (ALICE, "USDC"): 1}
    service.run_cycle(chain(service))
    adapter.errors = {(ALICE, "USDC"): "balanceOf reverted"}
    result = service.run_cycle(chain(service))
    assert result.read_errors == 1
    assert [r.row.status for r in service.discrepancies()] == ["open"]


def test_observations_are_appended_only_when_a_balance_changes(world) -> None:  # type: ignore[no-untyped-def]
    """Balance history keeps one row per change, with block height, hash and source."""
    service, adapter, _ = world
    balanced(adapter)
    service.run_cycle(chain(service))
    service.run_cycle(chain(service))
    adapter.balances_by_key = {**adapter.balances_by_key, (HOUSE, "ETH"): 2}
    service.run_cycle(chain(service))
    with Session(service.store.engine) as session:
        rows = session.exec(select(m.BalanceObservation)).all()
    assert len(rows) == 7
    assert all(r.block_height == 100 and r.block_hash.startswith("0x") and r.source
               for r in rows)


def test_observations_written_as_plain_rows_read_back_as_the_orm_writes_them(world) -> None:  # type: ignore[no-untyped-def]
    """A cycle's observations skip SQLAlchemy's per-row binding (db.insert_plain; COPY on
    PostgreSQL): the amount beyond 64 bits, the error (with what COPY's text format
    escapes: tab, line ends, backslashes before `N` and `.`) and the cycle's time read
    back exactly, and the stored time has the very form the ORM gives the same moment
    (SQLite compares it as text), with and without microseconds."""
    service, adapter, clock = world
    balanced(adapter)
    adapter.balances_by_key = {**adapter.balances_by_key, (ALICE, "ETH"): 2**200 + 1}
    hostile = "node said\tno\r\nreally \\N \\. \\\\ é "
    adapter.errors = {(HOUSE, "ETH"): hostile + "x" * 600}
    for microsecond in (123456, 0):
        clock.now = clock.now.replace(microsecond=microsecond) + timedelta(minutes=1)
        adapter.balances_by_key[(OMNI, "ETH")] = 5 * WEI + microsecond  # a new row each
        service.run_cycle(chain(service))
        with Session(service.store.engine) as session:
            written = session.exec(select(m.BalanceObservation).order_by(
                m.BalanceObservation.id.desc())).first()  # type: ignore[union-attr]
            assert written is not None and written.observed_at == clock.now
            template = m.BalanceObservation(
                wallet_id=written.wallet_id, asset_id=written.asset_id, amount=1,
                block_height=1, block_hash="0x", source="orm", observed_at=clock.now)
            session.add(template)
            session.commit()
            raw = [t for (t,) in session.connection().exec_driver_sql(
                "SELECT observed_at FROM balance_observation WHERE id IN "
                f"({written.id}, {template.id})")]
            assert len(raw) == 2 and raw[0] == raw[1]
    with Session(service.store.engine) as session:
        rows = session.exec(select(m.BalanceObservation)).all()
    assert {r.amount for r in rows} >= {2**200 + 1}
    (error,) = {r.error for r in rows if r.error}
    assert error == (hostile + "x" * 600)[:500]


def test_reimport_keeps_snapshot_history(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A second import becomes current; the first snapshot and its lines stay."""
    service, _, _ = world
    ledger = tmp_path / "second.csv"
    ledger.write_text(LEDGER.replace("alice,ETH,1.5", "alice,ETH,2"))
    service.import_ledger(ledger, dry_run=False, actor=FEEDER)
    with Session(service.store.engine) as session:
        assert len(session.exec(select(m.AllocationSnapshot)).all()) == 2
        assert len(session.exec(select(m.Allocation)).all()) == 10
    view = service.store.ledger_view("ethereum")
    assert view.wallets[ALICE].ledger_total("ETH") == 2 * WEI  # type: ignore[index]


def test_shards_asking_for_the_books_at_once_share_one_build(  # type: ignore[no-untyped-def]
        world, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards of a chain cycling side by side in one replica ask for its books at once:
    one builds the view, the others wait and get the same object (at a million wallets
    each build is seconds and a GiB); a new import builds a new one once."""
    service, _, _ = world
    store = service.store
    built: list[int] = []
    build = type(store)._build_ledger

    def slow_build(*args: Any) -> Any:
        built.append(1)
        time.sleep(0.2)  # long enough for every other thread to ask meanwhile
        return build(*args)

    monkeypatch.setattr(type(store), "_build_ledger", staticmethod(slow_build))
    with ThreadPoolExecutor(4) as pool:
        views = list(pool.map(lambda _: store.ledger_view("ethereum"), range(4)))
    assert len(built) == 1 and all(v is views[0] for v in views)
    assert views[0].wallets[ALICE].ledger_total("ETH") == 3 * WEI // 2  # type: ignore[index]
    assert store.ledger_view("ethereum") is views[0] and len(built) == 1


def test_failing_source_is_reported_and_marks_chain(world) -> None:  # type: ignore[no-untyped-def]
    """An unreachable source gives a cycle error, no checkpoint, and a stale status."""
    service, adapter, _ = world
    adapter.fail = True
    result = service.run_cycle(chain(service))
    assert result.error is not None and "unavailable" in result.error
    (status,) = service.status()
    assert status.status == "stale" and status.last_error


def test_huge_amounts_round_trip_exactly(world) -> None:  # type: ignore[no-untyped-def]
    """Amounts beyond 64 bits are stored and read back exactly."""
    service, adapter, _ = world
    balanced(adapter)
    adapter.balances_by_key = {**adapter.balances_by_key, (ALICE, "ETH"): 2**200 + 1}
    service.run_cycle(chain(service))
    (record,) = service.discrepancies()
    assert record.row.onchain == 2**200 + 1
    assert record.row.difference == 2**200 + 1 - 15 * WEI // 10


def test_source_with_wrong_chain_id_is_a_configuration_error(world) -> None:  # type: ignore[no-untyped-def]
    """A source that serves another chain is refused at start (a configuration error);
    once running, a source that switches chains is failed over like any broken source
    and nothing is read from it."""
    from chains.errors import ChainMismatch

    service, adapter, _ = world
    adapter.network = 5
    with pytest.raises(ChainMismatch, match="serves chain 5"):
        service.run_once()
    result = service.run_cycle(chain(service))
    assert result.error is not None and "serves chain 5" in result.error
    assert result.block is None and service.store.last_checkpoint("ethereum") is None


_ = SourceSettings


def test_check_lists_transfers_when_balances_fail(world) -> None:  # type: ignore[no-untyped-def]
    """A spot check whose balance reads fail still lists the wallet's transfers, and each
    balance carries the error."""
    from chains.types import BaseUnits, ChainHead, TransferObservation

    service, adapter, _ = world
    moved = TransferObservation("native", ChainHead(95, "0x" + "95" * 32), "0x" + "ab" * 32,
                                None, ALICE, OMNI, None, BaseUnits(7), "fake")
    adapter.transfers = [moved]
    adapter.fail_balances = True
    report = service.check(chain(service), ALICE, blocks=(90, 100))
    assert report.scan is not None and report.scan.transfers == (moved,)
    assert all(o.error and "pruned" in o.error for o in report.observations)
    assert "no trace API" in " ".join(report.notes)


def test_scan_fails_over_and_a_failed_range_stops_the_cursor(store_url: str,
                                                             tmp_path: Path) -> None:
    """A scan the first source cannot serve is read from the next; when no source can,
    the cursor stays put, status shows why, and the balances are still reconciled."""
    from chains.types import BaseUnits, ChainHead, TransferObservation

    first, second = FakeAdapter(name="fake://one"), FakeAdapter(name="fake://two")
    config = settings(store_url).model_copy(update={"chains": [
        settings(store_url).chains[0].model_copy(update={"sources": [
            SourceSettings(kind="jsonrpc", url="http://127.0.0.1:1/"),
            SourceSettings(kind="jsonrpc", url="http://127.0.0.1:2/")]})]})
    adapters = {"http://127.0.0.1:1/": first, "http://127.0.0.1:2/": second}
    upgrade(make_engine(store_url))
    service = Service(config, open_store(store_url), lambda _c, s: adapters[s.url])
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(LEDGER)
    service.import_ledger(ledger, dry_run=False, actor=FEEDER)
    for fake in (first, second):
        balanced(fake)
        fake.head_block = ChainHead(100, f"0x{100:064x}")
    service.run_cycle(chain(service))  # pins the cursor at block 100
    outflow = TransferObservation("native", ChainHead(101, f"0x{101:064x}"), "0x" + "cd" * 32,
                                  None, ALICE, Address_("0x" + "99" * 20), None,
                                  BaseUnits(1), "fake")
    for fake in (first, second):
        fake.head_block = ChainHead(105, f"0x{105:064x}")
        fake.transfers = [outflow]
        fake.balances_by_key = {**fake.balances_by_key, (ALICE, "ETH"): 15 * WEI // 10 - 1}
    first.fail_scan = True
    result = service.run_cycle(chain(service))
    assert result.scan_error is None and result.scanned_to == 105
    assert sorted(r.row.type for r in service.discrepancies(status="open")) == [
        "balance_shortfall", "unauthorized_outflow"]  # continuity holds: no unexplained change
    for fake in (first, second):
        fake.fail_scan = True
        fake.head_block = ChainHead(110, f"0x{110:064x}")
    result = service.run_cycle(chain(service))
    assert result.scan_error is not None and "fake://two" in result.scan_error
    (status,) = service.status()
    assert status.scanned_to == 105 and status.scan_error
    assert service.store.last_checkpoint("ethereum").block_height == 110  # type: ignore[union-attr]


def Address_(text: str) -> str:
    return canonical_evm_address(text)


def test_an_import_writes_with_a_wide_page_cache_and_no_full_collection(  # type: ignore[no-untyped-def]
        world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While an import writes its wallets and allocations, a SQLite connection's page
    cache may grow to 64 MiB (random inserts into the address index read pages back
    otherwise) and no full garbage collection starts (issue 18: a 2,000,000-line import);
    afterwards the pool's connection has its default cache again and the collector its
    threshold. PostgreSQL imports the same way."""
    import gc

    from daemon.store import books

    service, _, _ = world
    threshold = gc.get_threshold()
    seen: list[tuple[int | None, int]] = []
    upsert = books._upsert_wallets

    def spy(session, rows, ids):  # type: ignore[no-untyped-def]
        connection = session.connection()
        cache = connection.exec_driver_sql("PRAGMA cache_size").scalar() \
            if connection.dialect.name == "sqlite" else None
        seen.append((cache, gc.get_threshold()[2]))
        return upsert(session, rows, ids)
    monkeypatch.setattr(books, "_upsert_wallets", spy)
    ledger = tmp_path / "again.csv"
    ledger.write_text(LEDGER.replace("bob,ETH,2", "bob,ETH,3"))
    service.import_ledger(ledger, dry_run=False, actor=FEEDER)
    sqlite = service.store.engine.dialect.name == "sqlite"
    assert seen == [(-65536 if sqlite else None, 2**31 - 1)]
    assert gc.get_threshold() == threshold
    if sqlite:
        with service.store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA cache_size").scalar() == -2000
    with Session(service.store.engine) as session:
        assert len(session.exec(select(m.AllocationSnapshot)).all()) == 2


def test_a_cycle_and_an_import_say_what_they_wrote(  # type: ignore[no-untyped-def]
        world, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """After its transaction, a cycle write tells `refresh_statistics` how many
    observations it stored, and a ledger import how many wallets and allocations it wrote
    (whether that is a bulk write is the function's to decide, tested above)."""
    from daemon.store import books, repository
    from daemon.store.db import BULK_ROWS

    service, adapter, _ = world
    asked: list[dict[str, int]] = []

    def told(_engine: object, written: dict[str, int]) -> list[str]:
        asked.append(dict(written))
        return []
    for module in (repository, books):
        monkeypatch.setattr(module, "refresh_statistics", told)
    balanced(adapter)
    service.run_cycle(chain(service))
    assert asked == [{"balance_observation": 6}]  # three wallets, two assets
    ledger = tmp_path / "big.csv"
    ledger.write_text("chain,address,structure,owner,asset,amount\n" + "".join(
        f"ethereum,0x{n:040x},segregated,o{n},ETH,1\n" for n in range(1, BULK_ROWS + 1)))
    service.import_ledger(ledger, dry_run=False, actor=FEEDER)
    assert asked[1:] == [{"wallet": BULK_ROWS, "allocation": BULK_ROWS}]
