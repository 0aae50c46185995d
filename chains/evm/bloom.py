"""The 2048-bit logs bloom of an EVM block: which addresses and topics it may hold.

No I/O. A bloom gives false positives, never false negatives: `bloom_may_contain` False
means the item is certainly absent. A scan uses `bloom_suggests_transfers` to tell which
blocks may hold a `Transfer` log naming a watched wallet; native value and traces leave
no trace in the bloom.
"""

from __future__ import annotations

from collections.abc import Iterable

from eth_hash.auto import keccak

from chains.evm.logs import TRANSFER_TOPIC
from chains.types import Address


# --- logs bloom -----------------------------------------------------------------------
def bloom_bits(item: bytes) -> tuple[tuple[int, int], ...]:
    """Return the (byte index, mask) pairs that `item` (a 20-byte address or 32-byte topic)
    sets in a 2048-bit logs bloom. Computing them once lets a scan test many blocks."""
    digest = keccak(item)
    bits = (int.from_bytes(digest[i:i + 2], "big") & 2047 for i in (0, 2, 4))
    return tuple((255 - bit // 8, 1 << (bit % 8)) for bit in bits)


def bloom_has(bloom: bytes, bits: tuple[tuple[int, int], ...]) -> bool:
    """Return True when every bit of `bits` is set in `bloom` (the item may be present)."""
    return all(bloom[index] & mask for index, mask in bits)


def bloom_may_contain(bloom: bytes, item: bytes) -> bool:
    """Return False when `item` (a 20-byte address or 32-byte topic) is certainly absent
    from the 2048-bit logs bloom, True when it may be present."""
    return bloom_has(bloom, bloom_bits(item))


_TRANSFER_BITS = bloom_bits(bytes.fromhex(TRANSFER_TOPIC[2:]))


def watched_bloom_bits(watched: Iterable[Address]) -> list[int]:
    """Each watched address (as a 32-byte topic) as a 2048-bit mask of its bloom bits, for
    testing many blocks quickly (see bloom_suggests_transfers)."""
    return [_mask(bloom_bits(bytes(12) + bytes.fromhex(a[2:]))) for a in watched]


def _mask(bits: tuple[tuple[int, int], ...]) -> int:
    value = 0
    for index, mask in bits:
        value |= mask << (8 * (255 - index))  # OR, not +: two of the three bits may coincide
    return value


def bloom_suggests_transfers(bloom: bytes, watched: Iterable[Address] | None = None, *,
                             bits: list[int] | None = None) -> bool:
    """Return True when the bloom may hold a `Transfer` log naming any watched address
    (as a 32-byte topic). Pass precomputed `bits` (watched_bloom_bits) to test many blocks.
    Native value and traces leave no trace in the bloom."""
    if not bloom_has(bloom, _TRANSFER_BITS):
        return False
    value = int.from_bytes(bloom, "big")
    masks = bits if bits is not None else watched_bloom_bits(watched or ())
    return any(value & mask == mask for mask in masks)
