"""The operating day (SPEC §8) on a real regtest litecoind, read through a `core-rpc`
source and through Esplora (the test server fed by the same node), on SQLite and
PostgreSQL: no false alarms.

A seeded script makes 200 deposits into six client wallets and 50 approved withdrawals
out of them (each instruction fed through the inbox before it is sent; change goes back
to the client's own address; the books book amount and fee), spread over blocks. A
simulated books system writes a snapshot into the inbox every few blocks, cut at a
block 0-5 blocks behind the tip (the chain is read 1 block below it) and once at the
tip itself. Every discrepancy ever opened is counted: none until, at the end, one
unauthorized outflow (its transfer finding and balance finding, at once) and one
deposit the books never book (a surplus once a snapshot is cut after it).

The node runs on a mock clock three hours back, 10 s per block, so every cut-off is a
block's time and never lies in the future.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.bootstrap import build_service
from daemon.inputs.config import load_settings
from daemon.runtime.inbox import PROCESSED, Inbox
from daemon.service import Service
from daemon.store.db import make_engine, upgrade
from daemon.store.identity import Identities
from tests.esplora_server import EsploraServer
from tests.litecoind import LitecoinNode, require_litecoind, start_litecoind

pytestmark = pytest.mark.litecoind

SEED = 15
SAT = 10**8
CLIENTS = 6
CONFIRMATIONS = 1
DEPOSITS, WITHDRAWALS = 200, 50
START = int(time.time()) - 3 * 3600


@pytest.fixture
def past_litecoind() -> Iterator[LitecoinNode]:
    """A node of its own on a mock clock three hours back."""
    node = start_litecoind(require_litecoind(), [f"-mocktime={START}"])
    try:
        yield node
    finally:
        node.stop()


class Day:
    """The chain, the books system that follows it, and the daemon."""

    def __init__(self, node: LitecoinNode, folder: Path, store_url: str, source: str) -> None:
        self.node, self.rng = node, random.Random(SEED)
        self.clock = START
        self.esplora: EsploraServer | None = None
        self.wallets = [node.create_wallet(f"c{i}") for i in range(CLIENTS)]
        self.addresses = [node.new_address(w, "bech32") for w in self.wallets]
        payee_wallet = node.create_wallet("payee")
        self.payee = node.new_address(payee_wallet, "bech32")
        self.thief = node.new_address(payee_wallet, "legacy")
        self.opening = {a: 0 for a in self.addresses}
        for address in self.addresses:
            sent = 5 * SAT
            node.send(address, Decimal(sent) / SAT)
            self.opening[address] += sent
        self.mine(1)
        self.moves: list[tuple[int, str, int]] = []
        """(block, address, delta): what the books book once cut at that block."""
        self.inbox = folder / "inbox"
        self.inbox.mkdir()
        if source == "esplora":
            self.esplora = EsploraServer(node).start()
            spec = f'{{ kind = "esplora", url = "{self.esplora.url}" }}'
        else:
            spec = f'{{ kind = "core-rpc", url = "{node.url}" }}'
        config = folder / "segwatch.toml"
        config.write_text(f"""
