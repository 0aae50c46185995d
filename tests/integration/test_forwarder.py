"""Forwarder on a real anvil: each function's ETH movements, and the traces anvil returns.

Forwarder (chains/evm/contracts/Forwarder.sol) moves ETH only in internal call frames,
so these movements are visible in traces, never in a transaction's `value` or logs.
The trace tests also keep tests/fixtures/anvil-traces/ honest: the recorded responses
must have the shape anvil returns today. `SEGWATCH_RECORD_TRACES=1` re-records them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chains.evm.devnet import DEV_ACCOUNT, AnvilNode, call_data, deploy_contract

pytestmark = pytest.mark.anvil

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anvil-traces"
FORWARDER_AT = "0x000000000000000000000000000000000000F0F0"
"""Where the trace fixtures' Forwarder lives (its code copied there), for stable addresses."""
ALICE = "0xA1A1a1A1A1a1A1A1a1a1a1A1a1a1a1a1a1a1A1a1"
BOB = "0xb2B2b2B2b2b2B2B2B2B2b2B2B2B2B2B2b2B2b2B2"
GAS = hex(200_000)
"""Explicit gas: estimates taken before earlier transactions of a block land can be short."""


def balance(node: AnvilNode, address: str, block: str = "latest") -> int:
    return int(node.call("eth_getBalance", [address, block]), 16)


def invoke(node: AnvilNode, contract: str, signature: str, args: list[str],
           value: int = 0) -> dict[str, Any]:
    """Call `signature(args)` (address arguments) on `contract`; return the receipt."""
    data = call_data(signature, ["address"] * len(args), args)
    return node.transact(contract, data, value)


def deltas(node: AnvilNode, receipt: dict[str, Any], *addresses: str) -> list[int]:
    """Each address's balance change made by the block of `receipt` (one tx per block)."""
    block = int(receipt["blockNumber"], 16)
    return [balance(node, a, hex(block)) - balance(node, a, hex(block - 1)) for a in addresses]


def fee(receipt: dict[str, Any]) -> int:
    return int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)


@pytest.fixture
def forwarder(anvil_node: AnvilNode) -> str:
    """A freshly deployed Forwarder."""
    return deploy_contract(anvil_node, "Forwarder")


def test_forward_sends_the_attached_value_on(anvil_node: AnvilNode, forwarder: str) -> None:
    """forward(to) passes msg.value to `to`; the sender pays value plus fee, Forwarder keeps 0."""
    receipt = invoke(anvil_node, forwarder, "forward(address)", [ALICE], value=1_000)
    assert deltas(anvil_node, receipt, ALICE, forwarder, DEV_ACCOUNT) == [
        1_000, 0, -1_000 - fee(receipt)]


def test_split_sends_half_to_each_with_the_odd_wei_to_the_second(
        anvil_node: AnvilNode, forwarder: str) -> None:
    """split(a, b) sends value // 2 to a and the rest to b, keeping nothing."""
    receipt = invoke(anvil_node, forwarder, "split(address,address)", [ALICE, BOB], value=1_001)
    assert deltas(anvil_node, receipt, ALICE, BOB, forwarder) == [500, 501, 0]


def test_sweep_sends_the_whole_balance(anvil_node: AnvilNode, forwarder: str) -> None:
    """sweep(to) sends everything Forwarder holds (received via receive()) to `to`."""
    funding = anvil_node.transact(forwarder, value=777)
    assert deltas(anvil_node, funding, forwarder) == [777]
    receipt = invoke(anvil_node, forwarder, "sweep(address)", [BOB])
    assert deltas(anvil_node, receipt, BOB, forwarder) == [777, -777]


def test_forward_then_revert_moves_nothing_to_the_recipient(
        anvil_node: AnvilNode, forwarder: str) -> None:
    """forwardThenRevert(to) succeeds, `to` gets nothing, and the value stays in Forwarder."""
    receipt = invoke(anvil_node, forwarder, "forwardThenRevert(address)", [BOB], value=500)
    assert receipt["status"] == "0x1" and len(receipt["logs"]) == 1  # SendUndone
    assert deltas(anvil_node, receipt, BOB, forwarder) == [0, 500]


