"""Range scans (`EvmAdapter.scan`, i.e. `chains.evm.scan.RangeScanner`) against a fake
JSON-RPC node that serves the recorded mainnet blocks 17,173,049-17,173,050 and their
receipts (tests/fixtures/README.md). Expected transfers and fees are computed here
straight from the raw fixture JSON, independently of `chains.evm.decode` and
`chains.evm.logs`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest

from chains.errors import DecodeError, SourceUnavailable
from chains.evm.adapter import EvmAdapter
from chains.evm.address import canonical_evm_address
from chains.evm.scan import ADDRESSES_PER_FILTER, TRANSFER_TOPIC, UNFILTERED_ABOVE_FILTERS
from chains.jsonrpc import RetryPolicy
from chains.types import Address, BlockLink, ChainHead, ScanResult

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eth-mainnet-17173049"
FIRST, LAST = 17173049, 17173050
TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
NO_WAIT = RetryPolicy(attempts=2, initial_wait=0, max_wait=0)

RAW_WATCHED = (
    "0xb9d7934878b5fb9610b3fe8a5e441e8fad7e293f",  # 16 withdrawals in each block
    "0x17a5b4f7b8a1261f67254c8fd25a8e80fdc5d910",  # one failed transaction with value per block
    "0xc446f02d364fbaf2911646bcbff56e6613c6e740",  # sends ETH 8 times in 17173049
    "0xae2fc483527b8ef99eb5d9b44875f005ba1fae13",  # MEV bot owner: pays its contract wei ...
    "0x6b75d8af000000e20b7a7ddf000ba900b4009a80",  # ... which swaps tokens in both blocks
    "0x6cdeb3b685cdf7f2032040e9e8461a77bd9632a7",  # deploys a token and is minted some
)
WATCHED = [canonical_evm_address(a) for a in RAW_WATCHED]


# --- the recorded chain, read directly ------------------------------------------------
@cache
def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def raw_block(number: int) -> dict[str, Any]:
    return copy.deepcopy(_fixture(f"eth_getBlockByNumber_{number}_true.json"))


def raw_receipts(number: int) -> list[dict[str, Any]]:
    return copy.deepcopy(_fixture(f"eth_getBlockReceipts_{number}.json"))


def _addr(raw: str | None) -> Address | None:
    return None if raw is None else canonical_evm_address(raw)


Row = tuple[str, int, str | None, int | None, Address | None, Address | None, Address | None,
            int]
"""(kind, height, tx hash, log index, sender, recipient, contract, amount)"""


def expected_transfers(watched: list[Address]) -> set[Row]:
    """Native, ERC-20 and withdrawal transfers touching `watched`, from the raw JSON."""
    rows: set[Row] = set()
    for number in (FIRST, LAST):
        block = raw_block(number)
        status = {r["transactionHash"]: r["status"] for r in raw_receipts(number)}
        for tx in block["transactions"]:
            value, ends = int(tx["value"], 16), (_addr(tx["from"]), _addr(tx["to"]))
            if value and status[tx["hash"]] == "0x1" and set(ends) & set(watched):
                rows.add(("native", number, tx["hash"], None, *ends, None, value))
        for receipt in raw_receipts(number):
            for log in receipt["logs"]:
                topics = log["topics"]
                if len(topics) != 3 or topics[0] != TRANSFER or len(log["data"]) != 66:
                    continue
                ends = (_addr("0x" + topics[1][26:]), _addr("0x" + topics[2][26:]))
                if set(ends) & set(watched):
                    rows.add(("token", number, log["transactionHash"], int(log["logIndex"], 16),
                              *ends, _addr(log["address"]), int(log["data"], 16)))
        for w in block["withdrawals"]:
            if _addr(w["address"]) in watched:
                rows.add(("withdrawal", number, None, int(w["index"], 16), None,
                          _addr(w["address"]), None, int(w["amount"], 16) * 10**9))
    return rows


def expected_fees(watched: list[Address]) -> set[tuple[int, str, Address | None, int, bool]]:
    """(height, tx hash, payer, wei, success) of every transaction a watched wallet sent."""
    return {(number, r["transactionHash"], _addr(r["from"]),
             int(r["gasUsed"], 16) * int(r["effectiveGasPrice"], 16), r["status"] == "0x1")
            for number in (FIRST, LAST) for r in raw_receipts(number)
            if _addr(r["from"]) in watched}


def rows(result: ScanResult) -> set[Row]:
    return {(t.kind, t.block.height, t.tx_hash, t.log_index, t.sender, t.recipient, t.contract,
             t.amount) for t in result.transfers}


# --- the fake node --------------------------------------------------------------------
class NodeError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


LogTamper = Callable[[dict[str, Any], list[Any]], Any]


@dataclasses.dataclass
class FakeNode:
    """Serves `blocks` (height → eth_getBlockByNumber result) and the receipts and logs of
    their transactions. `max_log_blocks` refuses wider eth_getLogs ranges (naming a range
    that works when `suggest_range`); `traces` serves debug_traceBlockByNumber (callTracer),
    with extra child frames per transaction hash in `internal_calls`; `tamper_logs` rewrites
    eth_getLogs answers. Every JSON-RPC item is recorded in `calls` as (method, params,
    whether it came in a batch)."""

    blocks: dict[int, Any] = dataclasses.field(
        default_factory=lambda: {n: raw_block(n) for n in (FIRST, LAST)})
    receipts: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {r["transactionHash"]: r for n in (FIRST, LAST)
                                 for r in raw_receipts(n)})
    max_log_blocks: int | None = None
    refusal: str = "query returned more than 10000 results"
    suggest_range: bool = False
    traces: bool = False
    internal_calls: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    tamper_logs: LogTamper | None = None
    calls: list[tuple[str, Any, bool]] = dataclasses.field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if isinstance(body, list):
            return httpx.Response(200, json=[self._answer(item, True) for item in body])
        return httpx.Response(200, json=self._answer(body, False))

    def _answer(self, item: dict[str, Any], batched: bool) -> dict[str, Any]:
        method, params = item["method"], item["params"]
        self.calls.append((method, params, batched))
        methods: dict[str, Callable[..., Any]] = {
            "eth_getBlockByNumber": self.block,
            "eth_getTransactionReceipt": self.receipts.get,
            "eth_getLogs": self.logs,
            "debug_traceBlockByNumber": self.trace_block,
        }
        try:
            if method not in methods:
                raise NodeError(-32601, f"the method {method} does not exist/is not available")
            reply = {"result": methods[method](*params)}
        except NodeError as exc:
            reply = {"error": {"code": exc.code, "message": exc.message}}
        return {"jsonrpc": "2.0", "id": item["id"], **reply}

    def block(self, tag: str, full: bool) -> Any:
        assert full is True
        return self.blocks.get(int(tag, 16))

    def logs(self, query: dict[str, Any]) -> Any:
        all_logs = [log for r in self.receipts.values() for log in r["logs"]]
        if "blockHash" in query:
            found = [log for log in all_logs if log["blockHash"] == query["blockHash"]]
        else:
            first, last = int(query["fromBlock"], 16), int(query["toBlock"], 16)
            if self.max_log_blocks is not None and last - first + 1 > self.max_log_blocks:
                hint = (f". Try with this block range [0x{first:X}, "
                        f"0x{first + self.max_log_blocks - 1:X}]." if self.suggest_range else "")
                raise NodeError(-32005, self.refusal + hint)
            found = [log for log in all_logs if first <= int(log["blockNumber"], 16) <= last]
        found = [log for log in found if _topics_match(log["topics"], query.get("topics", []))]
        return self.tamper_logs(query, found) if self.tamper_logs else found

    def trace_block(self, tag: str, options: dict[str, Any]) -> Any:
        if not self.traces:
            raise NodeError(-32601, "the method debug_traceBlockByNumber does not exist/is "
                                    "not available")
        assert options == {"tracer": "callTracer"}
        return [{"txHash": tx["hash"], "result": self._frame(tx)}
                for tx in self.blocks[int(tag, 16)]["transactions"]]

    def _frame(self, tx: dict[str, Any]) -> dict[str, Any]:
        """A transaction's top-level callTracer frame (the receipt says where it went)."""
        receipt = self.receipts[tx["hash"]]
        frame = {"type": "CALL" if tx["to"] else "CREATE", "from": tx["from"],
                 "to": tx["to"] or receipt["contractAddress"], "value": tx["value"],
                 "calls": self.internal_calls.get(tx["hash"], [])}
        return frame if receipt["status"] == "0x1" else {**frame, "error": "execution reverted"}

    def add_empty_blocks(self, count: int) -> None:
        """Append `count` blocks without transactions, withdrawals or logs."""
        for number in range(max(self.blocks) + 1, max(self.blocks) + 1 + count):
            parent = self.blocks[number - 1]
            self.blocks[number] = {
                **parent, "number": hex(number), "hash": f"0x{number:064x}",
                "parentHash": parent["hash"], "timestamp": hex(int(parent["timestamp"], 16) + 12),
                "logsBloom": "0x" + "00" * 256, "transactions": [], "withdrawals": []}

    def count(self, method: str, *, batched: bool | None = None) -> int:
        return sum(1 for m, _, b in self.calls if m == method and batched in (None, b))

    def log_ranges(self) -> list[tuple[int, int]]:
        return [(int(p[0]["fromBlock"], 16), int(p[0]["toBlock"], 16))
                for m, p, _ in self.calls if m == "eth_getLogs" and "fromBlock" in p[0]]


