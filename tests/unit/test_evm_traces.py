"""Internal transfers from Geth callTracer and Parity trace_block traces.

Four recorded mainnet blocks in both formats (tests/fixtures/README.md), with
ethereum-etl's expected traces CSVs, plus generated call trees rendered in both formats.
"""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.errors import DecodeError
from chains.evm.address import canonical_evm_address
from chains.evm.traces import internal_transfers_geth, internal_transfers_parity
from chains.types import ChainHead, TransferObservation
from tests.unit.test_evm_decode import _corrupt

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eth-mainnet-traces"
NAMES = ("subtraces", "create", "error", "suicide")
SOURCE = "fixture"


def _response(prefix: str, name: str) -> Any:
    [path] = FIXTURES.glob(f"{prefix}_block_with_{name}_web3_response*.json")
    return json.loads(path.read_text())["result"]


def _csv(prefix: str, name: str) -> list[dict[str, str]]:
    with (FIXTURES / f"{prefix}_block_with_{name}_expected_traces.csv").open() as f:
        return list(csv.DictReader(f))


def head_of(name: str) -> ChainHead:
    first = _response("parity", name)[0]
    return ChainHead(first["blockNumber"], first["blockHash"])


def tx_hashes(name: str) -> list[str]:
    """The block's transactions in order, from the Parity traces' transactionPosition."""
    positions = {t["transactionPosition"]: t["transactionHash"]
                 for t in _response("parity", name) if t["transactionHash"]}
    return [positions[i] for i in range(len(positions))]


def etl_moving_rows(prefix: str, name: str) -> set[tuple[str, str, str, str, int]]:
    """ethereum-etl's rows that are value-moving internal frames outside failed frames,
    as (tx hash, trace path, from, to, value)."""
    rows, hashes = _csv(prefix, name), tx_hashes(name)
    failed = {(r["transaction_index"], r["trace_address"]) for r in rows if r["error"]}
    out: set[tuple[str, str, str, str, int]] = set()
    for r in rows:
        path = r["trace_address"]
        parts = path.split(",") if path else []
        ancestors = {",".join(parts[:depth]) for depth in range(len(parts) + 1)}
        moving = (r["trace_type"] in ("create", "suicide")
                  or (r["trace_type"] == "call" and r["call_type"] == "call"))
        if (not parts or not moving or not r["value"] or int(r["value"]) == 0
                or any((r["transaction_index"], a) in failed for a in ancestors)):
            continue
        out.add((hashes[int(r["transaction_index"])], ".".join(parts),
                 canonical_evm_address(r["from_address"]), canonical_evm_address(r["to_address"]),
                 int(r["value"])))
    return out


def as_rows(transfers: list[TransferObservation]) -> set[tuple[str, str, str, str, int]]:
    return {(t.tx_hash or "", t.trace_path or "", t.sender or "", t.recipient, t.amount)
            for t in transfers}


# --- recorded mainnet traces ----------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_parity_internal_transfers_match_ethereum_etl(name: str) -> None:
    """Parity internal transfers are exactly ethereum-etl's value-moving, non-failed sub-frames."""
    ours = internal_transfers_parity(_response("parity", name), head_of(name), SOURCE)
    assert as_rows(ours) == etl_moving_rows("parity", name)
    assert all(t.kind == "internal" and t.block == head_of(name) for t in ours)


def test_parity_self_destruct_moves_the_balance_to_the_refund_address() -> None:
    """Block 0xf7105's self-destruct is the only internal transfer: 0.05 ETH at path "0"."""
    [t] = internal_transfers_parity(_response("parity", "suicide"), head_of("suicide"), SOURCE)
    assert (t.trace_path, t.amount, t.tx_hash) == ("0", 5 * 10**16, tx_hashes("suicide")[0])
    assert t.sender == canonical_evm_address("0x474faa5018639791952fae334e2911700ac7fe9b")
    assert t.recipient == canonical_evm_address("0x83973747eec131bf9a08ac64fb1a518e891bdf4b")


@pytest.mark.parametrize("name", ("subtraces", "create", "error"))
def test_geth_internal_transfers_match_ethereum_etl_and_parity(name: str) -> None:
    """Geth's decoder finds ethereum-etl's value-moving sub-frames and agrees with Parity's."""
    geth = internal_transfers_geth(_response("geth", name), head_of(name), SOURCE,
                                   tx_hashes(name))
    parity = internal_transfers_parity(_response("parity", name), head_of(name), SOURCE)
    assert as_rows(geth) == etl_moving_rows("geth", name)
    assert geth == parity


def test_callcode_moves_nothing_in_either_format() -> None:
    """Block 1,000,000's CALLCODE frame (Parity: from == to) is not reported by either decoder."""
    callcode = [t for t in _response("parity", "subtraces")
                if t["action"].get("callType") == "callcode"]
    assert [(t["action"]["from"], int(t["action"]["value"], 16) > 0) for t in callcode] == [
        (callcode[0]["action"]["to"], True)]
    assert internal_transfers_geth(_response("geth", "subtraces"), head_of("subtraces"), SOURCE,
                                   tx_hashes("subtraces")) == []


