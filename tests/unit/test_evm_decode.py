"""EVM block, receipt and log decoding, checked against recorded mainnet data.

Blocks 17,173,049 and 17,173,050 (tests/fixtures/README.md); the expected token
transfers are ethereum-etl's own output for the same blocks.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chains.errors import DecodeError
from chains.evm.address import canonical_evm_address
from chains.evm.bloom import bloom_may_contain, bloom_suggests_transfers
from chains.evm.decode import (
    DecodedBlock,
    Receipt,
    decode_block,
    decode_receipts,
    fee_payments,
    native_transfers,
)
from chains.evm.fields import hex_data, hex_quantity
from chains.evm.logs import TRANSFER_TOPIC, token_transfers
from chains.types import Address, ChainHead

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eth-mainnet-17173049"
BLOCKS = (17173049, 17173050)
SOURCE = "fixture"


@cache
def _raw_block(number: int) -> Any:
    return json.loads((FIXTURES / f"eth_getBlockByNumber_{number}_true.json").read_text())


@cache
def _raw_receipts(number: int) -> Any:
    return json.loads((FIXTURES / f"eth_getBlockReceipts_{number}.json").read_text())


def raw_block(number: int) -> Any:
    return copy.deepcopy(_raw_block(number))


def raw_receipts(number: int) -> Any:
    return copy.deepcopy(_raw_receipts(number))


def decoded(number: int) -> tuple[DecodedBlock, tuple[Receipt, ...]]:
    block = decode_block(raw_block(number), SOURCE)
    return block, decode_receipts(raw_receipts(number), block.head, SOURCE)


def expected_token_transfers() -> list[dict[str, Any]]:
    lines = (FIXTURES / "ethereum-etl_expected_token_transfers.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def topic_counts() -> dict[tuple[int, int], int]:
    """(block, log index) → number of topics, straight from the raw receipts."""
    return {(int(log["blockNumber"], 16), int(log["logIndex"], 16)): len(log["topics"])
            for number in BLOCKS for receipt in _raw_receipts(number) for log in receipt["logs"]}


# --- blocks and withdrawals -------------------------------------------------------------
@pytest.mark.parametrize(("number", "tx_count"), [(17173049, 116), (17173050, 182)])
def test_block_header_and_transactions_are_decoded(number: int, tx_count: int) -> None:
    """A full block decodes to its height, hash, timestamp, parent, 256-byte bloom and txs."""
    raw = _raw_block(number)
    block = decode_block(raw_block(number), SOURCE)
    assert block.head == ChainHead(number, raw["hash"], int(raw["timestamp"], 16))
    assert block.parent_hash == raw["parentHash"]
    assert len(block.logs_bloom) == 256
    assert len(block.transactions) == tx_count
    first = raw["transactions"][0]
    tx = block.transactions[0]
    assert (tx.hash, tx.index, tx.value) == (first["hash"], 0, int(first["value"], 16))
    assert tx.sender == canonical_evm_address(first["from"])
    assert isinstance(tx.value, int)


@pytest.mark.parametrize("number", BLOCKS)
def test_withdrawals_are_credited_in_wei(number: int) -> None:
    """Each block's 16 EIP-4895 withdrawals become transfers without a transaction, gwei times 10**9."""
    block = decode_block(raw_block(number), SOURCE)
    raw = _raw_block(number)["withdrawals"]
    assert len(block.withdrawals) == len(raw) == 16
    for w, r in zip(block.withdrawals, raw, strict=True):
        assert (w.kind, w.tx_hash, w.sender, w.contract) == ("withdrawal", None, None, None)
        assert w.amount == int(r["amount"], 16) * 10**9
        assert w.log_index == int(r["index"], 16)
        assert w.recipient == canonical_evm_address(r["address"])
        assert w.block == block.head


def test_block_without_withdrawals_has_none() -> None:
    """A pre-Shanghai block (no `withdrawals` key) decodes with no withdrawals."""
    raw = raw_block(17173049)
    del raw["withdrawals"]
    assert decode_block(raw, SOURCE).withdrawals == ()


