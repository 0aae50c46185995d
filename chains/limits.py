"""Range limits on quantities a source reports: a value outside them is a source error.

A source is untrusted. A 4,000-digit balance must be refused where it is parsed (as a
DecodeError naming the source), not crash the store, an export or a datetime later.
"""

from __future__ import annotations

UINT256_MAX = 2**256 - 1
"""The largest EVM word: balances, token amounts, values, gas fields."""

UINT64_MAX = 2**64 - 1
"""The largest EVM nonce, gas amount or withdrawal amount (in gwei)."""

EVM_HEX_DIGITS = 64
"""Hex digits of a uint256; a longer quantity string is refused before `int()`."""

MAX_HEIGHT = 2**31 - 1
"""The largest block height (and log, transaction or output index) accepted."""

MAX_TIMESTAMP = 253_402_300_799
"""The largest block timestamp accepted: 9999-12-31T23:59:59Z, the last second a
`datetime` holds. (Whether a block is stamped too far in the future is judged later.)"""

MAX_COUNT = 2**63 - 1
"""The largest plain counter (nonce, transaction count, funded/spent sums) accepted."""

SATS_PER_COIN = 10**8

_SUPPLY_COINS = {"bitcoin": 21_000_000, "litecoin": 84_000_000}


def max_supply_sats(network: str | None) -> int:
    """The most base units that can exist on `network` (satoshi, litoshi): 21e6 coins on
    bitcoin and its test networks, 84e6 on litecoin's; an unknown network gets the larger."""
    if network is None:
        return max(_SUPPLY_COINS.values()) * SATS_PER_COIN
    coin = "litecoin" if network.startswith("litecoin") else "bitcoin"
    return _SUPPLY_COINS[coin] * SATS_PER_COIN