def _topics_match(topics: list[str], wanted: list[Any]) -> bool:
    """eth_getLogs topic filtering: per position null (any), one topic, or a list of them."""
    return all(want is None or (i < len(topics) and topics[i] in
                                (want if isinstance(want, list) else [want]))
               for i, want in enumerate(wanted))


def scan(node: FakeNode, watched: list[Address] = WATCHED, start: int = FIRST, end: int = LAST,
         *, handler: Callable[[httpx.Request], httpx.Response] | None = None) -> ScanResult:
    with EvmAdapter("https://node.example/", expected_chain_id=1, retry=NO_WAIT,
                    transport=httpx.MockTransport(handler or node.handle)) as adapter:
        return adapter.scan(watched, start, end)


@cache
def baseline() -> ScanResult:
    return scan(FakeNode())


# --- 1. the recorded blocks -----------------------------------------------------------
def test_scan_returns_the_transfers_fees_and_links_of_the_recorded_blocks() -> None:
    """Scanning both recorded blocks yields exactly the native, token and withdrawal
    transfers and the fees of the watched wallets, block links chained by parent hash, and
    traces "none" from a node without a trace API."""
    node = FakeNode()
    result = scan(node)

    assert rows(result) == expected_transfers(WATCHED)
    assert len(result.transfers) == len(rows(result))
    assert Counter(t.kind for t in result.transfers) == {
        "native": 12, "token": 9, "withdrawal": 32}
    assert {(f.block.height, f.tx_hash, f.payer, f.amount, f.success)
            for f in result.fees} == expected_fees(WATCHED)
    assert len(result.fees) == 15
    assert sum(not f.success for f in result.fees) == 2
    heads = {n: raw_block(n) for n in (FIRST, LAST)}
    assert result.blocks == tuple(
        BlockLink(n, b["hash"], b["parentHash"], int(b["timestamp"], 16))
        for n, b in heads.items())
    assert result.blocks[1].parent_hash == result.blocks[0].hash
    assert all(t.block == ChainHead(t.block.height, heads[t.block.height]["hash"],
                                    int(heads[t.block.height]["timestamp"], 16))
               for t in result.transfers)
    assert [(t.block.height, t.key) for t in result.transfers] == sorted(
        (t.block.height, t.key) for t in result.transfers)
    assert result.traces == "none"
    assert result.rechecked_blocks == 0
    assert node.count("eth_getLogs") == 2  # one filter per side of Transfer
    assert node.count("eth_getTransactionReceipt") == 15  # only transactions of watched wallets