@pytest.fixture
def trace_block(anvil_node: AnvilNode) -> Iterator[int]:
    """One block holding every Forwarder case plus a failed top-level call; its number.

    Order (all from the dev account, Forwarder at FORWARDER_AT): 0 forward(ALICE) 1000;
    1 split(ALICE, BOB) 1001; 2 forwardThenRevert(BOB) 500; 3 sweep(ALICE) (the 500 kept
    by tx 2); 4 sendThenRevert(BOB) 7 called directly, so the transaction itself fails.
    """
    code = anvil_node.call("eth_getCode", [deploy_contract(anvil_node, "Forwarder"), "latest"])
    anvil_node.call("anvil_setCode", [FORWARDER_AT, code])
    calls = [("forward(address)", [ALICE], 1_000), ("split(address,address)", [ALICE, BOB], 1_001),
             ("forwardThenRevert(address)", [BOB], 500), ("sweep(address)", [ALICE], 0),
             ("sendThenRevert(address)", [BOB], 7)]
    anvil_node.call("evm_setAutomine", [False])
    try:
        hashes = [anvil_node.call("eth_sendTransaction", [{
            "from": DEV_ACCOUNT, "to": FORWARDER_AT, "gas": GAS, "value": hex(value),
            "data": "0x" + call_data(sig, ["address"] * len(args), args).hex()}])
            for sig, args, value in calls]
        anvil_node.mine()
    finally:
        anvil_node.call("evm_setAutomine", [True])
    receipts = [anvil_node.receipt(h) for h in hashes]
    assert [r["status"] for r in receipts] == ["0x1"] * 4 + ["0x0"]
    assert len({r["blockNumber"] for r in receipts}) == 1
    yield int(receipts[0]["blockNumber"], 16)


def raw_rpc(node: AnvilNode, method: str, params: list[Any]) -> dict[str, Any]:
    """The whole JSON-RPC response body of one call, as the node sent it."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    reply: dict[str, Any] = httpx.post(node.url, json=body, timeout=10).json()
    return reply


def shape(value: Any) -> Any:
    """`value` with every leaf replaced by its type name: the structure a decoder relies on."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


@pytest.fixture
def traces(anvil_node: AnvilNode, trace_block: int) -> dict[str, dict[str, Any]]:
    """The whole responses of both trace methods for the trace block, by fixture name."""
    return {"debug_traceBlockByNumber_callTracer.json": raw_rpc(
                anvil_node, "debug_traceBlockByNumber", [hex(trace_block), {"tracer": "callTracer"}]),
            "trace_block.json": raw_rpc(anvil_node, "trace_block", [hex(trace_block)])}


def test_recorded_fixtures_have_the_shape_anvil_returns(traces: dict[str, dict[str, Any]]) -> None:
    """Both trace methods answer, with the structure recorded in tests/fixtures/anvil-traces/
    (re-recorded from one block when SEGWATCH_RECORD_TRACES is set)."""
    for name, reply in traces.items():
        assert "error" not in reply, reply
        path = FIXTURES / name
        if os.environ.get("SEGWATCH_RECORD_TRACES"):
            path.write_text(json.dumps(reply, indent=2) + "\n", encoding="utf-8")
        assert shape(reply) == shape(json.loads(path.read_text(encoding="utf-8"))), name


def test_call_tracer_shows_each_internal_transfer(traces: dict[str, dict[str, Any]]) -> None:
    """debug_traceBlockByNumber with callTracer gives one nested call tree per transaction,
    with the value of every internal call and `error` on the reverted frames only."""
    reply = traces["debug_traceBlockByNumber_callTracer.json"]
    trees = [item["result"] for item in reply["result"]]
    assert [t["value"] for t in trees] == ["0x3e8", "0x3e9", "0x1f4", "0x0", "0x7"]
    assert [(c["to"], c["value"]) for c in trees[1]["calls"]] == [
        (ALICE.lower(), "0x1f4"), (BOB.lower(), "0x1f5")]
    undone = trees[2]["calls"][0]
    assert undone["error"] == "execution reverted" and undone["value"] == "0x1f4"
    assert undone["calls"][0]["value"] == "0x1f4" and "error" not in undone["calls"][0]
    assert "error" not in trees[2] and trees[4]["error"] == "execution reverted"
    assert trees[3]["calls"][0]["value"] == "0x1f4"


def test_parity_trace_block_lists_each_frame_flat(traces: dict[str, dict[str, Any]]) -> None:
    """trace_block gives every call frame flat with its traceAddress; only the frame that
    reverted carries `error`, not the frames nested inside it."""
    result = traces["trace_block.json"]["result"]
    frames = [(t["transactionPosition"], t["traceAddress"], t["action"]["value"], t.get("error"))
              for t in result]
    assert frames == [
        (0, [], "0x3e8", None), (0, [0], "0x3e8", None),
        (1, [], "0x3e9", None), (1, [0], "0x1f4", None), (1, [1], "0x1f5", None),
        (2, [], "0x1f4", None), (2, [0], "0x1f4", "Reverted"), (2, [0, 0], "0x1f4", None),
        (3, [], "0x0", None), (3, [0], "0x1f4", None),
        (4, [], "0x7", "Reverted"), (4, [0], "0x7", None)]
    assert len({t["blockNumber"] for t in result}) == 1
    assert isinstance(result[0]["blockNumber"], int)  # a JSON number here, not hex
