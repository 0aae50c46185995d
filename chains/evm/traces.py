"""Pure decoding of EVM call traces into `internal` transfers (ETH moved by contract calls).

Two formats: Geth's `debug_traceBlockByNumber` with the `callTracer` (a tree of frames
per transaction) and Parity/Erigon `trace_block` (a flat list of frames addressed by
`traceAddress`). Both give the same observations: one per value-moving frame below the
transaction's top-level frame (that one is the `native` transfer), with `trace_path` the
frame's dot-joined child indices ("0.1"). CALLCODE moves value from a contract to
itself and DELEGATECALL/STATICCALL move none, so only CALL, CREATE, CREATE2 and
SELFDESTRUCT count. A frame that errored, or lies beneath one that did (including a
failed transaction), moved nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chains.errors import DecodeError
from chains.evm.fields import evm_address, field, hex_hash, hex_quantity
from chains.types import Address, BaseUnits, ChainHead, TransferObservation

_GETH_MOVING = frozenset({"CALL", "CREATE", "CREATE2", "SELFDESTRUCT"})
_PARITY_SELFDESTRUCT = frozenset({"suicide", "selfdestruct"})
Path = tuple[int, ...]


Moved = tuple[Address, Address, int]
"""What a frame moved: (sender, recipient, wei)."""


def _internal(block: ChainHead, tx_hash: str, path: Path, moved: Moved,
              source: str) -> TransferObservation:
    """The `internal` observation of a frame that moved value."""
    sender, recipient, value = moved
    return TransferObservation(
        kind="internal", block=block, tx_hash=tx_hash, log_index=None, sender=sender,
        recipient=recipient, contract=None, amount=BaseUnits(value), source=source,
        trace_path=".".join(map(str, path)))


def _address(raw: Any, key: str, where: str, source: str) -> Address:
    return evm_address(field(raw, key, where, source), f"{where}.{key}", source)


# --- Geth callTracer ------------------------------------------------------------------
def internal_transfers_geth(raw: Any, block: ChainHead, source: str,
                            tx_hashes: Sequence[str] | None = None
                            ) -> list[TransferObservation]:
    """Return the internal transfers of a `debug_traceBlockByNumber` callTracer result.

    Each item's transaction is its `txHash`, else the hash at the same position in
    `tx_hashes` (the block's transactions in order). Raises DecodeError for a malformed
    frame, a failed trace item, a count or hash that does not match `tx_hashes`, a
    value-moving frame without `value` (old tracers omit a SELFDESTRUCT's), or an item
    whose transaction cannot be known.
    """
    if not isinstance(raw, list):
        raise DecodeError(source, "traces", "not a list")
    if tx_hashes is not None and len(tx_hashes) != len(raw):
        raise DecodeError(source, "traces", f"{len(raw)} traces for {len(tx_hashes)} "
                                            "transactions")
    out: list[TransferObservation] = []
    for position, item in enumerate(raw):
        where = f"traces[{position}]"
        if isinstance(item, dict) and "result" not in item and "error" in item:
            raise DecodeError(source, where, f"tracing failed: {item['error']!r:.200}")
        tx_hash = _geth_tx_hash(item, position, tx_hashes, where, source)
        out += _geth_tree(field(item, "result", where, source), tx_hash, block,
                          f"{where}.result", source)
    return out


def _geth_tx_hash(item: Any, position: int, tx_hashes: Sequence[str] | None, where: str,
                  source: str) -> str:
    """The transaction of a trace item: its own `txHash`, checked against `tx_hashes`."""
    expected = None if tx_hashes is None else tx_hashes[position].lower()
    given = item.get("txHash") if isinstance(item, dict) else None
    if given is None:
        if expected is None:
            raise DecodeError(source, f"{where}.txHash",
                              "missing, and no transaction list to pair the trace with")
        return expected
    tx_hash = hex_hash(given, f"{where}.txHash", source)
    if expected is not None and tx_hash != expected:
        raise DecodeError(source, f"{where}.txHash", f"trace of {tx_hash} at the position "
                                                     f"of transaction {expected}")
    return tx_hash


def _geth_tree(root: Any, tx_hash: str, block: ChainHead, where: str,
               source: str) -> list[TransferObservation]:
    """Walk one transaction's frames depth first, children in order, without recursion
    (call depth reaches 1024)."""
    out: list[TransferObservation] = []
    stack: list[tuple[Any, Path, str, bool]] = [(root, (), where, False)]
    while stack:
        frame, path, at, reverted = stack.pop()
        kind = field(frame, "type", at, source)
        if not isinstance(kind, str):
            raise DecodeError(source, f"{at}.type", f"not a string: {kind!r:.80}")
        failed = reverted or bool(frame.get("error"))
        if kind.upper() in _GETH_MOVING:
            value = hex_quantity(field(frame, "value", at, source), f"{at}.value", source)
            if path and value > 0 and not failed:
                moved = (_address(frame, "from", at, source), _address(frame, "to", at, source),
                         value)
                out.append(_internal(block, tx_hash, path, moved, source))
        calls = frame.get("calls") or []
        if not isinstance(calls, list):
            raise DecodeError(source, f"{at}.calls", "not a list")
        stack += [(child, (*path, i), f"{at}.calls[{i}]", failed)
                  for i, child in reversed(list(enumerate(calls)))]
    return out


# --- Parity / Erigon trace_block ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _ParityTrace:
    tx_hash: str | None
    path: Path
    kind: str
    errored: bool
    raw: dict[str, Any]
    where: str


def internal_transfers_parity(raw: Any, block: ChainHead,
                              source: str) -> list[TransferObservation]:
    """Return the internal transfers of a `trace_block` result (block rewards excluded).

    Raises DecodeError for a malformed trace, or one whose `blockHash` or `blockNumber`
    is not `block`'s ("trace of another block").
    """
    if not isinstance(raw, list):
        raise DecodeError(source, "traces", "not a list")
    traces = [_parity_trace(t, f"traces[{i}]", block, source) for i, t in enumerate(raw)]
    errored = {(t.tx_hash, t.path) for t in traces if t.errored}
    out: list[TransferObservation] = []
    for t in traces:
        value = _parity_value(t, source)
        if t.tx_hash is None or not value or not t.path:
            continue
        if any((t.tx_hash, t.path[:depth]) in errored for depth in range(len(t.path) + 1)):
            continue
        sender, recipient = _parity_ends(t, source)
        out.append(_internal(block, t.tx_hash, t.path, (sender, recipient, value), source))
    return out


def _parity_trace(raw: Any, where: str, block: ChainHead, source: str) -> _ParityTrace:
    """One trace's identity, checked to belong to `block`."""
    number = field(raw, "blockNumber", where, source)
    block_hash = hex_hash(field(raw, "blockHash", where, source), f"{where}.blockHash", source)
    if block_hash != block.hash.lower() or number != block.height or isinstance(number, bool):
        raise DecodeError(source, f"{where}.blockHash", f"trace of another block: {number!r} "
                          f"{block_hash}, expected {block.height} {block.hash}")
    address = field(raw, "traceAddress", where, source)
    if not isinstance(address, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in address):
        raise DecodeError(source, f"{where}.traceAddress", "not a list of indices")
    kind = field(raw, "type", where, source)
    if not isinstance(kind, str):
        raise DecodeError(source, f"{where}.type", f"not a string: {kind!r:.80}")
    tx_hash = field(raw, "transactionHash", where, source)
    return _ParityTrace(
        tx_hash=None if tx_hash is None else hex_hash(tx_hash, f"{where}.transactionHash",
                                                      source),
        path=tuple(address), kind=kind.lower(), errored=bool(raw.get("error")), raw=raw,
        where=where)


def _parity_value(trace: _ParityTrace, source: str) -> int | None:
    """Wei a trace moved: 0 for CALLCODE, DELEGATECALL and STATICCALL, None for kinds that
    carry no value (rewards are not transfers)."""
    at = f"{trace.where}.action"
    key = "balance" if trace.kind in _PARITY_SELFDESTRUCT else "value"
    if trace.kind not in ("call", "create") and key == "value":
        return None
    action = field(trace.raw, "action", trace.where, source)
    value = hex_quantity(field(action, key, at, source), f"{at}.{key}", source)
    if trace.kind == "call" and field(action, "callType", at, source) != "call":
        return 0
    return value


def _parity_ends(trace: _ParityTrace, source: str) -> tuple[Address, Address]:
    """(sender, recipient) of a value-moving trace."""
    at = f"{trace.where}.action"
    action = trace.raw["action"]
    if trace.kind == "create":
        result = field(trace.raw, "result", trace.where, source)
        return (_address(action, "from", at, source),
                _address(result, "address", f"{trace.where}.result", source))
    if trace.kind in _PARITY_SELFDESTRUCT:
        return (_address(action, "address", at, source),
                _address(action, "refundAddress", at, source))
    return _address(action, "from", at, source), _address(action, "to", at, source)