# --- native value and fees ------------------------------------------------------------
def test_native_transfers_are_successful_transactions_with_value() -> None:
    """Native transfers are exactly the 127 transactions that carry ETH and succeeded."""
    carrying = failed = 0
    expected: set[tuple[str, str, str | None, int]] = set()
    for number in BLOCKS:
        status = {r["transactionHash"]: r["status"] for r in _raw_receipts(number)}
        for tx in _raw_block(number)["transactions"]:
            value = int(tx["value"], 16)
            carrying += value > 0
            failed += status[tx["hash"]] == "0x0"
            if value > 0 and status[tx["hash"]] == "0x1":
                expected.add((tx["hash"], tx["from"], tx["to"], value))
    assert (carrying, failed, len(expected)) == (135, 9, 127)

    ours = [t for number in BLOCKS for t in native_transfers(*decoded(number), SOURCE)]
    assert len(ours) == 127
    assert {(t.tx_hash, str(t.sender).lower(), str(t.recipient).lower(), t.amount)
            for t in ours} == expected
    assert all(t.kind == "native" and t.log_index is None and t.contract is None for t in ours)


def test_contract_creation_pays_the_created_contract() -> None:
    """A creation transaction with value credits the receipt's `contractAddress`."""
    raw, receipts = raw_block(17173050), raw_receipts(17173050)
    index = next(i for i, t in enumerate(raw["transactions"]) if t["to"] is None)
    raw["transactions"][index]["value"] = "0x5"
    block = decode_block(raw, SOURCE)
    created = receipts[index]["contractAddress"]
    ours = [t for t in native_transfers(block, decode_receipts(receipts, block.head, SOURCE),
                                        SOURCE) if t.tx_hash == raw["transactions"][index]["hash"]]
    assert [(t.recipient, t.amount) for t in ours] == [(canonical_evm_address(created), 5)]


def test_fees_are_paid_by_every_sender_failed_or_not() -> None:
    """Every transaction pays gasUsed * effectiveGasPrice, and 9 of them failed."""
    fees = [f for number in BLOCKS for f in fee_payments(*decoded(number))]
    assert len(fees) == 298
    assert sum(not f.success for f in fees) == 9
    receipts = {r["transactionHash"]: r for n in BLOCKS for r in _raw_receipts(n)}
    for fee in fees:
        r = receipts[fee.tx_hash]
        assert fee.amount == int(r["gasUsed"], 16) * int(r["effectiveGasPrice"], 16)
        assert fee.payer == canonical_evm_address(r["from"])


def test_fee_falls_back_to_the_transaction_gas_price() -> None:
    """Without `effectiveGasPrice` (pre-London nodes) the fee uses the tx's `gasPrice`."""
    raw = raw_receipts(17173049)
    for r in raw:
        del r["effectiveGasPrice"]
    block = decode_block(raw_block(17173049), SOURCE)
    fee = fee_payments(block, decode_receipts(raw, block.head, SOURCE))[0]
    tx = _raw_block(17173049)["transactions"][0]
    assert fee.amount == int(raw[0]["gasUsed"], 16) * int(tx["gasPrice"], 16)


def test_pre_byzantium_receipt_with_root_is_successful() -> None:
    """A receipt with `root` instead of `status` is treated as successful."""
    raw = raw_receipts(17173049)[:1]
    del raw[0]["status"]
    raw[0]["root"] = "0x" + "11" * 32
    head = decode_block(raw_block(17173049), SOURCE).head
    assert decode_receipts(raw, head, SOURCE)[0].success is True


def test_transaction_without_receipt_is_refused() -> None:
    """Native transfers of a transaction whose receipt is missing cannot be decided."""
    block, receipts = decoded(17173049)
    with pytest.raises(DecodeError, match="no receipt"):
        native_transfers(block, receipts[1:], SOURCE)


