"""PURE: what the EVM adapter makes of a source's replies to its reads (no I/O).

Each (wallet, asset) pair read becomes an `Outcome`, the amount or why it could not be
read, from a Multicall3 `aggregate3` result (`decode_aggregate_reply`, `outcome_of`) or from
a direct `eth_getBalance` / `balanceOf` reply (`direct_outcome`), and then an
observation (`observation_of`); `NoCode` and `CannotRun` say that Multicall3 cannot
serve a read at all; `raise_if_source_failed` tells an error about the source (the
pinned block's state is gone, the source throttles) from one about the call; and
`proof_hash` reads the block hash that proves a read pinned by number (`is_hash`).
The reads themselves (probing and pinning, batching, splitting a failed aggregate3)
are chains.evm.adapter.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from chains.errors import DecodeError, SourceUnavailable
from chains.evm.fields import hex_quantity
from chains.evm.multicall import (
    BalanceReadError,
    CallResult,
    MulticallDecodeError,
    decode_aggregate3,
    decode_balance,
    decode_uint256,
)
from chains.jsonrpc import RpcError
from chains.types import Address, AssetRef, BalanceObservation, BaseUnits, ChainHead

Outcome: TypeAlias = int | str
"""A balance read: the amount in base units, or why it could not be read."""

# Errors that mean the pinned block's state cannot be read at all: splitting an
# aggregate3 or reporting per wallet would not help. -32001: resource not found
# (anvil, Nethermind), -32602: invalid params (a block parameter the node rejects).
_BLOCK_GONE_CODES = frozenset({-32001, -32602})
_BLOCK_GONE_HINTS = ("not found", "missing trie node", "unknown block", "pruned", "unavailable")


def proof_hash(reply: Any) -> str:
    if isinstance(reply, RpcError) or not isinstance(reply, dict):
        return f"no block ({reply})"
    value = reply.get("hash")
    return str(value).lower() if is_hash(value) else f"no hash ({str(value)[:80]})"


def decode_aggregate_reply(reply: Any, expected: int, source: str) -> list[CallResult]:
    """Return aggregate3's items. Raises DecodeError if the reply does not parse."""
    try:
        return decode_aggregate3(_hex_bytes(reply), expected)
    except (MulticallDecodeError, ValueError) as exc:
        raise DecodeError(source, "aggregate3 result", str(exc)) from None


def direct_outcome(reply: Any, native: bool, source: str) -> Outcome:
    method = "eth_getBalance" if native else "balanceOf"
    if isinstance(reply, RpcError):
        raise_if_source_failed(reply, source)
        return f"{method} failed: {reply.message}"
    if native:  # a malformed or out-of-range balance is the source's fault: fail over
        return hex_quantity(reply, "eth_getBalance result", source)
    try:
        return decode_uint256(_hex_bytes(reply))
    except ValueError as exc:
        return f"{method} failed: {exc}"


def raise_if_source_failed(error: RpcError, source: str) -> None:
    """Raise SourceUnavailable when `error` is about the source, not the call: the pinned
    block's state is missing, or the source throttles (another source can read it)."""
    text = error.message.lower()
    if error.code == 3 or "revert" in text:
        return
    if error.rate_limited:
        raise SourceUnavailable(source, f"rate limited: {error}")
    if error.code in _BLOCK_GONE_CODES or any(hint in text for hint in _BLOCK_GONE_HINTS):
        raise SourceUnavailable(source, f"pinned block unavailable: {error.message}")


def observation_of(
    address: Address, asset: AssetRef, block: ChainHead, outcome: Outcome, source: str
) -> BalanceObservation:
    if isinstance(outcome, str):
        return BalanceObservation(address, asset, None, block, source, error=outcome)
    return BalanceObservation(address, asset, BaseUnits(outcome), block, source)


class NoCode(Exception):
    """An aggregate3 eth_call returned empty data: no Multicall3 code at the block."""


class CannotRun(Exception):
    """The node's EVM cannot run the Multicall3 code (an invalid opcode)."""


def outcome_of(result: CallResult | str) -> Outcome:
    if isinstance(result, str):
        return result
    try:
        return decode_balance(result)
    except BalanceReadError as exc:
        return str(exc)


def _hex_bytes(value: Any) -> bytes:
    """Return `0x`-prefixed hex data as bytes. Raises ValueError otherwise."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"not hex data: {str(value)[:80]!r}")
    return bytes.fromhex(value[2:])


def is_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 66 and _is_hex(value)


def _is_hex(value: str) -> bool:
    try:
        bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        return False
    return value.startswith("0x")
