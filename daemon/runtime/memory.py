"""Keeping the garbage collector off a large watch list.

CPython's full collections walk every tracked object: with a million watched wallets the
resident books, circle and kept balances are tens of millions of objects, and one full
pass takes seconds of a steady cycle that otherwise costs what it reads. Once those
long-lived structures are (re)built, `settle` collects what is garbage and moves the rest
to the permanent generation (`gc.freeze`), which no later collection walks; the previous
freeze is undone first, so books replaced since can be collected.

A cycle that reads every wallet builds its own millions of objects (observations, rows,
findings), and the collector starts a full pass each time the survivors grow by a quarter:
dozens of passes over a growing heap, seconds of a first cycle. `full_passes_deferred`
holds those passes off for the length of a cycle (young collections still run, so
short-lived cycles are still freed); the `settle` that follows does the one full pass.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SETTLE_MIN_WALLETS = 10_000
"""Below this many wallets a full collection is cheap; settling is not worth its pass."""

_NEVER = 2**31 - 1
"""An oldest-generation threshold no count of younger collections reaches."""

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] | None = None


def settle(wallets: int) -> bool:
    """Collect, then freeze what survives, when `wallets` are watched (at least
    SETTLE_MIN_WALLETS). Returns whether it did."""
    if wallets < SETTLE_MIN_WALLETS:
        return False
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return True


@contextmanager
def full_passes_deferred() -> Iterator[None]:
    """Within the block no full (oldest-generation) collection starts by itself; the
    threshold is restored after it, once no other thread is still inside such a block.
    (A small watch list loses nothing: its garbage waits one cycle for the next pass.)"""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(_saved[0], _saved[1], _NEVER)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                young, middle, _ = gc.get_threshold()
                gc.set_threshold(young, middle, _saved[2])
                _saved = None


__all__ = ["SETTLE_MIN_WALLETS", "full_passes_deferred", "settle"]