# --- ERC-20 Transfer logs -------------------------------------------------------------
def test_erc20_transfers_match_ethereum_etl() -> None:
    """Every 3-topic transfer ethereum-etl lists (282 of 291) is ours, equal; its 9 ERC-721 are not."""
    counts = topic_counts()
    expected = expected_token_transfers()
    erc20 = {(e["block_number"], e["log_index"]): e for e in expected
             if counts[(e["block_number"], e["log_index"])] == 3}
    erc721 = {(e["block_number"], e["log_index"]) for e in expected
              if counts[(e["block_number"], e["log_index"])] == 4}
    assert (len(expected), len(erc20), len(erc721)) == (291, 282, 9)

    ours = {}
    for number in BLOCKS:
        block, receipts = decoded(number)
        logs = [log for r in receipts for log in r.logs]
        for t in token_transfers(logs, {number: block.head}, SOURCE):
            ours[(t.block.height, t.log_index)] = t
    assert ours.keys() == erc20.keys()
    assert not ours.keys() & erc721
    for key, e in erc20.items():
        t = ours[key]
        assert (t.kind, t.amount, t.tx_hash, t.block.hash) == (
            "token", e["value"], e["transaction_hash"], e["block_hash"])
        assert isinstance(t.amount, int)
        assert t.contract == canonical_evm_address(e["token_address"])
        assert t.sender == canonical_evm_address(e["from_address"])
        assert t.recipient == canonical_evm_address(e["to_address"])
        assert t.block.timestamp == e["block_timestamp"]


def _transfer_log(**changes: Any) -> dict[str, Any]:
    log = next(copy.deepcopy(lg) for r in _raw_receipts(17173049) for lg in r["logs"]
               if lg["topics"][0] == TRANSFER_TOPIC and len(lg["topics"]) == 3)
    log.update(changes)
    return dict(log)


def test_block_hash_alone_is_enough_to_pin_logs() -> None:
    """Given one hash, logs of that block decode with the log's own height."""
    log = _transfer_log()
    [t] = token_transfers([log], log["blockHash"], SOURCE)
    assert t.block == ChainHead(17173049, log["blockHash"])


@pytest.mark.parametrize("changes", [
    {"removed": True},
    {"data": "0x" + "00" * 31},
    {"data": "0x"},
    {"topics": [TRANSFER_TOPIC, "0x" + "11" * 32, "0x" + "00" * 12 + "22" * 20]},
    {"topics": ["0x" + "ab" * 32, "0x" + "00" * 32, "0x" + "00" * 32]},
])
def test_non_erc20_or_removed_logs_are_skipped(changes: dict[str, Any]) -> None:
    """Removed logs and logs that are not ERC-20-shaped Transfers yield no transfer."""
    log = _transfer_log(**changes)
    assert token_transfers([log], log["blockHash"], SOURCE) == []


def test_a_log_seen_twice_counts_once() -> None:
    """The same log (block hash, index) returned by two queries is one transfer."""
    log = _transfer_log()
    assert len(token_transfers([log, copy.deepcopy(log)], log["blockHash"], SOURCE)) == 1


@pytest.mark.parametrize("expected", [
    "0x" + "ee" * 32,
    {17173049: "0x" + "ee" * 32},
    {17173050: _raw_block(17173050)["hash"]},
    ChainHead(17173050, _raw_block(17173049)["hash"]),
])
def test_log_of_another_block_is_refused(expected: Any) -> None:
    """A log whose block is not the expected one (providers do this) is a DecodeError."""
    with pytest.raises(DecodeError, match="log of another block") as info:
        token_transfers([_transfer_log()], expected, SOURCE)
    assert info.value.source == SOURCE


# --- malformed payloads ---------------------------------------------------------------
def _break_block(path: tuple[Any, ...], value: Any = None, delete: bool = False) -> Any:
    raw = raw_block(17173049)
    target = raw
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return raw


@pytest.mark.parametrize(("path", "value", "delete", "field"), [
    (("transactions", 3, "value"), "12", False, "block.transactions[3].value"),
    (("transactions", 3, "value"), "0x", False, "block.transactions[3].value"),
    (("transactions", 3, "value"), 12, False, "block.transactions[3].value"),
    (("transactions", 3, "from"), "0x1234", False, "block.transactions[3].from"),
    (("transactions", 0, "hash"), None, True, "block.transactions[0].hash"),
    (("withdrawals", 2, "amount"), None, True, "block.withdrawals[2].amount"),
    (("withdrawals", 2, "address"), "0xb9d7934878b5fb9610b3fe8a5e441e8fad7e29", False,
     "block.withdrawals[2].address"),
    (("logsBloom",), "0x" + "00" * 255, False, "block.logsBloom"),
    (("hash",), "0xabc", False, "block.hash"),
    (("number",), None, True, "block.number"),
    (("withdrawals",), {"index": "0x1"}, False, "block.withdrawals"),
])
def test_malformed_block_fields_are_named(path: tuple[Any, ...], value: Any, delete: bool,
                                          field: str) -> None:
    """A malformed or missing block field raises one DecodeError naming it and the source."""
    with pytest.raises(DecodeError) as info:
        decode_block(_break_block(path, value, delete), SOURCE)
    assert (info.value.field, info.value.source) == (field, SOURCE)


