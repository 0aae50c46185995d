"""Keeping the garbage collector off a large watch list.

CPython's full collections walk every tracked object: with a million watched wallets the
resident books, circle and kept balances are tens of millions of objects, and one full
pass takes seconds of a steady cycle that otherwise costs what it reads. Once those
long-lived structures are (re)built, `settle` collects what is garbage and moves the rest
to the permanent generation (`gc.freeze`), which no later collection walks; the previous
freeze is undone first, so books replaced since can be collected.
"""

from __future__ import annotations

import gc

SETTLE_MIN_WALLETS = 10_000
"""Below this many wallets a full collection is cheap; settling is not worth its pass."""


def settle(wallets: int) -> bool:
    """Collect, then freeze what survives, when `wallets` are watched (at least
    SETTLE_MIN_WALLETS). Returns whether it did."""
    if wallets < SETTLE_MIN_WALLETS:
        return False
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return True


__all__ = ["SETTLE_MIN_WALLETS", "settle"]
