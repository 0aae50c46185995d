"""A recorded OP-stack transaction replayed through a JSON-RPC replay node
(tests/replaynode.py), through the whole service: the chain (chain id 10, so the
`op-stack` fee model by default) watches the transaction's sender.

The block is built around the recorded OP Mainnet receipt of
tests/fixtures/op-stack/receipt_op-mainnet-inferred_ecotone_weth-transfer.json (its real
block hash, number, transaction hash, sender and fields; no full recorded OP-stack block
with its receipts is public, tests/fixtures/README.md): the parent block and timestamps
are made up, and the sender's ETH drops by exactly what the chain charged,
`gasUsed x effectiveGasPrice + l1Fee`, and its WETH by the recorded Transfer. The WETH
payment is an approved withdrawal made after the books' cut-off, so it and its fee are
reconciling items. Counting the L1 fee, continuity holds and no finding is raised; with
the `l1Fee` dropped from the receipt (what segwatch used to count), the gap is found.
Runs on SQLite and PostgreSQL (`store_url`).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.bootstrap import build_service
from daemon.inputs.config import Settings
from daemon.service import Service
from daemon.store.db import make_engine, upgrade
from tests.principals import FEEDER
from tests.replaynode import ReplayNode

CHECKERS = [{"name": "carol", "roles": ["checker"]}]

RECEIPT = Path(__file__).parent.parent / "fixtures" / "op-stack" / \
    "receipt_op-mainnet-inferred_ecotone_weth-transfer.json"
BEFORE = 10**18
WETH = "0x4200000000000000000000000000000000000006"
WETH_BEFORE = 10**17
PAID = 7_994_510_000_000_000
"""The recorded WETH Transfer's amount (its log's data)."""
PAYEE = "0x77E7c5CBeAaD915cf5462064B02984E16A902e67"
STAMP = 1_718_000_000  # June 2024 (Ecotone), made up: the receipt does not carry it


def blocks_around(receipt: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The made-up parent block and the block of the recorded transaction."""
    height = int(receipt["blockNumber"], 16)
    parent = {"number": hex(height - 1), "hash": "0x" + "11" * 32,
              "parentHash": "0x" + "10" * 32, "timestamp": hex(STAMP - 2),
              "logsBloom": "0x" + "00" * 256, "transactions": [], "baseFeePerGas": "0x1",
              "miner": "0x4200000000000000000000000000000000000011"}
    tx = {"hash": receipt["transactionHash"], "transactionIndex": receipt["transactionIndex"],
          "from": receipt["from"], "to": receipt["to"], "value": "0x0", "nonce": "0x0",
          "gasPrice": receipt["effectiveGasPrice"], "type": receipt["type"],
          "blockHash": receipt["blockHash"], "blockNumber": receipt["blockNumber"]}
    block = {**parent, "number": receipt["blockNumber"], "hash": receipt["blockHash"],
             "parentHash": parent["hash"], "timestamp": hex(STAMP),
             "logsBloom": receipt["logsBloom"], "transactions": [tx]}
    return parent, block


@pytest.fixture
def recorded() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(RECEIPT.read_text())
    return loaded