def test_truncated_withdrawal_is_refused() -> None:
    """A withdrawal object cut short (no address, no amount) is a DecodeError."""
    raw = raw_block(17173049)
    raw["withdrawals"][0] = {"index": "0x21bbc0", "validatorIndex": "0x83e46"}
    with pytest.raises(DecodeError, match=r"withdrawals\[0\]"):
        decode_block(raw, SOURCE)


def test_hash_only_transaction_lists_are_refused() -> None:
    """A block fetched without full transactions asks for them instead of guessing."""
    raw = raw_block(17173049)
    raw["transactions"] = [t["hash"] for t in raw["transactions"]]
    with pytest.raises(DecodeError, match="full transactions"):
        decode_block(raw, SOURCE)


@pytest.mark.parametrize("raw", [None, [], "0x1", 5])
def test_non_object_block_is_refused(raw: Any) -> None:
    """Anything but a JSON object (e.g. null for an unknown block) is a DecodeError."""
    with pytest.raises(DecodeError):
        decode_block(raw, SOURCE)


@pytest.mark.parametrize(("key", "value", "match"), [
    ("blockHash", None, "blockHash: missing"),
    ("blockHash", "0x" + "ab" * 32, "receipt of another block"),
    ("status", "0xzz", "status"),
    ("gasUsed", None, "gasUsed: missing"),
])
def test_malformed_receipts_are_refused(key: str, value: Any, match: str) -> None:
    """Receipts with a missing, malformed or foreign field raise a DecodeError naming it."""
    raw = raw_receipts(17173049)
    if value is None:
        del raw[5][key]
    else:
        raw[5][key] = value
    head = decode_block(raw_block(17173049), SOURCE).head
    with pytest.raises(DecodeError, match=match):
        decode_receipts(raw, head, SOURCE)


@pytest.mark.parametrize(("key", "value", "match"), [
    ("blockHash", None, "blockHash: missing"),
    ("logIndex", "1", "logIndex"),
    ("topics", ["0x1234"], r"topics\[0\]"),
    ("data", "0x123", "data"),
    ("address", None, "address: missing"),
])
def test_malformed_logs_are_refused(key: str, value: Any, match: str) -> None:
    """A log with a missing or malformed field raises a DecodeError naming it."""
    log = _transfer_log()
    block_hash = log["blockHash"]
    if value is None:
        del log[key]
    else:
        log[key] = value
    with pytest.raises(DecodeError, match=match):
        token_transfers([log], block_hash, SOURCE)


@pytest.mark.parametrize("value", ["0x", "12", "0X1", "0x1g", "", None, 1, "0x 1", " 0x1"])
def test_hex_quantity_is_strict(value: Any) -> None:
    """Only "0x" followed by hex digits is a quantity."""
    with pytest.raises(DecodeError, match="value"):
        hex_quantity(value, "value", SOURCE)


@given(st.integers(min_value=0, max_value=2**256 - 1))
def test_hex_quantity_round_trips(value: int) -> None:
    """Every non-negative integer's hex text parses back to itself."""
    assert hex_quantity(hex(value), "value", SOURCE) == value


def test_hex_data_checks_length() -> None:
    """Data of the wrong byte length, or an odd number of digits, is refused."""
    assert hex_data("0x00ff", "data", SOURCE, 2) == b"\x00\xff"
    for bad in ("0x00ff0", "0x00"):
        with pytest.raises(DecodeError):
            hex_data(bad, "data", SOURCE, 2)


# --- bloom ----------------------------------------------------------------------------
def _bloom_with(items: list[bytes]) -> bytes:
    """An independent bloom builder (Yellow Paper M3:2048) over keccak."""
    from eth_hash.auto import keccak

    bloom = 0
    for item in items:
        digest = keccak(item)
        for i in (0, 2, 4):
            bloom |= 1 << (((digest[i] << 8) | digest[i + 1]) & 2047)
    return bloom.to_bytes(256, "big")


