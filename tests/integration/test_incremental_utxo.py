"""Incremental reads equal full reads on a real regtest litecoind (daemon/rules/recheck.py).

Two services watch the same chain: one reads every wallet every cycle
(`full_recheck_seconds = 0`), the other incrementally. Through a Core node the
incremental one computes every balance from the outputs it tracks and calls
`scantxoutset` (which walks the node's whole UTXO set) only to seed new wallets and once
per period; through Esplora it reads the wallets the scan saw touched plus the rotating
slice. Over random payments between the watched wallets and out, mining and reorgs, both
open the same findings once a period has passed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.bootstrap import Adapters, open_store
from daemon.inputs.config import Settings
from daemon.service import CycleResult, Service
from tests.clock import ManualClock
from tests.esplora_server import EsploraServer
from tests.litecoind import LitecoinNode, NodeRpcError, require_litecoind, start_litecoind
from tests.principals import FEEDER

pytestmark = pytest.mark.litecoind

PERIOD = 600.0


@dataclass
class Wallets:
    names: list[str]
    addresses: list[str]
    outside: str


@pytest.fixture(scope="module")
def node() -> Iterator[LitecoinNode]:
    # MWEB never activates: invalidating a block with its HogEx transaction sends that
    # transaction back to the mempool, and litecoind 0.21 then mines no block at all
    started = start_litecoind(require_litecoind(), ["-vbparams=mweb:-2:0"])
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def wallets(node: LitecoinNode) -> Wallets:
    names = [node.create_wallet() for _ in range(4)]
    addresses = [node.new_address(name) for name in names]
    for address in addresses:
        node.send(address, "3")
    outside = node.new_address(node.create_wallet())
    node.mine(1)
    return Wallets(names, addresses, outside)


@pytest.fixture(scope="module")
def esplora_url(node: LitecoinNode) -> Iterator[str]:
    server = EsploraServer(node).start()
    try:
        yield server.url
    finally:
        server.stop()


@dataclass
class Pair:
    node: LitecoinNode
    wallets: Wallets
    full: Service
    incremental: Service
    clock: ManualClock
    results: list[CycleResult] = field(default_factory=list)

    def cycle(self) -> None:
        full = self._run(self.full)
        incremental = self._run(self.incremental)
        assert full.wallets_read == full.wallets
        assert incremental.block is not None and full.block is not None
        self.results.append(incremental)

    @staticmethod
    def _run(service: Service) -> CycleResult:
        result = service.run_cycle(service.settings.chains[0])
        assert result.error is None, result.error
        assert result.scan_error is None, result.scan_error
        return result

    def explain(self) -> str:
        """What to look at when the two disagree: the incremental cycles and every open
        finding of both with its amounts and block."""
        lines = [f"cycle block {r.block.height if r.block else None} read {r.wallets_read} "
                 f"{r.full_read or 'incremental'}" for r in self.results]
        for name, service in (("full", self.full), ("incremental", self.incremental)):
            lines += [f"{name}: {r.row.type} {r.row.address} onchain={r.row.onchain} "
                      f"ledger={r.row.ledger} difference={r.row.difference} "
                      f"block={r.row.block_number} tx={r.row.tx_hash}"
                      for r in service.discrepancies(status="open")]
        return "\n".join(lines)

    def findings(self, service: Service) -> list[tuple[str, str, str, str]]:
        return sorted((r.row.type, r.row.address or "", r.row.asset or "", r.row.tx_hash or "")
                      for r in service.discrepancies(status="open"))


def make_service(url: str, source: dict[str, str], period: float, confirmations: int,
                 clock: ManualClock) -> Service:
    settings = Settings(store={"url": url}, chains=[{  # type: ignore[arg-type, list-item]
        "name": "litecoin", "family": "utxo", "network": "litecoin-regtest",
        "confirmations": confirmations, "full_recheck_seconds": period,
        "sources": [source]}])
    return Service(settings, open_store(url), Adapters(), clock=clock)


def start(node: LitecoinNode, wallets: Wallets, tmp: Path, source: dict[str, str],
          confirmations: int) -> Pair:
    for name, address in zip(wallets.names, wallets.addresses, strict=True):
        if Decimal(node.call("getbalance", wallet=name)) < 2:  # earlier examples spent it
            node.send(address, "3")
    node.mine(1)
    ledger = tmp / "ledger.csv"
    with ledger.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
        for i, address in enumerate(wallets.addresses):  # the books match: nothing open
            held = node.call("scantxoutset", "start", [f"addr({address})"])["total_amount"]
            out.writerow(["litecoin", address, "segregated", f"client{i}", "LTC", f"{Decimal(str(held)):f}"])
    clock = ManualClock()
    full = make_service(f"sqlite:///{tmp / 'full.db'}", source, 0, confirmations, clock)
    incremental = make_service(f"sqlite:///{tmp / 'incremental.db'}", source, PERIOD,
                               confirmations, clock)
    for service in (full, incremental):
        service.import_ledger(ledger, dry_run=False, actor=FEEDER)
    pair = Pair(node, wallets, full, incremental, clock)
    pair.cycle()  # seeds the tracked outputs and pins the scan cursor
    node.mine(1)
    clock.now += timedelta(seconds=1)
    pair.cycle()
    return pair


def pay_from(node: LitecoinNode, wallet: str, address: str, to: str, amount: Decimal) -> None:
    """Pay `amount` from the watched `address` only, change back to it. A payment that
    also spends coins of addresses nobody watches (the wallet's change) has a fee segwatch
    cannot know without a transaction index, which balance continuity rightly reports;
    a full reader misses that report when a reorg orphans its previous checkpoint (no
    common base), an incremental one may not (its checkpoint is older): not the same
    findings, for a reason that has nothing to do with carrying."""
    coins = node.call("listunspent", 1, 9_999_999, [address], wallet=wallet)
    held = sum((Decimal(str(c["amount"])) for c in coins), Decimal(0))
    fee = Decimal("0.001")
    if held < amount + fee + Decimal("0.001"):
        return
    inputs = [{"txid": c["txid"], "vout": c["vout"]} for c in coins]
    outputs = {to: f"{amount:f}", address: f"{held - amount - fee:f}"}
    try:
        raw = node.call("createrawtransaction", inputs, outputs, wallet=wallet)
        signed = node.call("signrawtransactionwithwallet", raw, wallet=wallet)
        node.call("sendrawtransaction", signed["hex"])
    except NodeRpcError as exc:  # coins a reorg left in flux: no payment this time
        assert "conflict" in str(exc) or "missing" in str(exc) or \
            "bad-txns" in str(exc), exc


Action = tuple[Any, ...]
actions = st.lists(st.one_of(
    st.tuples(st.just("pay"), st.integers(0, 3), st.integers(0, 4), st.integers(1, 40)),
    st.tuples(st.just("mine"), st.integers(1, 2)),
    st.tuples(st.just("reorg"),),
    st.tuples(st.just("cycle"), st.integers(1, 120))), min_size=2, max_size=8)


def play(pair: Pair, script: list[Action]) -> None:
    node, wallets = pair.node, pair.wallets
    for action in script:
        if action[0] == "pay":
            _, i, j, cents = action
            to = wallets.addresses[j] if j < 4 else wallets.outside
            if to != wallets.addresses[i]:
                pay_from(node, wallets.names[i], wallets.addresses[i], to,
                         Decimal(cents) / 100)
        elif action[0] == "mine":
            node.mine(action[1])
        elif action[0] == "reorg":  # the tip is replaced; its transactions are mined again
            node.call("invalidateblock", node.call("getbestblockhash"))
            fresh = node.call("getnewaddress", "", "bech32", wallet="miner")
            node.call("generatetoaddress", 2, fresh)  # never a block invalidated before
        else:
            pair.clock.now += timedelta(seconds=action[1])
            node.mine(1)
            pair.cycle()
    node.mine(1)
    pair.clock.now += timedelta(seconds=1)
    pair.cycle()


@pytest.fixture(params=[("core-rpc", 0), ("core-rpc", 1), ("esplora", 0)],
                ids=["core-rpc", "core-rpc-1-confirmation", "esplora"])
def source(request: pytest.FixtureRequest, node: LitecoinNode
           ) -> tuple[dict[str, str], int]:
    kind, confirmations = request.param
    if kind == "core-rpc":
        return {"kind": "core-rpc", "url": node.url}, confirmations
    return {"kind": "esplora", "url": request.getfixturevalue("esplora_url")}, confirmations


@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(script=actions)
def test_incremental_reads_open_the_same_findings_as_full_reads_within_one_period(
        node: LitecoinNode, wallets: Wallets, source: tuple[dict[str, str], int],
        tmp_path_factory: pytest.TempPathFactory, script: list[Action]) -> None:
    pair = start(node, wallets, tmp_path_factory.mktemp("utxo"), *source)
    play(pair, script)
    for _ in range(7):  # a period, a sixth at a time
        pair.clock.now += timedelta(seconds=PERIOD / 6)
        node.mine(1)
        pair.cycle()
    assert any(r.wallets_read < r.wallets for r in pair.results), \
        "the incremental service never carried a wallet"
    assert pair.findings(pair.incremental) == pair.findings(pair.full), \
        f"script {script}\n{pair.explain()}"


def test_a_core_node_is_asked_for_its_utxo_set_once_per_period(
        node: LitecoinNode, wallets: Wallets, tmp_path: Path) -> None:
    """Through a Core node, steady cycles compute every balance from the tracked outputs
    (no `scantxoutset`: no wallet read) even while a payment moves one; the first cycle
    after a period reads every wallet once, and finds the same amounts."""
    pair = start(node, wallets, tmp_path, {"kind": "core-rpc", "url": node.url}, 1)
    node.send(wallets.addresses[1], "0.5")
    for _ in range(5):
        node.mine(1)
        pair.clock.now += timedelta(seconds=PERIOD / 6)
        pair.cycle()
    steady = pair.results[2:]
    assert [r.wallets_read for r in steady] == [0] * 5, [r.full_read for r in steady]

    def amounts(service: Service) -> dict[tuple[str, str], str | None]:
        return {(r.row.type, r.row.address or ""): r.row.onchain
                for r in service.discrepancies(status="open")}

    assert amounts(pair.incremental) == amounts(pair.full)
    node.mine(1)
    pair.clock.now += timedelta(seconds=PERIOD / 6 + 1)
    pair.cycle()
    assert pair.results[-1].wallets_read == 4
    assert "period" in pair.results[-1].full_read
    assert amounts(pair.incremental) == amounts(pair.full)
    assert pair.findings(pair.incremental) == pair.findings(pair.full)
