"""Transfer history of watched wallets over a block range (the I/O half; decoding is
in `chains.evm.decode`, `chains.evm.logs` and `chains.evm.bloom`).

Per range: full blocks in JSON-RPC batches (native value, withdrawals, parent hashes);
ERC-20 `Transfer` logs with the watched addresses in topic 1 and in topic 2, for any
token contract, with ranges split when a provider refuses them; receipts of the
transactions that touch a watched wallet (success and fees), and of every transaction
of a block whose fee recipient is watched (its priority-fee credit, a `reward`); internal value
transfers from whichever trace API the source offers (probed once). Every log must
belong to the block the scan read; a block whose bloom says a watched Transfer may be
present while the logs query returned none is re-asked by block hash.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from chains.errors import DecodeError, SourceUnavailable
from chains.evm.bloom import bloom_suggests_transfers, watched_bloom_bits
from chains.evm.decode import (
    ETHEREUM_FEES,
    DecodedBlock,
    FeeRules,
    decode_block,
    decode_receipts,
    fee_payments,
    fee_recipient_credit,
    native_transfers,
)
from chains.evm.logs import token_transfers
from chains.evm.traces import internal_transfers_geth, internal_transfers_parity
from chains.jsonrpc import JsonRpcClient, RpcError, RpcErrorResponse
from chains.types import (
    Address,
    BlockLink,
    FeePayment,
    ScanResult,
    TraceMode,
    TransferObservation,
)

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
ADDRESSES_PER_FILTER = 500
BLOCKS_PER_BATCH = 100
UNFILTERED_ABOVE_FILTERS = 8
UNFILTERED_MAX_BLOCKS = 16
"""With more filters than this (over 2,000 watched addresses) and a range of at most
UNFILTERED_MAX_BLOCKS blocks (a steady cycle's), the scan asks for every Transfer log of
the range in one query and keeps the watched wallets' itself: one call instead of one per
500 addresses a side (400 for 100,000 wallets). A busy mainnet block has a few thousand
Transfer logs (well under a megabyte); a provider that refuses the range gets it halved.
Longer ranges (a catch-up) keep the address filters."""
BLOOM_RECHECK_MAX_WATCHED = 64
"""Above this many watched addresses a 2048-bit bloom matches some watched address in
nearly every busy block (measured: 4-11% per random address on mainnet blocks), so the
re-check would re-ask almost every block; balance continuity remains the safety net."""
# Alchemy-style refusals name a range that would work: "... [0x1a2b, 0x1a3f]".
_SUGGESTED_RANGE = re.compile(r"\[\s*(0x[0-9a-fA-F]+)\s*,\s*(0x[0-9a-fA-F]+)\s*\]")
# Only errors about the method itself mean "no trace API"; "block not found" does not.
_NO_METHOD = re.compile(r"(method|namespace|api)\b.*\b(not (found|supported|available|exist|"
                        r"enabled)|does not exist|unsupported|disabled)|unknown method|"
                        r"unsupported method", re.IGNORECASE)


NativesFees = tuple[list[TransferObservation], list[FeePayment]]


class TraceFeature(Protocol):
    """Where the trace API found is remembered (shared by the adapters of one source)."""

    trace_mode: TraceMode | None


@dataclass
class _Remembered:
    trace_mode: TraceMode | None = None


class RangeScanner:
    """Scans block ranges through one JSON-RPC client; remembers the trace API it found
    (in `features`, shared with later scanners of the same source)."""

    def __init__(self, client: JsonRpcClient, features: TraceFeature | None = None,
                 fees: FeeRules = ETHEREUM_FEES) -> None:
        self._client = client
        self._features = features if features is not None else _Remembered()
        self._fees = fees

    @property
    def trace_mode(self) -> TraceMode | None:
        """The trace API the source serves (None until probed)."""
        return self._features.trace_mode

    @trace_mode.setter
    def trace_mode(self, mode: TraceMode | None) -> None:
        self._features.trace_mode = mode

    @property
    def source(self) -> str:
        return self._client.source

    def scan(self, watched: Collection[Address], start: int, end: int) -> ScanResult:
        """Return the transfers and fees of `watched` in blocks start..end (inclusive).

        Raises SourceUnavailable when any part of the range cannot be read (the caller
        must not advance past it), DecodeError for a malformed or inconsistent answer.
        """
        if start > end:
            return ScanResult((), (), (), self.trace_mode or "none", 0)
        watch = frozenset(watched)
        # The node answers the logs and traces queries while this thread decodes blocks.
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="scan") as pool:
            logs_job = pool.submit(self._logs, watch, start, end)
            traces_job = pool.submit(self._raw_traces, start, end, bool(watch))
            blocks, tx_hashes, native_jobs = self._blocks(start, end, watch, pool)
            logs, (mode, raw_traces) = logs_job.result(), traces_job.result()
            natives: list[TransferObservation] = []
            fees: list[FeePayment] = []
            for job in native_jobs:
                batch_natives, batch_fees = job.result()
                natives += batch_natives
                fees += batch_fees
        blocks = self._linked(blocks)
        expected = {b.head.height: b.head for b in blocks}
        rechecked, extra = self._recheck_blooms(blocks, watch, logs)
        tokens = token_transfers(logs + extra, expected, self.source)
        internals = self._internals(blocks, tx_hashes, watch, mode, raw_traces)
        withdrawals = [w for b in blocks for w in b.withdrawals if w.recipient in watch]
        transfers = [t for t in tokens if t.sender in watch or t.recipient in watch]
        transfers += natives + internals + withdrawals
        transfers.sort(key=lambda t: (t.block.height, t.key))
        links = tuple(BlockLink(b.head.height, b.head.hash, b.parent_hash, b.head.timestamp)
                      for b in blocks)
        return ScanResult(links, tuple(transfers), tuple(fees), self.trace_mode or "none",
                          rechecked)

    # --- blocks ------------------------------------------------------------------------
    def _blocks(self, start: int, end: int, watch: frozenset[Address], pool: Executor
                ) -> tuple[list[DecodedBlock], dict[int, list[str]], list[Future[NativesFees]]]:
        """Decode every block of the range; return them, each block's transaction hashes
        (in order, for pairing geth traces), and the jobs reading the receipts of each
        batch's watched transactions. Batches are fetched ahead of decoding."""
        out: list[DecodedBlock] = []
        receipts: list[Future[NativesFees]] = []
        hashes: dict[int, list[str]] = {}
        batches = [(first, min(end, first + BLOCKS_PER_BATCH - 1))
                   for first in range(start, end + 1, BLOCKS_PER_BATCH)]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="blocks") as fetcher:
            jobs = [fetcher.submit(self._client.batch, [("eth_getBlockByNumber", [hex(n), True])
                                                        for n in range(first, last + 1)])
                    for first, last in batches]
            try:
                for (first, last), job in zip(batches, jobs, strict=True):
                    batch = []
                    for height, reply in zip(range(first, last + 1), job.result(), strict=True):
                        block, hashes[height] = self._decoded(height, reply)
                        batch.append(block)
                    receipts.append(pool.submit(self._natives_and_fees, batch, watch))
                    out += batch
            except BaseException:
                for fetch in jobs:  # a failed range: fetch nothing more of it
                    fetch.cancel()
                for read in receipts:
                    read.cancel()
                raise
        return out, hashes, receipts

    def _linked(self, blocks: list[DecodedBlock]) -> list[DecodedBlock]:
        """`blocks`, checked to form one chain. A block whose parent hash is not the hash of
        the block before it is read again, alone, with its parent: a batch answer can be
        wrong where a single one is not. Raises SourceUnavailable naming what is wrong
        when the blocks read alone still do not link, or were replaced meanwhile (the
        caller may then ask another source)."""
        for position in range(1, len(blocks)):
            parent, child = blocks[position - 1], blocks[position]
            if child.parent_hash == parent.head.hash.lower():
                continue
            again = [self._decoded(b.head.height, self._client.call(
                "eth_getBlockByNumber", [hex(b.head.height), True]))[0]
                for b in (parent, child)]
            for first, second in zip((parent, child), again, strict=True):
                if first.head.hash != second.head.hash:
                    raise SourceUnavailable(self.source, f"the chain moved during the scan: "
                                            f"block {first.head.height} was {first.head.hash}, "
                                            f"is now {second.head.hash}")
            if again[1].parent_hash != again[0].head.hash.lower():
                raise SourceUnavailable(self.source, link_problem(again[0], again[1]))
            blocks[position - 1], blocks[position] = again
        return blocks

    def _decoded(self, height: int, reply: Any
                 ) -> tuple[DecodedBlock, list[str]]:
        if isinstance(reply, RpcError) or reply is None:
            raise SourceUnavailable(self.source, f"block {height} not served ({reply})")
        block = decode_block(reply, self.source)
        if block.head.height != height:
            raise SourceUnavailable(self.source, f"asked for block {height}, got "
                                                 f"{block.head.height}")
        return block, [t.hash for t in block.transactions]

    # --- logs ---------------------------------------------------------------------------
    def _logs(self, watch: frozenset[Address], start: int, end: int) -> list[Any]:
        """The Transfer logs of `watch` in start..end. Every address chunk's filter goes
        out in one JSON-RPC batch (one round trip for 10,000 wallets, not 40 one after
        the other); a filter the provider refuses is retried alone, halving its range."""
        if not watch:
            return []
        filters = _topic_filters(sorted(watch))
        if len(filters) > UNFILTERED_ABOVE_FILTERS and end - start < UNFILTERED_MAX_BLOCKS:
            return self._logs_in_range([TRANSFER_TOPIC], start, end)
        replies = self._client.batch([("eth_getLogs", [_log_query(topics, start, end)])
                                      for topics in filters])
        found: dict[tuple[str, str], Any] = {}
        for topics, reply in zip(filters, replies, strict=True):
            logs = self._logs_in_range(topics, start, end, reply) \
                if isinstance(reply, RpcError) else _log_objects(reply, self.source)
            for log in logs:
                found[(str(log.get("blockHash")), str(log.get("logIndex")))] = log
        return list(found.values())

    def _logs_in_range(self, topics: list[Any], start: int, end: int,
                       refused: RpcError | None = None) -> list[Any]:
        """eth_getLogs over start..end, halving the range while the provider refuses it
        (`refused`: its answer to the whole range, already asked in a batch)."""
        pending = [(start, end)]
        if refused is not None:
            if start == end:
                raise RpcErrorResponse(self.source, refused)
            middle = _split_point(refused.message, start, end)
            pending = [(middle + 1, end), (start, middle)]
        logs: list[Any] = []
        while pending:
            first, last = pending.pop()
            try:
                result = self._client.call("eth_getLogs", [_log_query(topics, first, last)])
            except RpcErrorResponse as exc:
                if first == last:
                    raise
                middle = _split_point(exc.error.message, first, last)
                pending += [(middle + 1, last), (first, middle)]
                continue
            logs += _log_objects(result, self.source)
        return logs

    def _recheck_blooms(self, blocks: Sequence[DecodedBlock], watch: frozenset[Address],
                        logs: Sequence[Any]) -> tuple[int, list[Any]]:
        """Re-ask, by block hash, the blocks whose bloom says a watched Transfer may be in
        them while the range query returned none for them."""
        if len(watch) > BLOOM_RECHECK_MAX_WATCHED:
            return 0, []
        with_logs = {str(log.get("blockHash")).lower() for log in logs}
        bits = watched_bloom_bits(watch)
        suspects = [b for b in blocks if b.head.hash.lower() not in with_logs
                    and bloom_suggests_transfers(b.logs_bloom, bits=bits)]
        if not suspects:
            return 0, []
        requests = [("eth_getLogs", [{"blockHash": b.head.hash, "topics": topics}])
                    for b in suspects for topics in _topic_filters(sorted(watch))]
        extra: list[Any] = []
        for reply in self._client.batch(requests):
            if isinstance(reply, RpcError):
                raise SourceUnavailable(self.source, f"logs re-check failed: {reply}")
            extra += _log_objects(reply, self.source)
        return len(suspects), extra

    # --- native value and fees ----------------------------------------------------------
    def _natives_and_fees(self, blocks: Sequence[DecodedBlock], watch: frozenset[Address]
                          ) -> NativesFees:
        # a block whose fee recipient is watched needs every receipt: its credit
        touching = [(b, list(b.transactions) if b.miner in watch else
                     [t for t in b.transactions
                      if t.sender in watch or (t.recipient is not None and
                                               t.recipient in watch)])
                    for b in blocks]
        wanted = [(b, txs) for b, txs in touching if txs]
        hashes = [t.hash for _, txs in wanted for t in txs]
        if not hashes:
            return [], []
        replies = iter(self._client.batch([("eth_getTransactionReceipt", [h]) for h in hashes]))
        natives: list[TransferObservation] = []
        fees: list[FeePayment] = []
        for block, txs in wanted:
            raw = [next(replies) for _ in txs]
            if any(isinstance(r, RpcError) or r is None for r in raw):
                raise SourceUnavailable(self.source, f"receipts of block {block.head.height} "
                                                     "not served")
            receipts = decode_receipts(raw, block.head, self.source, self._fees)
            only = dataclasses.replace(block, transactions=tuple(txs))
            natives += [t for t in native_transfers(only, receipts, self.source)
                        if t.sender in watch or t.recipient in watch]
            fees += [f for f in fee_payments(only, receipts) if f.payer in watch]
            credit = fee_recipient_credit(only, receipts) if block.miner in watch else None
            if credit is not None:
                natives.append(credit)
        return natives, fees

    # --- internal transfers -------------------------------------------------------------
    def _raw_traces(self, start: int, end: int, wanted: bool) -> tuple[TraceMode, list[Any]]:
        """The trace API's answers for every block of the range (probing the API once)."""
        if not wanted:
            return self.trace_mode or "none", []
        mode = self.trace_mode or self._probe(start)
        if mode == "none":
            return mode, []
        method, extra = (("debug_traceBlockByNumber", [{"tracer": "callTracer"}])
                         if mode == "geth" else ("trace_block", []))
        heights = range(start, end + 1)
        return mode, self._client.batch([(method, [hex(h), *extra]) for h in heights])

    def _internals(self, blocks: Sequence[DecodedBlock], tx_hashes: dict[int, list[str]],
                   watch: frozenset[Address], mode: TraceMode,
                   replies: Sequence[Any]) -> list[TransferObservation]:
        if mode == "none" or not replies:
            return []
        lowered = _lowered(watch)
        out: list[TransferObservation] = []
        for block, reply in zip(blocks, replies, strict=True):
            if isinstance(reply, RpcError) or reply is None:
                raise SourceUnavailable(self.source, f"traces of block {block.head.height} "
                                                     f"not served ({reply})")
            hashes = tx_hashes[block.head.height]
            decoded = (internal_transfers_geth(reply, block.head, self.source, hashes)
                       if mode == "geth" else
                       internal_transfers_parity(_parity_relevant(reply, lowered), block.head,
                                                 self.source))
            out += [t for t in decoded if t.sender in watch or t.recipient in watch]
        return out

    def _probe(self, height: int) -> TraceMode:
        """Find which trace API the source serves (once per scanner)."""
        # trace_block first: where a node serves both (Erigon, Reth, anvil) it is flat and
        # measured ~10x cheaper per block than re-executing with geth's callTracer.
        probes: list[tuple[TraceMode, str, list[Any]]] = [
            ("parity", "trace_block", [hex(height)]),
            ("geth", "debug_traceBlockByNumber", [hex(height), {"tracer": "callTracer"}]),
        ]
        for mode, method, params in probes:
            try:
                self._client.call(method, params)
            except RpcErrorResponse as exc:
                if exc.error.code == -32601 or _NO_METHOD.search(exc.error.message):
                    continue
                raise
            self.trace_mode = mode
            return mode
        self.trace_mode = "none"
        return "none"