@pytest.mark.parametrize("number", BLOCKS)
def test_real_block_bloom_holds_every_log_address_and_topic(number: int) -> None:
    """A mainnet block's logsBloom reports every address and topic of its logs present."""
    block, receipts = decoded(number)
    logs = [log for r in receipts for log in r.logs]
    assert logs
    for log in logs:
        assert bloom_may_contain(block.logs_bloom, bytes.fromhex(log["address"][2:]))
        for topic in log["topics"]:
            assert bloom_may_contain(block.logs_bloom, bytes.fromhex(topic[2:]))


@given(st.lists(st.binary(min_size=20, max_size=32), min_size=1, max_size=30))
def test_every_added_item_is_reported_present(items: list[bytes]) -> None:
    """Whatever was added to a bloom is always reported as possibly present."""
    bloom = _bloom_with(items)
    assert all(bloom_may_contain(bloom, item) for item in items)


@given(st.binary(min_size=20, max_size=32))
def test_empty_bloom_contains_nothing(item: bytes) -> None:
    """An all-zero bloom rules every item out."""
    assert not bloom_may_contain(bytes(256), item)


def test_bloom_suggests_transfers_of_a_real_sender() -> None:
    """A real ERC-20 sender of the block is suggested; with no Transfer topic, nothing is."""
    block, receipts = decoded(17173049)
    log = next(lg for r in receipts for lg in r.logs
               if lg["topics"][0] == TRANSFER_TOPIC and len(lg["topics"]) == 3)
    sender = canonical_evm_address("0x" + log["topics"][1][-40:])
    assert bloom_suggests_transfers(block.logs_bloom, [sender])
    assert not bloom_suggests_transfers(block.logs_bloom, [])
    only_address = _bloom_with([bytes(12) + bytes.fromhex(sender[2:])])
    assert not bloom_suggests_transfers(only_address, [sender])


@given(st.lists(st.binary(min_size=20, max_size=20), min_size=1, max_size=5))
def test_watched_addresses_in_transfer_topics_are_suggested(raw: list[bytes]) -> None:
    """A bloom holding the Transfer topic and a watched address as a topic suggests transfers."""
    watched = [Address(canonical_evm_address("0x" + r.hex())) for r in raw]
    bloom = _bloom_with([bytes.fromhex(TRANSFER_TOPIC[2:]), bytes(12) + raw[-1]])
    assert bloom_suggests_transfers(bloom, watched)


# --- robustness: any corruption is a DecodeError or a clean decode ---------------------
JSON_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**70), st.text(max_size=12),
                      st.sampled_from(["0x", "0x0", "0xzz", "0x" + "ab" * 20, "0x" + "00" * 32]),
                      st.lists(st.integers(0, 3), max_size=2), st.just({}))


def _corrupt(raw: Any, data: st.DataObject) -> Any:
    """Replace or delete one randomly chosen value somewhere inside `raw`."""
    target, key = raw, None
    while True:
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        child = target[key]
        if not isinstance(child, dict | list) or not child or data.draw(st.booleans()):
            break
        target = child
    if key is not None:
        if isinstance(target, dict) and data.draw(st.booleans()):
            del target[key]
        else:
            target[key] = data.draw(JSON_JUNK)
    return raw


@given(st.data())
def test_corrupted_blocks_and_receipts_raise_only_decode_errors(data: st.DataObject) -> None:
    """Corrupting any one value of a real block, its receipts or logs raises DecodeError or
    decodes; no KeyError, ValueError or TypeError escapes."""
    block_raw, receipts_raw = raw_block(17173049), raw_receipts(17173049)
    block_raw["transactions"] = block_raw["transactions"][:3]
    receipts_raw = receipts_raw[:3]
    _corrupt(data.draw(st.sampled_from([block_raw, receipts_raw])), data)
    try:
        block = decode_block(block_raw, SOURCE)
        receipts = decode_receipts(receipts_raw, block.head, SOURCE)
        native_transfers(block, receipts, SOURCE)
        fee_payments(block, receipts)
        token_transfers([log for r in receipts for log in r.logs], block.head.hash, SOURCE)
    except DecodeError as exc:
        assert exc.source == SOURCE
