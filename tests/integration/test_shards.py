"""Wallet shards on a real anvil, through the service (SQLite and PostgreSQL): a chain
split into two shards reads each wallet in exactly one shard, shard 0's scan judges the
transfers of every wallet, each shard's balance continuity holds across the other's
cycles, and a balance finding is cleared only by the shard that reads its wallet.
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from chains.evm.devnet import AnvilNode, impersonate, install_multicall, set_balances
from daemon.bootstrap import build_service
from daemon.inputs.config import Settings
from daemon.rules.shards import Shard, shard_of, shards
from daemon.service import CycleResult, Service
from daemon.store.db import make_engine, upgrade
from tests.principals import FEEDER

pytestmark = pytest.mark.anvil

ETH = 10**18
CHAIN = "devnet"
CANDIDATES = [f"0x10000000000000000000000000000000000000{n:02d}" for n in range(10, 40)]
SHARD0 = [a for a in CANDIDATES if shard_of(a, 2) == 0][:2]
SHARD1 = [a for a in CANDIDATES if shard_of(a, 2) == 1][:2]
HOUSE = "0x1000000000000000000000000000000000000009"
OUTSIDE = "0x2000000000000000000000000000000000000001"


@dataclass
class World:
    node: AnvilNode
    service: Service
    tmp: Path

    @property
    def shards(self) -> list[Shard]:
        return shards(self.service.settings.chains[0])

    def cycle(self, index: int) -> CycleResult:
        result = self.service.run_cycle(self.service.settings.chains[0], self.shards[index])
        assert result.error is None and result.scan_error is None, result
        return result

    def both(self) -> list[CycleResult]:
        return [self.cycle(0), self.cycle(1)]

    def open_types(self) -> list[tuple[str, str]]:
        return sorted((r.row.type, r.row.address or "")
                      for r in self.service.discrepancies(status="open"))

    def import_ledger(self, amounts: dict[str, int]) -> None:
        path = self.tmp / f"ledger-{len(list(self.tmp.iterdir()))}.csv"
        with path.open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
            for n, (wallet, wei) in enumerate(sorted(amounts.items())):
                structure, owner = ("house", "FIRM") if wallet == HOUSE else \
                    ("segregated", f"client{n}")
                out.writerow([CHAIN, wallet, structure, owner, "ETH",
                              f"{Decimal(wei).scaleb(-18):f}"])
        # the books are cut at the newest block (SPEC §8): the next block is a second
        # later (anvil may give blocks the same second), so what is mined after is in
        # transit for them
        head = int(self.node.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
        self.node.call("evm_setNextBlockTimestamp", [head + 1])
        self.service.import_ledger(path, dry_run=False, actor=FEEDER,
                                   as_of=datetime.fromtimestamp(head, UTC))


BALANCES = {**{w: 2 * ETH for w in SHARD0 + SHARD1}, HOUSE: 50 * ETH}


@pytest.fixture
def world(anvil_node: AnvilNode, store_url: str, tmp_path: Path) -> World:
    install_multicall(anvil_node)
    for wallet in BALANCES:
        impersonate(anvil_node, wallet)
    set_balances(anvil_node, BALANCES)
    settings = Settings(store={"url": store_url}, chains=[{  # type: ignore[arg-type, list-item]
        "name": CHAIN, "family": "evm", "chain_id": 31337, "confirmations": 0,
        "full_recheck_seconds": 0,  # state edits are expected at the next cycle
        "shards": 2, "sources": [{"kind": "jsonrpc", "url": anvil_node.url}]}])
    upgrade(make_engine(store_url))
    world = World(anvil_node, build_service(settings), tmp_path)
    world.import_ledger(BALANCES)
    return world


def test_each_wallet_is_read_by_one_shard_and_shard_0_scans_for_all(world: World) -> None:
    """Both shards together read every wallet once; an unauthorized outflow from a shard-1
    wallet is found by shard 0's scan and its shortfall by shard 1's read, each once;
    a shard's checkpoints are its own."""
    first = world.both()
    assert [r.shard for r in first] == ["devnet/0-of-2", "devnet/1-of-2"]
    assert [r.wallets for r in first] == [3 if shard_of(HOUSE, 2) == 0 else 2,
                                          3 if shard_of(HOUSE, 2) == 1 else 2]
    assert first[1].scanned_to is None  # shard 1 never scans
    assert world.open_types() == []
    victim = SHARD1[0]
    world.node.transact(OUTSIDE, value=ETH // 2, sender=victim)
    scan, read = world.both()
    assert [f.type for f in scan.findings] == ["unauthorized_outflow"]
    assert [f.type for f in read.findings] == ["balance_shortfall"]
    assert world.open_types() == [("balance_shortfall", victim),
                                  ("unauthorized_outflow", victim)]
    store = world.service.store
    one = store.last_checkpoint(CHAIN, (1, 2))
    assert one is not None and one.wallets == read.wallets and one.scanned
    assert [s.status for s in world.service.status()] == ["discrepancy"]


def test_continuity_of_a_shard_holds_across_the_other_shards_scan(world: World) -> None:
    """A shard that does not scan reads at the block shard 0 has scanned (within
    max_lag_blocks), so a deposit mined after shard 0's cycle is not seen early and,
    once scanned, explains the new balance; funds that leave without a transaction are
    an unexplained balance change found by the shard that reads the wallet."""
    world.both()
    scanned = world.service.store.scan_state(CHAIN)
    assert scanned is not None
    wallet = SHARD1[1]
    world.node.transact(wallet, value=ETH)  # a deposit in the next block
    early = world.cycle(1)
    assert early.block is not None and early.block.height == scanned.height
    assert early.findings == ()
    world.both()
    assert world.open_types() == []  # the deposit is in transit for the books (SPEC §8)
    world.import_ledger(BALANCES)  # books cut after it, which do not book it
    world.both()
    assert world.open_types() == [("balance_surplus", wallet)]
    set_balances(world.node, {SHARD1[0]: ETH})  # 1 ETH leaves without a transaction
    world.both()
    assert ("unexplained_balance_change", SHARD1[0]) in world.open_types()


def test_a_balance_finding_is_cleared_only_by_the_shard_that_reads_it(world: World) -> None:
    """A shortfall of a shard-1 wallet stays open through shard 0's cycles after the
    funds are restored on chain, and self-clears at shard 1's next cycle. (A ledger
    correction would not self-clear it: it goes to a checker as ledger_corrected.)"""
    victim = SHARD1[0]
    world.node.transact(OUTSIDE, value=ETH, sender=victim)
    world.both()
    assert ("balance_shortfall", victim) in world.open_types()
    left = int(world.node.call("eth_getBalance", [victim, "latest"]), 16)  # less the fee
    world.node.transact(victim, value=BALANCES[victim] - left)  # restored, fee included
    world.import_ledger(BALANCES)  # books cut after it: the restoring deposit is no item
    world.cycle(0)
    assert ("balance_shortfall", victim) in world.open_types()
    world.cycle(1)
    assert ("balance_shortfall", victim) not in world.open_types()


def test_the_shards_write_side_by_side_and_their_audit_entries_chain(world: World) -> None:
    """Run as the daemon runs them (one thread per shard, at once), the shards' cycles
    open and self-clear each their own findings, once each, and every audit entry chains
    to the one before: on PostgreSQL a shard's write takes the audit lock only where it
    starts reading and changing discrepancies (SQLite's writes take turns anyway)."""
    def side_by_side() -> list[CycleResult]:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(world.cycle, [0, 1]))
        return results

    side_by_side()
    victims = [SHARD0[0], SHARD1[0]]
    for victim in victims:
        world.node.transact(OUTSIDE, value=ETH // 2, sender=victim)
    for _ in range(2):  # a second round finds them open: refreshed, not opened again
        side_by_side()
    assert world.open_types() == sorted([("balance_shortfall", v) for v in victims] +
                                        [("unauthorized_outflow", v) for v in victims])
    for victim in victims:
        left = int(world.node.call("eth_getBalance", [victim, "latest"]), 16)
        world.node.transact(victim, value=BALANCES[victim] - left)
    world.import_ledger(BALANCES)
    for _ in range(2):  # shard 1 reads at the block shard 0 had scanned when it started
        side_by_side()
    assert [t for t in world.open_types() if t[0] == "balance_shortfall"] == []
    store = world.service.store
    verified = store.verify_audit()
    assert verified.ok and verified.checked >= 7, verified  # 4 opened, 2 cleared, 2 imports


def test_the_migrated_checkpoint_table_matches_the_model(store_url: str) -> None:
    """Migration 0008 adds the shard columns and index exactly as modelled."""
    engine = make_engine(store_url)
    upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert [d for d in diff if "checkpoint" in repr(d)] == []
