"""Strict parsers for fields of UTXO sources' answers (Core RPC and Esplora alike)."""

from __future__ import annotations

from typing import Any

from chains.errors import DecodeError
from chains.limits import MAX_COUNT, MAX_HEIGHT, MAX_TIMESTAMP, max_supply_sats


def non_negative_int(value: Any, source: str, field: str, limit: int = MAX_COUNT) -> int:
    """Return `value` if it is a JSON integer in 0..`limit` (default 2**63 - 1); raises
    DecodeError naming `field` and the source. The one checked parser of UTXO quantities:
    heights, timestamps and amounts go through the helpers below."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DecodeError(source, field, f"not a non-negative integer: {_shown(value)}")
    if value > limit:
        raise DecodeError(source, field, f"{_shown(value)} is out of range (at most {limit})")
    return value


def checked_height(value: Any, source: str, field: str) -> int:
    """A block height (or an output index): an integer in 0..2**31 - 1. Raises DecodeError."""
    return non_negative_int(value, source, field, MAX_HEIGHT)


def checked_time(value: Any, source: str, field: str) -> int:
    """A block's Unix time, at most year 9999. Raises DecodeError."""
    return non_negative_int(value, source, field, MAX_TIMESTAMP)


def checked_sats(value: Any, source: str, field: str, network: str | None) -> int:
    """An amount in base units, at most the coin's whole supply on `network` (21e6 BTC,
    84e6 LTC; the larger when unknown). Raises DecodeError."""
    return non_negative_int(value, source, field, max_supply_sats(network))


def _shown(value: Any) -> str:
    """`value` for a message, at most ~80 characters (a 4,000-digit number is cut)."""
    text = str(value) if not isinstance(value, int) or value.bit_length() < 4000 else "a huge int"
    return repr(text[:80]) + (f"... ({len(text)} characters)" if len(text) > 80 else "")


def block_hash(value: Any, source: str, field: str) -> str:
    """Return a 32-byte hex block hash, lowercased; raises DecodeError naming `field`."""
    if not isinstance(value, str) or len(value) != 64 or not is_hex(value):
        raise DecodeError(source, field, f"not a 32-byte hex block hash: {str(value)[:80]!r}")
    return value.lower()


def is_hex(value: str) -> bool:
    """True for a string of hex digit pairs (no whitespace)."""
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return value.isascii() and " " not in value