[store]
url = "{store_url}"
[ledger]
inbox = "{self.inbox}"
inbox_user = "books"
[[chains]]
name = "litecoin"
family = "utxo"
network = "litecoin-regtest"
confirmations = {CONFIRMATIONS}
max_head_age_seconds = 86400
sources = [{spec}]
[[users]]
name = "carol"
roles = ["checker"]
""")
        upgrade(make_engine(store_url))
        self.service: Service = build_service(load_settings(config))
        self.service.store.sync_catalog(self.service.settings)
        Identities(self.service.store.engine).add_user(
            "books", ["feeder"], None, "local", "test", datetime.now(UTC))
        self.reader = Inbox(self.inbox, self.service, "books")
        self.cut_block = 0
        self.snapshots = self.withdrawals = self.cycles = 0
        self.mine(CONFIRMATIONS)
        self.books(self.node.height() - CONFIRMATIONS)

    def close(self) -> None:
        if self.esplora is not None:
            self.esplora.stop()

    # --- the chain -----------------------------------------------------------------------
    def mine(self, blocks: int) -> None:
        """Mine `blocks` blocks, each 10 s after the last on the mock clock."""
        for _ in range(blocks):
            self.clock += 10
            self.node.call("setmocktime", self.clock)
            self.node.mine(1)

    def block_time(self, height: int) -> int:
        return int(self.node.call("getblockheader", self.node.call("getblockhash", height))
                   ["time"])

    def deposit(self, booked: bool = True) -> str:
        address = self.rng.choice(self.addresses)
        amount = self.rng.randint(1, 10**6) * 100
        self.node.send(address, Decimal(amount) / SAT)
        self.mine(1)
        if booked:
            self.moves.append((self.node.height(), address, amount))
        return address

    def spend(self, index: int, to: str, amount: int) -> int:
        """Send `amount` from client `index`'s address to `to`, change back to the same
        address; mine it; return the fee."""
        wallet, address = self.wallets[index], self.addresses[index]
        funded = self.node.call("walletcreatefundedpsbt", [], [{to: str(Decimal(amount) / SAT)}],
                                0, {"changeAddress": address}, wallet=wallet)
        signed = self.node.call("walletprocesspsbt", funded["psbt"], wallet=wallet)
        final = self.node.call("finalizepsbt", signed["psbt"])
        self.node.call("sendrawtransaction", final["hex"])
        self.mine(1)
        return int(Decimal(str(funded["fee"])) * SAT)

    def withdraw(self) -> None:
        """An approved withdrawal: the instruction through the inbox first, then sent;
        the books book the amount and the fee."""
        index = self.rng.randrange(CLIENTS)
        address = self.addresses[index]
        amount = self.rng.randint(1, 10**5) * 100
        self.withdrawals += 1
        approved = datetime.fromtimestamp(self.block_time(self.node.height()), UTC)
        self.drop(f"withdrawals-{self.withdrawals:03d}.csv",
                  "id,chain,from_address,to_address,asset,amount,approved_by,approved_at\n"
                  f"w{self.withdrawals},litecoin,{address},{self.payee},LTC,"
                  f"{Decimal(amount) / SAT},carol,{approved.isoformat()}\n")
        outcomes = {o.name: o.status for o in self.reader.poll()}
        assert outcomes[f"withdrawals-{self.withdrawals:03d}.csv"] == "imported", outcomes
        paid = self.spend(index, self.payee, amount)
        self.moves.append((self.node.height(), address, -amount - paid))

    # --- the books -----------------------------------------------------------------------
    def drop(self, name: str, text: str) -> None:
        temporary = self.inbox / f".{name}.tmp"
        temporary.write_text(text)
        temporary.rename(self.inbox / name)

    def booked(self, block: int) -> dict[str, int]:
        out = dict(self.opening)
        for height, address, delta in self.moves:
            if height <= block:
                out[address] += delta
        return out

    def books(self, block: int) -> None:
        """Write the books cut at `block`'s time (everything up to it booked)."""
        block = max(block, self.cut_block)
        self.cut_block = block
        cut = datetime.fromtimestamp(self.block_time(block), UTC)
        rows = "".join(f"litecoin,{a},segregated,c{self.addresses.index(a)},LTC,"
                       f"{Decimal(amount) / SAT}\n"
                       for a, amount in sorted(self.booked(block).items()))
        self.snapshots += 1
        self.drop(f"ledger-{self.snapshots:03d}.asof-{cut:%Y%m%dT%H%M%SZ}.csv",
                  "chain,address,structure,owner,asset,amount\n" + rows)

    # --- the daemon ----------------------------------------------------------------------
    def run_once(self) -> list[tuple[str, str, str]]:
        """What `segwatch run --once` does: the inbox first, then a cycle. Returns every
        discrepancy ever opened as (type, address, status)."""
        for outcome in self.reader.poll():
            assert outcome.status in ("imported", "already"), outcome
        (result,) = self.service.run_once()
        assert result.error is None and result.scan_error is None, result
        self.cycles += 1
        return sorted((r.row.type, r.row.address or "", r.row.status)
                      for r in self.service.discrepancies(limit=1000))


@pytest.mark.parametrize("source", ["core-rpc", "esplora"])
def test_an_operating_day_on_litecoin_raises_only_the_theft_and_the_unbooked_deposit(
        past_litecoind: LitecoinNode, store_url: str, tmp_path: Path, source: str) -> None:
    day = Day(past_litecoind, tmp_path, store_url, source)
    try:
        assert day.run_once() == []  # the opening books match the chain
        script = ["deposit"] * DEPOSITS + ["withdraw"] * WITHDRAWALS
        day.rng.shuffle(script)
        for n, step in enumerate(script, start=1):
            day.deposit() if step == "deposit" else day.withdraw()
            if day.rng.random() < 0.2:
                day.mine(day.rng.randint(1, 2))  # spread over blocks
            if n % 12 == 0:  # the books, cut 0-5 blocks behind the tip
                day.books(day.node.height() - day.rng.randint(0, 5))
            if n == len(script) // 2:  # books ahead of the pinned block: cut at the tip
                day.books(day.node.height())
            if n % 5 == 0:
                assert day.run_once() == [], f"a false finding after step {n}"
        thief = day.addresses[0]
        day.spend(0, day.thief, SAT // 10)  # no instruction: a theft
        unbooked = day.deposit(booked=False)
        day.mine(CONFIRMATIONS)
        assert day.run_once() == sorted([("balance_shortfall", thief, "open"),
                                         ("unauthorized_outflow", thief, "open")])
        day.books(day.node.height())  # cut after the deposit, which it does not book
        day.mine(1)
        assert day.run_once() == sorted([("balance_shortfall", thief, "open"),
                                         ("balance_surplus", unbooked, "open"),
                                         ("unauthorized_outflow", thief, "open")])
        assert len(list((day.inbox / PROCESSED).iterdir())) == day.snapshots + day.withdrawals
        print(f"\nlitecoin operating day ({source}): {DEPOSITS} deposits, {WITHDRAWALS} "
              f"approved withdrawals, {day.snapshots} snapshots, {day.cycles} cycles, "
              f"{day.node.height()} blocks: 3 discrepancies, all expected")
    finally:
        day.close()
