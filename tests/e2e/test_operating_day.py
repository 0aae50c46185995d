"""An operating day on a real anvil node (SPEC §8): no false alarms.

The daemon (its `run --once` step: poll the inbox, then a cycle) runs between the steps
of a seeded script that makes 200 deposits (ETH and token) and 50 approved withdrawals
(ETH and token, each instruction fed through the inbox before it is sent), spread over
blocks. A simulated books system writes a snapshot into the inbox every few blocks,
cut at a block 0-5 blocks behind the head (the chain is read 2 blocks below it), once
at the head itself (books ahead of the pinned block), and once just before a reorg
removes a deposit it had booked ahead of the chain. Every discrepancy ever opened is
counted: none may appear until, at the end, one unauthorized outflow (a transfer
finding and its balance finding, at once) and one deposit the books never book (a
surplus once a snapshot is cut after it).

Chain time is kept in the past (anvil starts 3 hours back, 10 s per block) so that
every cut-off can be a block's time and never lies in the future.

Before reconciling items (the same script, without the reorg episode, on the commit
before they were wired in, SQLite): 27 balance findings were opened during the day, all
false. The test prints, for the record, how many distinct balance findings a plain
comparison of the books with the chain would raise.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from chains.evm.devnet import (
    AnvilNode,
    call_data,
    deploy_test_token,
    impersonate,
    install_multicall,
    mint,
    set_balances,
    start_anvil,
)
from daemon.bootstrap import build_service
from daemon.inputs.config import load_settings
from daemon.runtime.inbox import PROCESSED, REJECTED, Inbox
from daemon.service import Service
from daemon.store.db import make_engine, upgrade
from daemon.store.identity import Identities
from tests.anvil import require_anvil

pytestmark = pytest.mark.anvil

SEED = 14
ETH, USDC = 10**18, 10**6
CLIENTS = [f"0x10000000000000000000000000000000000000{i:02x}" for i in range(1, 7)]
PAYEE = "0x20000000000000000000000000000000000000aa"
THIEF = "0x20000000000000000000000000000000000000bb"
CONFIRMATIONS = 2
DEPOSITS, WITHDRAWALS = 200, 50
Key = tuple[str, str]  # (wallet, asset)


@pytest.fixture
def past_anvil() -> Iterator[AnvilNode]:
    """A node of its own whose clock starts three hours back, 10 s per block."""
    node = start_anvil(require_anvil(), "--timestamp", str(int(time.time()) - 3 * 3600))
    try:
        node.call("anvil_setBlockTimestampInterval", [10])
        yield node
    finally:
        node.stop()


class Day:
    """The chain, the books system that follows it, and the daemon."""

    def __init__(self, node: AnvilNode, folder: Path, store_url: str) -> None:
        self.node, self.folder = node, folder
        self.rng = random.Random(SEED)
        self.token = deploy_test_token(node, "USD Coin", "USDC", 6)
        install_multicall(node)
        for wallet in CLIENTS:
            impersonate(node, wallet)
        self.opening: dict[Key, int] = {}
        set_balances(node, {w: 50 * ETH for w in CLIENTS})
        for w in CLIENTS:
            mint(node, self.token, w, 10_000 * USDC)
            self.opening[(w, "ETH")], self.opening[(w, "USDC")] = 50 * ETH, 10_000 * USDC
        self.moves: list[tuple[int, Key, int]] = []
        """(block, (wallet, asset), delta): what the books book once cut at that block."""
        self.inbox = folder / "inbox"
        self.inbox.mkdir()
        config = folder / "segwatch.toml"
        config.write_text(f"""