def test_geth_self_destruct_without_value_is_refused() -> None:
    """An old callTracer SELFDESTRUCT frame without `value` is an error, never a zero."""
    assert [r["value"] for r in _csv("geth", "suicide") if r["trace_type"] == "suicide"] == [""]
    with pytest.raises(DecodeError, match=r"calls\[0\]\.value: missing"):
        internal_transfers_geth(_response("geth", "suicide"), head_of("suicide"), SOURCE,
                                tx_hashes("suicide"))


def test_geth_uses_tx_hash_of_each_item_when_given() -> None:
    """Items carrying `txHash` (newer geth) need no transaction list."""
    raw = _response("geth", "subtraces")
    for item, tx_hash in zip(raw, tx_hashes("subtraces"), strict=True):
        item["txHash"] = tx_hash
        item["result"]["calls"] = [{"type": "CALL", "from": item["result"]["to"],
                                    "to": item["result"]["from"], "value": "0x7"}]
    ours = internal_transfers_geth(raw, head_of("subtraces"), SOURCE)
    assert [(t.tx_hash, t.trace_path, t.amount) for t in ours] == [
        (h, "0", 7) for h in tx_hashes("subtraces")]


@pytest.mark.parametrize(("hashes", "match"), [
    (None, "no transaction list"),
    (["0x" + "aa" * 32], "2 traces for 1 transactions"),
])
def test_geth_traces_need_their_transactions(hashes: list[str] | None, match: str) -> None:
    """Geth traces without `txHash` cannot be attributed without the block's transaction list."""
    with pytest.raises(DecodeError, match=match):
        internal_transfers_geth(_response("geth", "subtraces"), head_of("subtraces"), SOURCE,
                                hashes)


def test_geth_trace_of_another_transaction_is_refused() -> None:
    """A `txHash` that differs from the transaction at its position is a DecodeError."""
    raw = _response("geth", "subtraces")
    raw[0]["txHash"] = "0x" + "cc" * 32
    with pytest.raises(DecodeError, match="trace of"):
        internal_transfers_geth(raw, head_of("subtraces"), SOURCE, tx_hashes("subtraces"))


def test_parity_trace_of_another_block_is_refused() -> None:
    """A trace whose block hash is not the expected block's is a DecodeError."""
    other = ChainHead(head_of("subtraces").height, head_of("create").hash)
    with pytest.raises(DecodeError, match="trace of another block"):
        internal_transfers_parity(_response("parity", "subtraces"), other, SOURCE)


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda raw: raw[1]["action"].update(value="100"), r"traces\[1\]\.action\.value"),
    (lambda raw: raw[2]["action"].pop("value"), r"traces\[2\]\.action\.value: missing"),
    (lambda raw: raw[0]["action"].pop("callType"), r"traces\[0\]\.action\.callType"),
    (lambda raw: raw[1].update(traceAddress=["0"]), "traceAddress"),
    (lambda raw: raw[1].pop("blockHash"), "blockHash: missing"),
    (lambda raw: raw.__setitem__(1, "0x12"), "expected a JSON object"),
])
def test_malformed_parity_traces_are_refused(mutate: Any, match: str) -> None:
    """A malformed Parity trace raises one DecodeError naming the field."""
    raw = _response("parity", "subtraces")
    mutate(raw)
    with pytest.raises(DecodeError, match=match):
        internal_transfers_parity(raw, head_of("subtraces"), SOURCE)


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda raw: raw[0]["result"]["calls"][0].update(type="CALL", value="0xzz"), "value"),
    (lambda raw: raw[0]["result"].update(calls={"type": "CALL"}), "calls"),
    (lambda raw: raw[0].update(result=None), "expected a JSON object"),
    (lambda raw: raw.__setitem__(0, {"error": "execution timeout"}), "tracing failed"),
    (lambda raw: raw[0]["result"]["calls"][0].pop("type"), "type: missing"),
])
def test_malformed_geth_traces_are_refused(mutate: Any, match: str) -> None:
    """A malformed Geth trace raises one DecodeError naming the field."""
    raw = _response("geth", "subtraces")
    mutate(raw)
    with pytest.raises(DecodeError, match=match):
        internal_transfers_geth(raw, head_of("subtraces"), SOURCE, tx_hashes("subtraces"))


# --- generated call trees, rendered in both formats -----------------------------------
TYPES = ("CALL", "DELEGATECALL", "STATICCALL", "CALLCODE", "CREATE", "CREATE2", "SELFDESTRUCT")
ADDRESSES = [f"0x{i:040x}" for i in range(1, 6)]
HEAD = ChainHead(7, "0x" + "77" * 32)
TX = "0x" + "99" * 32