def test_empty_range_or_watch_list_asks_for_no_logs() -> None:
    """A reversed range asks the node nothing; an empty watch list reads blocks only."""
    node = FakeNode()
    assert scan(node, start=LAST, end=FIRST) == ScanResult((), (), (), "none", 0)
    assert node.calls == []
    result = scan(node, [])
    assert (len(result.blocks), result.transfers, result.fees) == (2, (), ())
    assert {m for m, _, _ in node.calls} == {"eth_getBlockByNumber"}


# --- 2. adaptive log ranges -----------------------------------------------------------
@pytest.mark.parametrize("refusal", ["query returned more than 10000 results",
                                     "block range too large"])
def test_refused_log_ranges_are_halved_down_to_single_blocks(refusal: str) -> None:
    """A node that refuses eth_getLogs over more than one block still yields the same scan,
    each filter's range asked whole (both filters in one batch) and then one block at a
    time."""
    node = FakeNode(max_log_blocks=1, refusal=refusal)
    assert scan(node) == baseline()
    halves = [(FIRST, FIRST), (LAST, LAST)]
    assert node.log_ranges() == [(FIRST, LAST)] * 2 + halves * 2


def test_refused_log_range_is_split_at_the_suggested_range() -> None:
    """A refusal naming a block range that works ("try with this block range [0x…, 0x…]")
    is split where that range ends, not in the middle."""
    limited, unlimited = FakeNode(max_log_blocks=2, suggest_range=True), FakeNode()
    for node in (limited, unlimited):
        node.add_empty_blocks(3)
    end = LAST + 3
    assert scan(limited, end=end) == scan(unlimited, end=end)
    splits = [(FIRST, LAST), (LAST + 1, end), (LAST + 1, LAST + 2), (end, end)]
    assert limited.log_ranges() == [(FIRST, end)] * 2 + splits * 2