def replay(recorded: dict[str, Any], store_url: str, tmp_path: Path,
           served: dict[str, Any], *, weth: bool = True) -> set[tuple[str, str | None]]:
    """Two cycles through a replay node serving `served` as the transaction's receipt:
    the parent block (the books are cut there), then the transaction's block. Without
    `weth`, WETH is neither configured nor its payment approved. Returns the open
    findings' (type, asset)."""
    parent, block = blocks_around(recorded)
    height, sender = int(block["number"], 16), recorded["from"].lower()
    fee = int(recorded["gasUsed"], 16) * int(recorded["effectiveGasPrice"], 16) + \
        int(recorded["l1Fee"], 16)
    assert int(recorded["logs"][0]["data"], 16) == PAID
    node = ReplayNode(10, {height - 1: parent}, {recorded["transactionHash"]: served},
                      {(sender, height - 1): BEFORE, (sender, height): BEFORE - fee},
                      {(WETH.lower(), sender, height - 1): WETH_BEFORE,
                       (WETH.lower(), sender, height): WETH_BEFORE - PAID}).start()
    try:
        settings = Settings(store={"url": store_url}, users=CHECKERS, chains=[{  # type: ignore[arg-type, list-item]
            "name": "optimism", "family": "evm", "chain_id": 10, "confirmations": 0,
            "max_head_age_seconds": 10**10, "ledger_max_age_seconds": 10**10,
            "tokens": [{"symbol": "WETH", "contract": WETH, "decimals": 18}] if weth else [],
            "sources": [{"kind": "jsonrpc", "url": node.url}]}])
        upgrade(make_engine(store_url))
        service = build_service(settings)
        assert service.settings.chains[0].fees == "op-stack"
        ledger = tmp_path / "ledger.csv"
        ledger.write_text("chain,address,structure,owner,asset,amount\n"
                          f"optimism,{recorded['from']},segregated,alice,ETH,1\n"
                          + (f"optimism,{recorded['from']},segregated,alice,WETH,0.1\n"
                             if weth else ""))
        service.import_ledger(ledger, dry_run=False, actor=FEEDER,
                              as_of=datetime.fromtimestamp(STAMP - 2, UTC))
        if not weth:
            return cycles(service, node, block, height)
        approved = datetime.fromtimestamp(STAMP - 60, UTC).isoformat()
        withdrawals = tmp_path / "withdrawals.csv"
        withdrawals.write_text(
            "id,chain,from_address,to_address,asset,amount,approved_by,approved_at,tx_hash\n"
            f"w1,optimism,{recorded['from']},{PAYEE},WETH,0.00799451,carol,{approved},"
            f"{recorded['transactionHash']}\n")
        service.import_withdrawals(withdrawals, dry_run=False, actor=FEEDER)
        return cycles(service, node, block, height)
    finally:
        node.stop()


def cycles(service: Service, node: ReplayNode, block: dict[str, Any],
           height: int) -> set[tuple[str, str | None]]:
    chain = service.settings.chains[0]
    first = service.run_cycle(chain)
    assert first.error is None and first.block is not None
    assert first.block.height == height - 1
    node.blocks[height] = block
    second = service.run_cycle(chain)
    assert second.error is None and second.scan_error is None, second
    assert second.scanned_to == height
    return {(r.row.type, r.row.asset) for r in service.discrepancies(status="open")}


def test_the_recorded_op_stack_fee_keeps_continuity(recorded: dict[str, Any], store_url: str,
                                                    tmp_path: Path) -> None:
    """The sender paid gas and the L1 fee: the fee is a reconciling item after the books'
    cut-off, continuity holds, nothing is raised."""
    assert replay(recorded, store_url, tmp_path, recorded) == set()


def test_the_same_receipt_without_its_l1_fee_leaves_a_gap_that_is_found(
        recorded: dict[str, Any], store_url: str, tmp_path: Path) -> None:
    """Dropping the receipt's l1Fee (70,284,681,252 wei unaccounted for) is what an
    Ethereum-only fee model amounted to: the balance change is not explained."""
    stripped = copy.deepcopy(recorded)
    del stripped["l1Fee"]
    assert ("unexplained_balance_change", "ETH") in \
        replay(recorded, store_url, tmp_path, stripped)


def test_an_unconfigured_tokens_outflow_is_stored_on_every_store(
        recorded: dict[str, Any], store_url: str, tmp_path: Path) -> None:
    """With WETH not configured and its payment not approved, the payment is an
    unauthorized outflow named by the token's contract (42 characters: PostgreSQL used to
    refuse it, failing the whole cycle), and the fee of that unapproved transaction is
    no reconciling item, so the ETH balance is short by it."""
    assert replay(recorded, store_url, tmp_path, recorded, weth=False) == {
        ("unauthorized_outflow", WETH), ("balance_shortfall", "ETH")}