def frames() -> st.SearchStrategy[dict[str, Any]]:
    """Random call trees: each frame a type, sender, recipient, value, error flag, children."""
    leaf = st.fixed_dictionaries({
        "type": st.sampled_from(TYPES), "from": st.sampled_from(ADDRESSES),
        "to": st.sampled_from(ADDRESSES), "value": st.integers(0, 3),
        "error": st.booleans(), "calls": st.just([])})
    return st.recursive(leaf, lambda kids: st.builds(
        lambda f, calls: {**f, "calls": [] if f["type"] == "SELFDESTRUCT" else calls},
        leaf, st.lists(kids, max_size=3)), max_leaves=12)


def to_geth(frame: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": frame["type"], "from": frame["from"], "to": frame["to"],
                           "gas": "0x0", "input": "0x"}
    if frame["type"] not in ("DELEGATECALL", "STATICCALL"):
        out["value"] = hex(frame["value"])
    if frame["error"]:
        out["error"] = "execution reverted"
    if frame["calls"]:
        out["calls"] = [to_geth(c) for c in frame["calls"]]
    return out


def to_parity(frame: dict[str, Any], path: list[int]) -> list[dict[str, Any]]:
    kind = frame["type"]
    trace: dict[str, Any] = {"blockHash": HEAD.hash, "blockNumber": HEAD.height,
                             "transactionHash": TX, "transactionPosition": 0,
                             "traceAddress": path, "subtraces": len(frame["calls"])}
    if kind == "SELFDESTRUCT":
        trace.update(type="suicide", result=None, action={
            "address": frame["from"], "refundAddress": frame["to"], "balance": hex(frame["value"])})
    elif kind.startswith("CREATE"):
        trace.update(type="create", action={"from": frame["from"], "value": hex(frame["value"]),
                                            "init": "0x", "gas": "0x0"},
                     result=None if frame["error"] else {"address": frame["to"], "code": "0x",
                                                         "gasUsed": "0x0"})
    else:
        trace.update(type="call", result={"gasUsed": "0x0", "output": "0x"}, action={
            "callType": kind.lower(), "from": frame["from"], "to": frame["to"],
            "value": hex(frame["value"]), "input": "0x", "gas": "0x0"})
    if frame["error"]:
        trace["error"] = "Reverted"
    return [trace] + [t for i, c in enumerate(frame["calls"]) for t in to_parity(c, [*path, i])]


def oracle(frame: dict[str, Any], path: tuple[int, ...] = (),
           failed: bool = False) -> list[tuple[str, int]]:
    """(trace path, value) of every sub-frame that moved value outside a failed frame."""
    failed = failed or frame["error"]
    moving = frame["type"] in ("CALL", "CREATE", "CREATE2", "SELFDESTRUCT")
    own = [(".".join(map(str, path)), frame["value"])] if (
        path and moving and frame["value"] > 0 and not failed) else []
    return own + [x for i, c in enumerate(frame["calls"]) for x in oracle(c, (*path, i), failed)]


@settings(max_examples=200)
@given(frames())
def test_geth_and_parity_agree_on_any_call_tree(tree: dict[str, Any]) -> None:
    """For any call tree, both decoders report the same transfers: value-moving sub-frames
    outside failed frames, in depth-first order."""
    geth = internal_transfers_geth([{"result": to_geth(tree)}], HEAD, SOURCE, [TX])
    parity = internal_transfers_parity(to_parity(tree, []), HEAD, SOURCE)
    assert geth == parity
    assert [(t.trace_path, t.amount) for t in geth] == oracle(tree)


def test_deep_call_trees_do_not_exhaust_the_stack() -> None:
    """A 1,100-deep chain of calls (beyond Python's recursion limit) decodes."""
    root: dict[str, Any] = {"type": "CALL", "from": ADDRESSES[0], "to": ADDRESSES[1],
                            "value": "0x1"}
    node = root
    for _ in range(1100):
        child = {"type": "CALL", "from": ADDRESSES[1], "to": ADDRESSES[2], "value": "0x1"}
        node["calls"] = [child]
        node = child
    geth = internal_transfers_geth([{"result": root}], HEAD, SOURCE, [TX])
    assert len(geth) == 1100
    assert geth[-1].trace_path == ".".join(["0"] * 1100)


@given(st.data(), st.sampled_from(("subtraces", "create", "error")))
def test_corrupted_traces_raise_only_decode_errors(data: st.DataObject, name: str) -> None:
    """Corrupting any one value of a real trace raises DecodeError or decodes; nothing else."""
    geth, parity = _response("geth", name), _response("parity", name)
    _corrupt(geth, data)
    _corrupt(parity, data)
    with contextlib.suppress(DecodeError):
        internal_transfers_geth(geth, head_of(name), SOURCE, tx_hashes(name))
    with contextlib.suppress(DecodeError):
        internal_transfers_parity(parity, head_of(name), SOURCE)