def test_log_refusal_for_a_single_block_fails_the_scan() -> None:
    """A node that refuses eth_getLogs even for one block makes the scan fail as unavailable."""
    with pytest.raises(SourceUnavailable, match="10000 results"):
        scan(FakeNode(max_log_blocks=0))


# --- 3. long watch lists --------------------------------------------------------------
def test_long_address_lists_are_chunked_across_filters() -> None:
    """More than ADDRESSES_PER_FILTER watched addresses are spread over several filters per
    side of Transfer, none longer than the limit, and the scan is the same."""
    fillers = [canonical_evm_address("0x" + hashlib.sha256(b"%d" % i).hexdigest()[:40])
               for i in range(2 * ADDRESSES_PER_FILTER)]
    watched = WATCHED + fillers
    node = FakeNode()
    assert scan(node, watched) == baseline()

    filters = [p[0]["topics"] for m, p, _ in node.calls if m == "eth_getLogs"]
    assert len(filters) == 2 * 3
    assert all(len(f[-1]) <= ADDRESSES_PER_FILTER for f in filters)
    padded = {"0x" + "0" * 24 + a[2:].lower() for a in watched}
    senders = [t for f in filters if len(f) == 2 for t in f[1]]
    recipients = [t for f in filters if len(f) == 3 and f[1] is None for t in f[2]]
    assert sorted(senders) == sorted(recipients) == sorted(padded)