[store]
url = "{store_url}"
[ledger]
inbox = "{self.inbox}"
inbox_user = "books"
[[chains]]
name = "devnet"
family = "evm"
chain_id = 31337
confirmations = {CONFIRMATIONS}
max_head_age_seconds = 86400
sources = [{{ kind = "jsonrpc", url = "{node.url}" }}]
tokens = [{{ symbol = "USDC", contract = "{self.token}", decimals = 6 }}]
[[users]]
name = "carol"
roles = ["checker"]
""")
        upgrade(make_engine(store_url))  # `segwatch db upgrade`
        self.service: Service = build_service(load_settings(config))
        self.service.store.sync_catalog(self.service.settings)
        Identities(self.service.store.engine).add_user(
            "books", ["feeder"], None, "local", "test", datetime.now(UTC))
        self.reader = Inbox(self.inbox, self.service, "books")
        self.cut_block = 0
        self.snapshots = self.withdrawals = self.cycles = 0
        self.naive: set[tuple[str, Key]] = set()
        # the opening books, cut at the set-up's last block, which the first cycle reads
        # (its scan starts there: it knows no transfer above it yet)
        node.mine(CONFIRMATIONS)
        self.books(self.head() - CONFIRMATIONS)

    # --- the chain -----------------------------------------------------------------------
    def head(self) -> int:
        return self.node.block_number()

    def block_time(self, height: int) -> int:
        return int(self.node.call("eth_getBlockByNumber", [hex(height), False])["timestamp"],
                   16)

    def record(self, receipt: dict[str, object], moves: dict[Key, int]) -> None:
        block = int(str(receipt["blockNumber"]), 16)
        self.moves += [(block, key, delta) for key, delta in moves.items()]

    def deposit(self, booked: bool = True) -> str:
        wallet = self.rng.choice(CLIENTS)
        if self.rng.random() < 0.5:
            amount = self.rng.randint(1, 10**6) * 10**12
            receipt = self.node.transact(wallet, value=amount)
            key = (wallet, "ETH")
        else:
            amount = self.rng.randint(1, 10**9)
            receipt = self.node.transact(self.token, call_data(
                "mint(address,uint256)", ["address", "uint256"], [wallet, amount]))
            key = (wallet, "USDC")
        if booked:
            self.record(receipt, {key: amount})
        return wallet

    def withdraw(self) -> None:
        """An approved withdrawal: the instruction through the inbox first, then sent;
        the books book the amount and the fee."""
        wallet = self.rng.choice(CLIENTS)
        eth = self.rng.random() < 0.5
        amount = self.rng.randint(1, 10**5) * 10**12 if eth else self.rng.randint(1, 10**8)
        self.withdrawals += 1
        approved = datetime.fromtimestamp(self.block_time(self.head()), UTC).isoformat()
        shown = units(amount, 18 if eth else 6)
        self.drop(f"withdrawals-{self.withdrawals:03d}.csv",
                  "id,chain,from_address,to_address,asset,amount,approved_by,approved_at\n"
                  f"w{self.withdrawals},devnet,{wallet},{PAYEE},{'ETH' if eth else 'USDC'},"
                  f"{shown},carol,{approved}\n")
        outcomes = {o.name: o.status for o in self.reader.poll()}
        assert outcomes[f"withdrawals-{self.withdrawals:03d}.csv"] == "imported", outcomes
        assert set(outcomes.values()) <= {"imported", "already"}, outcomes
        if eth:
            receipt = self.node.transact(PAYEE, value=amount, sender=wallet)
            moves = {(wallet, "ETH"): -amount - fee(receipt)}
        else:
            receipt = self.node.transact(self.token, call_data(
                "transfer(address,uint256)", ["address", "uint256"], [PAYEE, amount]),
                sender=wallet)
            moves = {(wallet, "USDC"): -amount, (wallet, "ETH"): -fee(receipt)}
        self.record(receipt, moves)

    # --- the books -----------------------------------------------------------------------
    def drop(self, name: str, text: str) -> None:
        temporary = self.inbox / f".{name}.tmp"
        temporary.write_text(text)
        temporary.rename(self.inbox / name)

    def booked(self, block: int) -> dict[Key, int]:
        out = dict(self.opening)
        for height, key, delta in self.moves:
            if height <= block:
                out[key] += delta
        return out

    def books(self, block: int) -> None:
        """Write the books cut at `block`'s time (everything up to it booked)."""
        block = max(block, self.cut_block)
        self.cut_block = block
        cut = datetime.fromtimestamp(self.block_time(block), UTC)
        rows = "".join(f"devnet,{w},segregated,c{CLIENTS.index(w)},{asset},"
                       f"{units(amount, 18 if asset == 'ETH' else 6)}\n"
                       for (w, asset), amount in sorted(self.booked(block).items()))
        self.snapshots += 1
        self.drop(f"ledger-{self.snapshots:03d}.asof-{cut:%Y%m%dT%H%M%SZ}.csv",
                  "chain,address,structure,owner,asset,amount\n" + rows)

    # --- the daemon ----------------------------------------------------------------------
    def run_once(self) -> list[dict[str, object]]:
        """What `segwatch run --once` does: the inbox first, then one cycle per chain.
        Returns every discrepancy ever opened."""
        for outcome in self.reader.poll():
            assert outcome.status in ("imported", "already"), outcome
        (result,) = self.service.run_once()
        assert result.error is None and result.scan_error is None, result
        self.cycles += 1
        self.count_naive(result.block.height if result.block else 0)
        return [{"type": r.row.type, "address": r.row.address, "asset": r.row.asset,
                 "status": r.row.status, "in_transit": r.row.in_transit}
                for r in self.service.discrepancies(limit=1000)]

    def count_naive(self, pinned: int) -> None:
        """The balance findings a comparison of the books with the chain, without
        reconciling items, would raise at this cycle (kept for the record)."""
        books = self.booked(self.cut_block)
        for key, amount in books.items():
            onchain = self.onchain(key, pinned)
            if onchain != amount:
                self.naive.add(("shortfall" if onchain < amount else "surplus", key))

    def onchain(self, key: Key, block: int) -> int:
        wallet, asset = key
        if asset == "ETH":
            return int(self.node.call("eth_getBalance", [wallet, hex(block)]), 16)
        data = call_data("balanceOf(address)", ["address"], [wallet])
        return int(self.node.call("eth_call", [{"to": self.token, "data": "0x" + data.hex()},
                                               hex(block)]), 16)


