"""UTXO transfer history on a real regtest litecoind through a `core-rpc` source and an
Esplora server over the same node, via the service: seeding the tracked outputs, withdrawals with and without approval, change and
fees, client → house, two owners' coins in one transaction, a reorg that replaces a
transaction (RBF) and voids its finding.

A node of its own (module scope): the reorg test invalidates blocks. Runs on SQLite and
PostgreSQL (`store_url`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from chains.utxo.core_rpc import coins_to_sats
from daemon.bootstrap import build_service
from daemon.inputs.config import Settings
from daemon.service import Service
from daemon.store.db import make_engine, upgrade
from tests.esplora_server import EsploraServer
from tests.litecoind import LitecoinNode, require_litecoind, start_litecoind
from tests.principals import FEEDER

CHECKERS = [{"name": "carol", "roles": ["checker"]}]
"""The approver of the tests' withdrawals (SPEC §11: a configured checker)."""

pytestmark = pytest.mark.litecoind


@pytest.fixture(scope="module")
def node() -> Iterator[LitecoinNode]:
    started = start_litecoind(require_litecoind(), ["-mempoolreplacement=1"])
    try:
        yield started
    finally:
        started.stop()


@dataclass
class World:
    node: LitecoinNode
    service: Service
    tmp: Path
    alice: str  # client alice, wallet `wa`
    alice2: str  # client alice, second address of `wa`
    bob: str  # client bob, wallet `wb`
    house: str  # the firm, wallet `wh`
    outside: str  # nobody's in the ledger
    wa: str
    wb: str
    wh: str

    def cycle(self) -> Any:
        result = self.service.run_cycle(self.service.settings.chains[0])
        assert result.error is None, result.error
        assert result.scan_error is None, result.scan_error
        return result

    def open_findings(self) -> list[tuple[str, str, int | None, str | None]]:
        """Open transfer findings and unexplained balance changes (balance findings
        against the unchanged ledger are expected and left out)."""
        return sorted((r.row.type, r.row.address or "", r.row.amount, r.row.tx_hash)
                      for r in self.service.discrepancies(status="open")
                      if r.row.type not in ("balance_shortfall", "balance_surplus"))

    def pay(self, wallet: str, outputs: dict[str, str], change: str, *,
            replaceable: bool = False) -> str:
        """Pay `outputs` (address → LTC) from `wallet`, change to `change`; return the txid."""
        raw = self.node.call("createrawtransaction", [], outputs, 0, replaceable,
                             wallet=wallet)
        funded = self.node.call("fundrawtransaction", raw,
                                {"changeAddress": change, "replaceable": replaceable},
                                wallet=wallet)
        signed = self.node.call("signrawtransactionwithwallet", funded["hex"], wallet=wallet)
        assert signed["complete"]
        return str(self.node.call("sendrawtransaction", signed["hex"]))


def sats(coins: str) -> int:
    return coins_to_sats(Decimal(coins), "test", "amount")


@pytest.fixture(scope="module")
def esplora_url(node: LitecoinNode) -> Iterator[str]:
    server = EsploraServer(node).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["core-rpc", "esplora"])
def source(request: pytest.FixtureRequest, node: LitecoinNode) -> dict[str, str]:
    """Each scenario runs through a Core node and through an Esplora server over it."""
    if request.param == "core-rpc":
        return {"kind": "core-rpc", "url": node.url}
    return {"kind": "esplora", "url": request.getfixturevalue("esplora_url")}


@pytest.fixture
def world(node: LitecoinNode, store_url: str, tmp_path: Path, source: dict[str, str]) -> World:
    wa, wb, wh, wx = (node.create_wallet() for _ in range(4))
    alice, alice2 = node.new_address(wa), node.new_address(wa, "legacy")
    bob, house, outside = node.new_address(wb), node.new_address(wh), node.new_address(wx)
    for address, amount in ((alice, "2"), (bob, "1"), (house, "5")):
        node.send(address, amount)
    node.mine(1)
    settings = Settings(store={"url": store_url}, users=CHECKERS, chains=[{  # type: ignore[arg-type, list-item]
        "name": "litecoin", "family": "utxo", "network": "litecoin-regtest",
        "confirmations": 0, "sources": [source]}])
    upgrade(make_engine(store_url))
    service = build_service(settings)
    ledger = tmp_path / "ledger.csv"
    with ledger.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
        out.writerow(["litecoin", alice, "segregated", "alice", "LTC", "2"])
        out.writerow(["litecoin", alice2, "segregated", "alice", "LTC", "0"])
        out.writerow(["litecoin", bob, "segregated", "bob", "LTC", "1"])
        out.writerow(["litecoin", house, "house", "FIRM", "LTC", "5"])
    service.import_ledger(ledger, dry_run=False, actor=FEEDER)
    w = World(node, service, tmp_path, alice, alice2, bob, house, outside, wa, wb, wh)
    first = w.cycle()  # seeds the tracked outputs (they predate the cursor) and pins it
    assert first.findings == ()
    return w