def link_problem(parent: DecodedBlock, child: DecodedBlock) -> str:
    """What is wrong when `child` does not extend `parent` (the block before it)."""
    return (f"block {child.head.height} has parent {child.parent_hash}, expected the hash "
            f"of block {parent.head.height} ({parent.head.hash})")


def _parity_relevant(traces: Any, watched_lower: frozenset[str]) -> Any:
    """The trace_block items that can matter: frames that failed (their children moved
    nothing) and frames moving value to or from a watched address. Skipping the rest before
    decoding halves a scan's CPU time on busy blocks; malformed input is left whole for the
    decoder to reject."""
    if not isinstance(traces, list) or not all(isinstance(t, dict) for t in traces):
        return traces
    keep = []
    for trace in traces:
        action = trace.get("action")
        if trace.get("error") is not None or not isinstance(action, dict):
            keep.append(trace)
            continue
        ends = {str(action.get(k, "")).lower() for k in ("from", "to", "address",
                                                         "refundAddress")}
        if ends & watched_lower:
            keep.append(trace)
    return keep


def _log_query(topics: list[Any], first: int, last: int) -> dict[str, Any]:
    return {"fromBlock": hex(first), "toBlock": hex(last), "topics": topics}


def _log_objects(result: Any, source: str) -> list[dict[str, Any]]:
    """The logs of an eth_getLogs answer. Raises DecodeError unless it is a list of objects."""
    if not isinstance(result, list) or not all(isinstance(log, dict) for log in result):
        raise DecodeError(source, "eth_getLogs result", "expected a list of log objects")
    return result


def _split_point(message: str, first: int, last: int) -> int:
    """Where to split a refused range: the provider's suggested end, else the middle."""
    match = _SUGGESTED_RANGE.search(message)
    if match:
        suggested = int(match.group(2), 16)
        if first <= suggested < last:
            return suggested
    return (first + last) // 2


def _topic_filters(watched: Sequence[Address]) -> list[list[Any]]:
    """Transfer filters with the watched addresses as sender, then as recipient, chunked."""
    filters: list[list[Any]] = []
    for first in range(0, len(watched), ADDRESSES_PER_FILTER):
        padded = ["0x" + "0" * 24 + a[2:].lower() for a in watched[first:first +
                                                                    ADDRESSES_PER_FILTER]]
        filters += [[TRANSFER_TOPIC, padded], [TRANSFER_TOPIC, None, padded]]
    return filters


@lru_cache(maxsize=1)
def _lowered(watch: frozenset[Address]) -> frozenset[str]:
    """The watched addresses in lower case (trace addresses are compared so), computed
    once per set of watched wallets (the caller keeps one set per version of the books;
    a frozenset's hash is computed once)."""
    return frozenset(address.lower() for address in watch)