def units(amount: int, decimals: int) -> str:
    return format(Decimal(amount).scaleb(-decimals), "f")


def fee(receipt: dict[str, object]) -> int:
    return int(str(receipt["gasUsed"]), 16) * int(str(receipt["effectiveGasPrice"]), 16)


def test_an_operating_day_raises_only_the_theft_and_the_deposit_never_booked(
        past_anvil: AnvilNode, store_url: str, tmp_path: Path) -> None:
    day = Day(past_anvil, tmp_path, store_url)
    assert day.run_once() == []  # the opening books match the chain
    script = ["deposit"] * DEPOSITS + ["withdraw"] * WITHDRAWALS
    day.rng.shuffle(script)
    leading_at = len(script) // 3
    reorg_at = 2 * len(script) // 3
    for n, step in enumerate(script, start=1):
        if step == "deposit":
            day.deposit()
        else:
            day.withdraw()
        if day.rng.random() < 0.3:
            day.node.mine(day.rng.randint(1, 3))  # spread over blocks
        if n % 12 == 0:  # the books, cut 0-5 blocks behind the head
            day.books(day.head() - day.rng.randint(0, 5))
        if n == leading_at:  # books ahead of the pinned block: cut at the head itself
            day.books(day.head())
        if n == reorg_at:
            reorg_a_booked_ahead_deposit(day)
        if n % 5 == 0:
            assert day.run_once() == [], f"a false finding after step {n}"
    # the end of the day: a theft, and a deposit the books never book
    thief = CLIENTS[0]
    stolen = day.node.transact(THIEF, value=ETH, sender=thief)
    unbooked = day.deposit(booked=False)
    unbooked_block = day.head()
    day.node.mine(CONFIRMATIONS)
    found = day.run_once()  # the theft: its transfer and balance findings, at once
    assert sorted((f["type"], str(f["address"]).lower()) for f in found) == sorted([
        ("unauthorized_outflow", thief.lower()), ("balance_shortfall", thief.lower())]), found
    # the unbooked deposit is in transit until books are cut after it
    day.books(day.head())
    day.node.mine(1)
    found = day.run_once()
    kinds = sorted((f["type"], str(f["address"]).lower()) for f in found)
    assert kinds == sorted([("unauthorized_outflow", thief.lower()),
                            ("balance_shortfall", thief.lower()),
                            ("balance_surplus", unbooked.lower())]), found
    assert all(f["status"] == "open" for f in found)
    assert stolen["status"] == "0x1" and unbooked_block > 0
    processed = list((day.inbox / PROCESSED).iterdir())
    assert len(processed) == day.snapshots + day.withdrawals
    assert not (day.inbox / REJECTED).exists() or list((day.inbox / REJECTED).iterdir()) == []
    print(f"\noperating day: {DEPOSITS} deposits, {WITHDRAWALS} approved withdrawals, "
          f"{day.snapshots} snapshots, {day.cycles} cycles, {day.head()} blocks; "
          f"discrepancies opened: {len(found)} (all expected); without reconciling items a "
          f"comparison of books and chain would have raised {len(day.naive)} distinct "
          f"balance findings")


def reorg_a_booked_ahead_deposit(day: Day) -> None:
    """The books book a deposit above the pinned block; a cycle runs (an `ahead` item);
    a reorg then removes it for good (a `reorged` item: the books still have it); books
    cut after the reorg no longer book it. Nothing is raised at any point."""
    day.node.mine(CONFIRMATIONS + 1)
    assert day.run_once() == []
    fork = day.head()
    snapshot = day.node.snapshot()
    before = len(day.moves)
    wallet = day.deposit()
    day.books(day.head())  # booked, while still above the pinned block
    assert day.run_once() == []
    status = day.service.status()[0]
    assert [i.side for i in status.items] == ["ahead"], status.items
    day.node.revert(snapshot)
    del day.moves[before:]  # the books see the reorg too: from now on it is not booked
    day.cut_block = fork  # (their next cut follows the new branch)
    day.node.mine(CONFIRMATIONS + 1)  # a longer branch without the deposit
    assert day.run_once() == []
    status = day.service.status()[0]
    assert [(i.side, i.movement.address.lower()) for i in status.items] == [
        ("reorged", wallet.lower())], status.items
    day.node.mine(1)
    day.books(day.head())  # cut after the reorg: the deposit is not in them
    assert day.run_once() == []
    assert day.service.status()[0].items == []
