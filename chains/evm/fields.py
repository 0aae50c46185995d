"""Strict field helpers for EVM JSON-RPC payloads: an object's member, a quantity, hex
data, a 32-byte hash, an address.

No I/O. Each checks one raw JSON value and returns it typed (`int`, `bytes`, lowercase
hash text, an EIP-55 `Address`) or raises one `DecodeError` naming the field and the
source; no KeyError, ValueError or TypeError escapes. The decoders of blocks, receipts,
logs and traces (`chains.evm.decode`, `chains.evm.logs`, `chains.evm.traces`) are built on
them.
"""

from __future__ import annotations

import re
from typing import Any

from chains.errors import DecodeError, InvalidAddress
from chains.evm.address import canonical_evm_address
from chains.limits import EVM_HEX_DIGITS, UINT256_MAX
from chains.types import Address

_QUANTITY = re.compile(r"0x[0-9a-fA-F]+", re.ASCII)


# --- strict field helpers -------------------------------------------------------------
def field(raw: Any, key: str, where: str, source: str) -> Any:
    """Return `raw[key]`; raises DecodeError when `raw` is not an object or lacks `key`."""
    if not isinstance(raw, dict):
        raise DecodeError(source, where, f"expected a JSON object, got {type(raw).__name__}")
    if key not in raw:
        raise DecodeError(source, f"{where}.{key}", "missing")
    return raw[key]


def hex_quantity(value: Any, name: str, source: str, limit: int = UINT256_MAX) -> int:
    """Return the integer of a JSON-RPC quantity ("0x" plus 1 to 64 hex digits) that is at
    most `limit` (default: a uint256; pass MAX_HEIGHT for heights and indices,
    MAX_TIMESTAMP for block stamps). The one checked parser of EVM quantities.

    Raises DecodeError for anything else (ints, decimals, empty "0x", null, more than 64
    digits, checked before any conversion, or a value above `limit`).
    """
    if (not isinstance(value, str) or len(value) > 2 + EVM_HEX_DIGITS
            or not _QUANTITY.fullmatch(value)):
        shown = f"{value!r:.80}" if not isinstance(value, str) or len(value) <= 80 else \
            f"{value[:40]!r}... ({len(value)} characters)"
        raise DecodeError(source, name, f"not a hex quantity of at most {EVM_HEX_DIGITS} "
                          f"digits: {shown}")
    number = int(value, 16)
    if number > limit:
        raise DecodeError(source, name, f"{number} is out of range (at most {limit})")
    return number


def hex_data(value: Any, name: str, source: str, length: int | None = None) -> bytes:
    """Return the bytes of a JSON-RPC data string ("0x" plus an even number of hex digits).

    With `length`, the data must have exactly that many bytes. Raises DecodeError.
    """
    # bytes.fromhex in C, with a length check (it would skip whitespace), instead of a
    # regex over long strings: this ran ~100,000 times per 2,000-block scan.
    try:
        if not isinstance(value, str) or value[:2] != "0x":
            raise ValueError
        data = bytes.fromhex(value[2:])
        if 2 * len(data) != len(value) - 2:
            raise ValueError
    except ValueError:
        raise DecodeError(source, name, f"not hex data: {value!r:.80}") from None
    if length is not None and len(data) != length:
        raise DecodeError(source, name, f"expected {length} bytes, got {len(data)}")
    return data


def hex_hash(value: Any, name: str, source: str) -> str:
    """Return a 32-byte hash as lowercase "0x…" text; raises DecodeError otherwise."""
    return "0x" + hex_data(value, name, source, 32).hex()


def evm_address(value: Any, name: str, source: str) -> Address:
    """Return the EIP-55 form of an address field; raises DecodeError when it is not one."""
    if not isinstance(value, str):
        raise DecodeError(source, name, f"not an address: {value!r:.80}")
    try:
        return canonical_evm_address(value)
    except InvalidAddress as exc:
        raise DecodeError(source, name, exc.user_message) from None


def optional_address(value: Any, name: str, source: str) -> Address | None:
    """Return None for a JSON null, else the canonical address; raises DecodeError."""
    return None if value is None else evm_address(value, name, source)
