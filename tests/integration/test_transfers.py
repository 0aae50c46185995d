"""Transfer history on a real anvil, through the service: authorization, commingling,
internal deposits, balance continuity, downtime catch-up and reorgs.

Runs on SQLite and PostgreSQL (`store_url`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chains.evm.devnet import (
    AnvilNode,
    call_data,
    deploy_contract,
    deploy_test_token,
    impersonate,
    install_multicall,
    mint,
    set_balances,
)
from daemon.bootstrap import build_service
from daemon.errors import InputError
from daemon.inputs.config import Settings
from daemon.service import Service
from daemon.store.db import make_engine, upgrade
from tests.principals import FEEDER

CHECKERS = [{"name": "carol", "roles": ["checker"]}]
"""The approver of the tests' withdrawals (SPEC §11: a configured checker)."""

pytestmark = pytest.mark.anvil

ETH = 10**18
ALICE = "0x1000000000000000000000000000000000000001"
ALICE2 = "0x1000000000000000000000000000000000000011"
BOB = "0x1000000000000000000000000000000000000002"
HOUSE = "0x1000000000000000000000000000000000000009"
OUTSIDE = "0x2000000000000000000000000000000000000001"
PAYEE = "0x2000000000000000000000000000000000000002"


@dataclass
class World:
    node: AnvilNode
    service: Service
    token: str
    forwarder: str
    tmp: Path

    def cycle(self) -> Any:
        result = self.service.run_cycle(self.service.settings.chains[0])
        assert result.error is None, result.error
        assert result.scan_error is None, result.scan_error
        return result

    def open_types(self) -> list[tuple[str, str, str | None]]:
        return sorted((r.row.type, r.row.address or "", r.row.tx_hash)
                      for r in self.service.discrepancies(status="open"))

    def send(self, sender: str, to: str, wei: int) -> str:
        return str(self.node.transact(to, value=wei, sender=sender)["transactionHash"])

    def send_token(self, sender: str, to: str, amount: int) -> str:
        data = call_data("transfer(address,uint256)", ["address", "uint256"], [to, amount])
        return str(self.node.transact(self.token, data, sender=sender)["transactionHash"])

    def forward(self, to: str, wei: int) -> str:
        data = call_data("forward(address)", ["address"], [to])
        return str(self.node.transact(self.forwarder, data, value=wei)["transactionHash"])