def approve(world: World, id_: str, to: str, amount: str, tx_hash: str = "") -> None:
    path = world.tmp / f"w-{id_}.csv"
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    path.write_text("id,chain,from_address,to_address,asset,amount,approved_by,approved_at,"
                    f"tx_hash\n{id_},litecoin,{world.alice},{to},LTC,{amount},carol,{at},"
                    f"{tx_hash}\n")
    world.service.import_withdrawals(path, dry_run=False, actor=FEEDER)


def test_an_unapproved_withdrawal_is_unauthorized_while_change_and_fee_explain_the_balance(
        world: World) -> None:
    """alice pays 0.5 LTC outside without an instruction, change back to her own address:
    one unauthorized_outflow of exactly 0.5 LTC on her seeded (pre-cursor) coins, and the
    fee and change make the balance change add up (no unexplained_balance_change)."""
    txid = world.pay(world.wa, {world.outside: "0.5"}, world.alice)
    world.node.mine(1)
    world.cycle()
    assert world.open_findings() == [
        ("unauthorized_outflow", world.alice, sats("0.5"), txid)]
    stored = world.service.store.scan_state("litecoin")
    assert stored is not None and stored.height == world.node.height()


def test_an_approved_withdrawal_and_an_outside_deposit_raise_nothing(world: World) -> None:
    """An outflow matching an approved withdrawal (destination + amount) and a deposit from
    outside are both expected: no finding, the balances stay continuous."""
    approve(world, "w-1", world.outside, "0.3")
    world.pay(world.wa, {world.outside: "0.3"}, world.alice)
    world.node.send(world.alice, "0.7")
    world.node.mine(1)
    world.cycle()
    assert world.open_findings() == []


def test_client_to_house_is_commingling_and_moves_between_one_owners_wallets_are_not(
        world: World) -> None:
    """alice → house is commingling; alice → her own second address is internal."""
    to_house = world.pay(world.wa, {world.house: "0.4"}, world.alice)
    world.node.mine(1)
    world.pay(world.wa, {world.alice2: "0.2"}, world.alice)
    world.node.mine(1)
    world.cycle()
    assert world.open_findings() == [("commingling", world.alice, sats("0.4"), to_house)]


def test_two_owners_coins_spent_in_one_transaction_is_commingling(world: World) -> None:
    """A transaction spending bob's and alice's coins together (paying alice back) mixes
    two clients' assets: commingling, and each wallet's balance still adds up."""
    inputs = []
    for wallet, address in ((world.wa, world.alice), (world.wb, world.bob)):
        (coin,) = world.node.call("listunspent", 1, 9_999_999, [address], wallet=wallet)
        inputs.append({"txid": coin["txid"], "vout": coin["vout"]})
    raw = world.node.call("createrawtransaction", inputs, {world.alice: "2.99"})
    for wallet in (world.wa, world.wb):
        raw = world.node.call("signrawtransactionwithwallet", raw, wallet=wallet)["hex"]
    txid = world.node.call("sendrawtransaction", raw)
    world.node.mine(1)
    world.cycle()
    findings = world.open_findings()
    assert findings == [("commingling", world.bob, sats("1"), txid)]


def replace_with_higher_fee(world: World, txid: str) -> str:
    """Send a BIP-125 replacement of mempool transaction `txid`: the same inputs and
    payment, 0.001 LTC less change to alice; return its txid."""
    tx = world.node.call("getrawtransaction", txid, True)
    inputs = [{"txid": i["txid"], "vout": i["vout"], "sequence": 0xFFFFFFFD} for i in tx["vin"]]
    outputs = {}
    for out in tx["vout"]:
        (address,) = out["scriptPubKey"]["addresses"]
        value = Decimal(str(out["value"]))
        outputs[address] = str(value - Decimal("0.001") if address == world.alice else value)
    raw = world.node.call("createrawtransaction", inputs, outputs)
    signed = world.node.call("signrawtransactionwithwallet", raw, wallet=world.wa)
    return str(world.node.call("sendrawtransaction", signed["hex"]))


def test_a_reorg_that_replaces_a_transaction_voids_its_finding_and_flags_the_replacement(
        world: World) -> None:
    """alice's unapproved payment is mined and flagged; the block is invalidated, the
    payment replaced by a fee bump (BIP-125 RBF, a new txid) and mined on a longer branch: the
    first finding is voided, the replacement flagged, and no flow of the replaced
    transaction remains (balances add up)."""
    first = world.pay(world.wa, {world.outside: "0.6"}, world.alice, replaceable=True)
    (block,) = world.node.mine(1)
    world.cycle()
    assert world.open_findings() == [("unauthorized_outflow", world.alice, sats("0.6"), first)]
    world.node.call("invalidateblock", block)
    bumped = replace_with_higher_fee(world, first)
    mempool = world.node.call("getrawmempool")
    assert bumped in mempool and first not in mempool
    world.node.mine(2)
    world.cycle()
    assert world.open_findings() == [("unauthorized_outflow", world.alice, sats("0.6"), bumped)]
    voided = world.service.discrepancies(status="voided")
    assert [(r.row.tx_hash, r.row.type) for r in voided] == [(first, "unauthorized_outflow")]