def test_many_watched_addresses_over_a_short_range_ask_for_every_transfer_once() -> None:
    """Over UNFILTERED_ABOVE_FILTERS filters' worth of watched addresses, a short range is
    asked for every Transfer log in one query (the watched wallets' are kept locally): the
    same scan, one eth_getLogs; a refused range is halved as usual."""
    fillers = [canonical_evm_address("0x" + hashlib.sha256(b"%d" % i).hexdigest()[:40])
               for i in range(UNFILTERED_ABOVE_FILTERS * ADDRESSES_PER_FILTER // 2)]
    node = FakeNode()
    assert scan(node, WATCHED + fillers) == baseline()
    queries = [p[0] for m, p, _ in node.calls if m == "eth_getLogs"]
    assert [q["topics"] for q in queries] == [[TRANSFER_TOPIC]]
    refusing = FakeNode(max_log_blocks=0)
    assert scan(FakeNode(max_log_blocks=1), WATCHED + fillers) == baseline()
    with pytest.raises(SourceUnavailable, match="10000 results"):
        scan(refusing, WATCHED + fillers)


# --- 4. provider consistency ----------------------------------------------------------
def _first_log_moved(block_hash: str, number: int | None = None) -> LogTamper:
    def tamper(query: dict[str, Any], logs: list[Any]) -> Any:
        if not logs:
            return logs
        moved = {**logs[0], "blockHash": block_hash}
        if number is not None:
            moved["blockNumber"] = hex(number)
        return [moved, *logs[1:]]
    return tamper


@pytest.mark.parametrize("tamper", [
    _first_log_moved("0x" + "ab" * 32),
    _first_log_moved(raw_block(LAST)["hash"]),
    _first_log_moved(raw_block(FIRST)["parentHash"], FIRST - 1),
], ids=["unknown-hash", "hash-of-the-other-block", "block-outside-the-range"])
def test_log_of_another_block_is_a_decode_error(tamper: LogTamper) -> None:
    """A log from eth_getLogs whose block is not the one the scan read raises DecodeError
    and never becomes a transfer."""
    with pytest.raises(DecodeError, match="log of another block"):
        scan(FakeNode(tamper_logs=tamper))


def _drop_logs_of_last(by_hash_too: bool) -> LogTamper:
    def tamper(query: dict[str, Any], logs: list[Any]) -> Any:
        if "blockHash" in query and not by_hash_too:
            return logs
        return [log for log in logs if int(log["blockNumber"], 16) != LAST]
    return tamper


def test_block_whose_bloom_shows_missed_logs_is_re_asked_by_hash() -> None:
    """When the range query returns no logs for a block whose bloom says a watched Transfer
    may be in it, the scanner re-asks that block by hash and uses the answer."""
    node = FakeNode(tamper_logs=_drop_logs_of_last(by_hash_too=False))
    result = scan(node)
    assert dataclasses.replace(result, rechecked_blocks=0) == baseline()
    assert result.rechecked_blocks == 1
    by_hash = [p[0]["blockHash"] for m, p, _ in node.calls
               if m == "eth_getLogs" and "blockHash" in p[0]]
    assert by_hash == [raw_block(LAST)["hash"]] * 2  # one per side of Transfer


def test_re_ask_by_hash_that_still_returns_nothing_is_taken_as_is() -> None:
    """When the re-ask by hash also returns no logs, the block's token transfers are absent
    and the rest of the scan is unchanged."""
    node = FakeNode(tamper_logs=_drop_logs_of_last(by_hash_too=True))
    result = scan(node)
    assert result.rechecked_blocks == 1
    assert rows(result) == {r for r in rows(baseline())
                            if not (r[0] == "token" and r[1] == LAST)}
    assert result.fees == baseline().fees
    assert sum(1 for m, p, _ in node.calls if m == "eth_getLogs" and "blockHash" in p[0]) == 2


def test_block_without_watched_logs_in_its_bloom_is_not_re_asked() -> None:
    """Blocks whose bloom rules out a watched Transfer are not re-asked."""
    node = FakeNode()
    node.add_empty_blocks(2)
    result = scan(node, end=LAST + 2)
    assert result.rechecked_blocks == 0
    assert not any("blockHash" in p[0] for m, p, _ in node.calls if m == "eth_getLogs")


# --- 5. garbage -----------------------------------------------------------------------
def _set_block_field(number: int, key: str, value: Any) -> Callable[[FakeNode], None]:
    return lambda node: node.blocks[number].__setitem__(key, value)


def _set_tx_value(node: FakeNode) -> None:
    node.blocks[FIRST]["transactions"][5]["value"] = "1000"


def _serve_last_for_first(node: FakeNode) -> None:
    node.blocks[FIRST] = node.blocks[LAST]


def _forget_last(node: FakeNode) -> None:
    del node.blocks[LAST]


def _receipt_of_other_block(node: FakeNode) -> None:
    [tx] = [t for t in node.blocks[FIRST]["transactions"] if t["from"] == RAW_WATCHED[2]][:1]
    node.receipts[tx["hash"]]["blockHash"] = raw_block(LAST)["hash"]


def _forget_receipt(node: FakeNode) -> None:
    [tx] = [t for t in node.blocks[LAST]["transactions"] if t["from"] == RAW_WATCHED[1]]
    del node.receipts[tx["hash"]]


def _tamper(make: Callable[[list[Any]], Any]) -> Callable[[FakeNode], None]:
    def apply(node: FakeNode) -> None:
        node.tamper_logs = lambda query, logs: make(logs)
    return apply


GARBAGE: list[Any] = [
    pytest.param(_set_block_field(FIRST, "timestamp", "0xnoon"), DecodeError, id="non-hex-field"),
    pytest.param(_set_block_field(LAST, "hash", "0x1234"), DecodeError, id="short-hash"),
    pytest.param(_set_block_field(LAST, "transactions", None), DecodeError, id="no-tx-list"),
    pytest.param(_set_tx_value, DecodeError, id="decimal-tx-value"),
    pytest.param(_serve_last_for_first, SourceUnavailable, id="another-block"),
    pytest.param(_forget_last, SourceUnavailable, id="block-null"),
    pytest.param(_receipt_of_other_block, DecodeError, id="receipt-of-another-block"),
    pytest.param(_forget_receipt, SourceUnavailable, id="receipt-null"),
    pytest.param(_tamper(lambda logs: {"logs": logs}), DecodeError, id="logs-not-a-list"),
    pytest.param(_tamper(lambda logs: [{**logs[0], "data": "0xzz"}, *logs[1:]]), DecodeError,
                 id="log-non-hex-data"),
    pytest.param(_tamper(lambda logs: [{**logs[0], "topics": "0x00"}, *logs[1:]]),
                 DecodeError, id="log-topics-not-a-list"),
    pytest.param(_tamper(lambda logs: [*logs, "0xdeadbeef"]), DecodeError,
                 id="log-not-an-object"),
]


@pytest.mark.parametrize(("corrupt", "error"), GARBAGE)
def test_garbage_from_the_node_raises_a_segwatch_error(
        corrupt: Callable[[FakeNode], None], error: type[Exception]) -> None:
    """A malformed or inconsistent answer raises DecodeError or SourceUnavailable, never
    another exception."""
    node = FakeNode()
    corrupt(node)
    with pytest.raises(error):
        scan(node)


@pytest.mark.parametrize("method", ["eth_getBlockByNumber", "eth_getLogs",
                                    "eth_getTransactionReceipt"])
def test_truncated_json_raises_source_unavailable(method: str) -> None:
    """A response body cut short (for blocks, logs or receipts) raises SourceUnavailable."""
    node = FakeNode()

    def handler(request: httpx.Request) -> httpx.Response:
        response = node.handle(request)
        if method.encode() in request.content:
            return httpx.Response(200, content=response.content[:-20])
        return response

    with pytest.raises(SourceUnavailable, match="not valid JSON"):
        scan(node, handler=handler)


# --- 6. trace probing -----------------------------------------------------------------
def _bribe(node: FakeNode) -> tuple[str, Address, Address, int]:
    """Make the MEV contract pay block 17173049's miner 0.01 ETH inside its first call."""
    tx, miner = node.blocks[FIRST]["transactions"][0], node.blocks[FIRST]["miner"]
    node.internal_calls[tx["hash"]] = [
        {"type": "CALL", "from": tx["to"], "to": miner, "value": hex(10**16)}]
    return tx["hash"], canonical_evm_address(tx["to"]), canonical_evm_address(miner), 10**16


def test_trace_api_is_probed_once_per_scanner() -> None:
    """With a node serving only debug_traceBlockByNumber, the first scan probes trace_block
    (refused) and then it, once each, and reports internal transfers; a second scan of the
    same adapter does not probe again."""
    node = FakeNode(traces=True)
    tx_hash, sender, recipient, amount = _bribe(node)
    with EvmAdapter("https://node.example/", expected_chain_id=1, retry=NO_WAIT,
                    transport=httpx.MockTransport(node.handle)) as adapter:
        first = adapter.scan(WATCHED, FIRST, LAST)
        assert node.count("debug_traceBlockByNumber", batched=False) == 1
        second = adapter.scan(WATCHED, FIRST, LAST)

    assert first == second
    assert first.traces == "geth"
    assert node.count("debug_traceBlockByNumber", batched=False) == 1
    assert node.count("debug_traceBlockByNumber", batched=True) == 2 * 2  # 2 blocks, 2 scans
    assert node.count("trace_block") == 1  # the one refused probe
    [internal] = [t for t in first.transfers if t.kind == "internal"]
    assert (internal.tx_hash, internal.trace_path, internal.sender, internal.recipient,
            internal.amount, internal.block.height) == (tx_hash, "0", sender, recipient,
                                                        amount, FIRST)
    assert rows(dataclasses.replace(first, transfers=tuple(
        t for t in first.transfers if t.kind != "internal"))) == rows(baseline())


def test_missing_trace_api_is_probed_once_per_scanner() -> None:
    """With a node serving no trace API, the first scan probes the Geth and Parity methods
    once each, and a second scan probes neither."""
    node = FakeNode()
    with EvmAdapter("https://node.example/", expected_chain_id=1, retry=NO_WAIT,
                    transport=httpx.MockTransport(node.handle)) as adapter:
        first = adapter.scan(WATCHED, FIRST, LAST)
        second = adapter.scan(WATCHED, FIRST, LAST)
    assert first == second == baseline()
    assert (node.count("debug_traceBlockByNumber"), node.count("trace_block")) == (1, 1)


def test_block_not_found_during_the_probe_does_not_disable_traces() -> None:
    """Only an error about the method itself means "no trace API": a probe that fails with
    "block not found" propagates instead of turning traces off for good."""
    from chains.evm.scan import _NO_METHOD

    assert _NO_METHOD.search("the method debug_traceBlockByNumber does not exist/is not available")
    assert _NO_METHOD.search("Method not found")
    assert not _NO_METHOD.search("block #17173049 not found")
    assert not _NO_METHOD.search("header not available")


def test_large_watch_lists_skip_the_bloom_re_check() -> None:
    """Above BLOOM_RECHECK_MAX_WATCHED addresses the bloom cannot tell blocks apart, so no
    block is re-asked (balance continuity stays the safety net)."""
    from chains.evm.scan import BLOOM_RECHECK_MAX_WATCHED

    fillers = [canonical_evm_address("0x" + hashlib.sha256(b"f%d" % i).hexdigest()[:40])
               for i in range(BLOOM_RECHECK_MAX_WATCHED)]
    node = FakeNode(tamper_logs=_drop_logs_of_last(by_hash_too=False))
    result = scan(node, WATCHED + fillers)
    assert result.rechecked_blocks == 0
    assert not [p for m, p, _ in node.calls if m == "eth_getLogs" and "blockHash" in p[0]]


def test_bloom_mask_of_an_address_whose_bits_coincide() -> None:
    """An address two of whose three bloom bits are the same bit is still found (the mask
    ORs the bits; adding them carried into a wrong bit)."""
    from chains.evm.bloom import bloom_bits, bloom_suggests_transfers
    from chains.evm.logs import TRANSFER_TOPIC

    address = canonical_evm_address("0xD8823F3E1Effb8F0BE237844C7D28C1c2f90D6c4")
    topic = bytes(12) + bytes.fromhex(address[2:])
    assert len(set(bloom_bits(topic))) == 2
    bloom = bytearray(256)
    for item in (bytes.fromhex(TRANSFER_TOPIC[2:]), topic):
        for index, mask in bloom_bits(item):
            bloom[index] |= mask
    assert bloom_suggests_transfers(bytes(bloom), [address])


# --- inconsistent links ---------------------------------------------------------------
ZERO_HASH = "0x" + "00" * 32


class ZeroParentInBatches(FakeNode):
    """Answers `block` with an all-zero parentHash inside batches only (a node whose batch
    path misreports a field its single-call path gets right)."""

    def _answer(self, item: dict[str, Any], batched: bool) -> dict[str, Any]:
        reply = super()._answer(item, batched)
        result = reply.get("result")
        if batched and item["method"] == "eth_getBlockByNumber" and isinstance(result, dict) \
                and int(result["number"], 16) == LAST:
            reply = {**reply, "result": {**result, "parentHash": ZERO_HASH}}
        return reply


def test_block_with_inconsistent_links_is_read_again_alone() -> None:
    """A block whose parent hash does not match is re-read alone with its parent; when the
    single answers link, the scan goes on with them (same transfers as the baseline)."""
    node = ZeroParentInBatches()
    result = scan(node)
    assert result.blocks == baseline().blocks
    assert set(result.transfers) == set(baseline().transfers)
    singles = [p for m, p, b in node.calls if m == "eth_getBlockByNumber" and not b]
    assert sorted(int(p[0], 16) for p in singles) == [FIRST, LAST]


def test_block_whose_parent_is_wrong_even_alone_is_refused_naming_it() -> None:
    """Hardhat's EDR node once served an all-zero parentHash after `hardhat_mine`: the range
    is refused (so another source may be asked), and the message says which block has
    which parent where the hash of which block was expected; not "the chain moved"."""
    node = FakeNode()
    node.blocks[LAST]["parentHash"] = ZERO_HASH
    with pytest.raises(SourceUnavailable) as caught:
        scan(node)
    first_hash = raw_block(FIRST)["hash"]
    assert f"block {LAST} has parent {ZERO_HASH}, expected the hash of block {FIRST} " \
           f"({first_hash})" in caught.value.user_message
    assert "moved" not in caught.value.user_message


class ReplacedWhileScanning(FakeNode):
    """Serves another block at LAST to single calls (a reorg between the batch and the
    re-read)."""

    def block(self, tag: str, full: bool) -> Any:
        block = super().block(tag, full)
        if block is not None and int(tag, 16) == LAST and self.calls[-1][2] is False:
            return {**block, "hash": "0x" + "ee" * 32}
        return block


def test_block_replaced_between_the_batch_and_the_re_read_is_the_chain_moving() -> None:
    """When the re-read block has another hash, the chain moved: the scan is refused saying
    so, with both hashes."""
    node = ReplacedWhileScanning()
    node.blocks[LAST]["parentHash"] = ZERO_HASH
    with pytest.raises(SourceUnavailable, match="the chain moved during the scan") as caught:
        scan(node)
    assert "0x" + "ee" * 32 in caught.value.user_message