@pytest.fixture
def world(anvil_node: AnvilNode, store_url: str, tmp_path: Path) -> World:
    token = deploy_test_token(anvil_node, "USD Coin", "USDC", 6)
    forwarder = deploy_contract(anvil_node, "Forwarder")
    install_multicall(anvil_node)
    for wallet in (ALICE, ALICE2, BOB, HOUSE):
        impersonate(anvil_node, wallet)
    set_balances(anvil_node, {ALICE: 10 * ETH, ALICE2: 0, BOB: 5 * ETH, HOUSE: 100 * ETH})
    mint(anvil_node, token, ALICE, 1_000 * 10**6)
    settings = Settings(store={"url": store_url}, users=CHECKERS, chains=[{  # type: ignore[arg-type, list-item]
        "name": "devnet", "family": "evm", "chain_id": 31337, "confirmations": 0,
        "sources": [{"kind": "jsonrpc", "url": anvil_node.url}],
        "tokens": [{"symbol": "USDC", "contract": token, "decimals": 6}]}])
    upgrade(make_engine(store_url))
    service = build_service(settings)
    ledger = tmp_path / "ledger.csv"
    with ledger.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["chain", "address", "structure", "owner", "asset", "amount"])
        out.writerow(["devnet", ALICE, "segregated", "alice", "ETH", "10"])
        out.writerow(["devnet", ALICE, "segregated", "alice", "USDC", "1000"])
        out.writerow(["devnet", ALICE2, "segregated", "alice", "ETH", "0"])
        out.writerow(["devnet", BOB, "segregated", "bob", "ETH", "5"])
        out.writerow(["devnet", HOUSE, "house", "FIRM", "ETH", "100"])
    # the books are cut at the newest block; the next block comes a second later (anvil
    # may give blocks the same second), so what the tests do is in transit for them
    head = int(anvil_node.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    anvil_node.call("evm_setNextBlockTimestamp", [head + 1])
    service.import_ledger(ledger, dry_run=False, actor=FEEDER,
                          as_of=datetime.fromtimestamp(head, UTC))
    w = World(anvil_node, service, token, forwarder, tmp_path)
    w.cycle()  # the first cycle pins the scan cursor at its checkpoint
    return w


def approve(world: World, id_: str, to: str, amount: str, asset: str = "ETH",
            tx_hash: str = "") -> None:
    path = world.tmp / f"w-{id_}.csv"
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    path.write_text("id,chain,from_address,to_address,asset,amount,approved_by,approved_at,"
                    f"tx_hash\n{id_},devnet,{ALICE},{to},{asset},{amount},carol,{at},{tx_hash}\n")
    world.service.import_withdrawals(path, dry_run=False, actor=FEEDER)


def test_unapproved_outflow_and_commingling_are_found(world: World) -> None:
    """An unapproved ETH payment out, a USDC move to the house wallet and a move to another
    owner's wallet are found; an approved payment and a same-owner move are not."""
    approve(world, "w1", PAYEE, "1")
    unauthorized = world.send(ALICE, OUTSIDE, ETH // 2)
    world.send(ALICE, PAYEE, ETH)
    commingled = world.send_token(ALICE, HOUSE, 5 * 10**6)
    to_bob = world.send(ALICE, BOB, ETH // 10)
    world.send(ALICE, ALICE2, ETH // 10)
    world.cycle()
    found = world.open_types()
    assert ("unauthorized_outflow", ALICE, unauthorized) in found
    assert ("commingling", ALICE, commingled) in found
    assert ("commingling", ALICE, to_bob) in found
    transfer_findings = [f for f in found if f[0] in ("unauthorized_outflow", "commingling")]
    assert len(transfer_findings) == 3
    assert not [f for f in found if f[0] == "unexplained_balance_change"]


def test_internal_deposit_through_a_contract_keeps_continuity(world: World) -> None:
    """ETH paid into a client wallet by a contract call is seen as an internal transfer,
    so balance continuity holds, and it is a deposit in transit for the books (SPEC §8):
    nothing is raised."""
    world.forward(ALICE, ETH)
    world.cycle()
    assert world.open_types() == []
    (item,) = world.service.status()[0].items
    assert (item.side, item.movement.delta) == ("unbooked", ETH)


def test_balance_change_without_transfer_is_unexplained(world: World) -> None:
    """A balance that changes with no transfer on chain (a state edit) is unexplained, at
    the next cycle that reads the wallet: here a full read (an incremental cycle reads it
    when the sweep reaches it: tests/integration/test_incremental.py)."""
    set_balances(world.node, {BOB: 7 * ETH})
    chain = world.service.settings.chains[0]
    result = world.service.run_cycle(chain.model_copy(update={"full_recheck_seconds": 0}))
    assert result.error is None and result.scan_error is None
    (record,) = [r for r in world.service.discrepancies(status="open")
                 if r.row.type == "unexplained_balance_change"]
    assert record.row.address == BOB and record.row.difference == 2 * ETH


def test_downtime_catch_up_misses_nothing(world: World) -> None:
    """After 500 blocks with activity the next cycle finds every unapproved outflow."""
    sent = []
    for i in range(10):
        world.node.mine(49)
        sent.append(world.send(ALICE, OUTSIDE, ETH // 100 + i))
    world.cycle()
    outflows = {f[2] for f in world.open_types() if f[0] == "unauthorized_outflow"}
    assert outflows == set(sent)
    assert not [f for f in world.open_types() if f[0] == "unexplained_balance_change"]


def test_reorg_that_drops_an_outflow_voids_its_finding(world: World) -> None:
    """An unauthorized outflow found at the tip and then reorged away is voided, audited."""
    tx = world.send(ALICE, OUTSIDE, ETH // 4)
    world.cycle()
    assert ("unauthorized_outflow", ALICE, tx) in world.open_types()
    world.node.call("anvil_reorg", [1, []])
    world.cycle()
    assert ("unauthorized_outflow", ALICE, tx) not in world.open_types()
    (voided,) = world.service.discrepancies(status="voided")
    assert voided.row.tx_hash == tx
    found = world.service.store.discrepancy(voided.row.id or 0)
    assert found is not None and [e.action for e in found[1]] == ["detected", "voided"]


def test_reorg_that_adds_a_transfer_is_detected(world: World) -> None:
    """A new branch carrying an outflow the old one did not have raises it."""
    world.node.mine(2)
    world.cycle()
    tx = {"from": ALICE, "to": OUTSIDE, "value": hex(ETH // 3)}
    world.node.call("anvil_reorg", [2, [[tx, 0]]])
    world.cycle()
    outflows = [f for f in world.open_types() if f[0] == "unauthorized_outflow"]
    assert len(outflows) == 1


def test_transfer_findings_count_in_the_cycle_result(world: World) -> None:
    """A cycle whose only new condition is an unauthorized outflow reports it (run --once
    then exits 1), together with the balance shortfall it causes."""
    tx = world.send(ALICE, OUTSIDE, ETH // 5)
    result = world.cycle()
    assert ("unauthorized_outflow", tx) in {(f.type, f.tx_hash) for f in result.findings}


def test_a_tx_hash_alone_authorizes_nothing(world: World) -> None:
    """The attack of issue 12: an instruction for 1 wei to a payee, naming the hash of a
    9 ETH transfer to an attacker and approved a year after its block, does not
    authorize it; neither does an exact instruction approved by someone who is not a
    configured checker. The transfer is an `unauthorized_outflow`."""
    stolen = world.send(ALICE, OUTSIDE, 9 * ETH)  # of her 10 ETH, leaving gas
    later = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    now = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    path = world.tmp / "forged.csv"
    path.write_text("id,chain,from_address,to_address,asset,amount,approved_by,approved_at,"
                    f"tx_hash\nw-forged,devnet,{ALICE},{PAYEE},ETH,0.000000000000000001,"
                    f"carol,{later},{stolen}\n")
    world.service.import_withdrawals(path, dry_run=False, actor=FEEDER)
    with pytest.raises(InputError) as refused:  # an approver who is not a checker
        path.write_text("id,chain,from_address,to_address,asset,amount,approved_by,"
                        f"approved_at,tx_hash\nw-self,devnet,{ALICE},{OUTSIDE},ETH,9,mallory,"
                        f"{now},{stolen}\n")
        world.service.import_withdrawals(path, dry_run=False, actor=FEEDER)
    assert "approved_by 'mallory' is not a user with the checker role" in \
        "\n".join(refused.value.lines)
    world.cycle()
    assert ("unauthorized_outflow", ALICE, stolen) in world.open_types()


def test_a_watched_fee_recipient_is_credited_its_priority_fees(world: World) -> None:
    """A client wallet set as the block's fee recipient (institutional staking custody)
    is credited each transaction's gas times its price above the base fee, with no
    transaction of its own: the scan records it as a `reward` (also in a spot check),
    balance continuity holds, and the credit equals the balance change exactly."""
    from chains.evm.devnet import DEV_ACCOUNT

    before = int(world.node.call("eth_getBalance", [BOB, "latest"]), 16)
    coinbase = world.node.call("eth_coinbase")
    world.node.call("anvil_setCoinbase", [BOB])
    try:
        tx_hash = world.node.call("eth_sendTransaction", [{
            "from": DEV_ACCOUNT, "to": OUTSIDE, "value": hex(1),
            "maxPriorityFeePerGas": hex(2 * 10**9), "maxFeePerGas": hex(100 * 10**9)}])
        mined = world.node.receipt(tx_hash)
    finally:
        world.node.call("anvil_setCoinbase", [coinbase])
    block = world.node.call("eth_getBlockByNumber", [mined["blockNumber"], False])
    tip = int(mined["effectiveGasPrice"], 16) - int(block["baseFeePerGas"], 16)
    credit = int(mined["gasUsed"], 16) * tip
    assert credit > 0
    after = int(world.node.call("eth_getBalance", [BOB, mined["blockNumber"]]), 16)
    assert after - before == credit  # what the chain did, independently of segwatch
    world.cycle()
    assert not [t for t in world.open_types() if t[0] == "unexplained_balance_change"]
    height = int(mined["blockNumber"], 16)
    report = world.service.check(world.service.settings.chains[0], BOB, blocks=(height, height))
    (reward,) = [t for t in report.scan.transfers if t.kind == "reward"]  # type: ignore[union-attr]
    assert (reward.recipient, reward.sender, reward.amount) == (BOB, None, credit)


def test_eip_7702_delegated_wallet_moving_value_it_did_not_sign_is_found(world: World) -> None:
    """EIP-7702: alice's EOA delegates to code (its code is the designator 0xef0100 followed
    by the Forwarder's address). A transaction another account signs calls alice's EOA,
    whose delegated code sweeps her ETH to an outsider: no transaction of alice's, no
    value in the transaction, no log. The trace shows the internal transfer from alice,
    so it is an unauthorized outflow and continuity holds."""
    world.node.call("anvil_setCode", [ALICE, "0xef0100" + world.forwarder[2:].lower()])
    code = world.node.call("eth_getCode", [ALICE, "latest"])
    assert code.lower() == "0xef0100" + world.forwarder[2:].lower()
    data = call_data("sweep(address)", ["address"], [OUTSIDE])
    swept = str(world.node.transact(ALICE, data)["transactionHash"])  # the dev account signs
    assert int(world.node.call("eth_getBalance", [ALICE, "latest"]), 16) == 0
    world.cycle()
    found = world.open_types()
    assert ("unauthorized_outflow", ALICE, swept) in found
    assert not [f for f in found if f[0] == "unexplained_balance_change"]
