"""Strict parsers for fields of UTXO sources' answers (Core RPC and Esplora alike)."""

from __future__ import annotations

from typing import Any

from chains.errors import DecodeError


def non_negative_int(value: Any, source: str, field: str) -> int:
    """Return `value` if it is a JSON integer ≥ 0; raises DecodeError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DecodeError(source, field, f"not a non-negative integer: {str(value)[:80]!r}")
    return value


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
