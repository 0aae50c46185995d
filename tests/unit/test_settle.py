"""Keeping the garbage collector off a large watch list (daemon/runtime/memory.py)."""

from __future__ import annotations

import gc

from daemon.runtime.memory import SETTLE_MIN_WALLETS, settle


def test_a_large_watch_list_is_frozen_out_of_later_collections_and_a_small_one_is_not(
        ) -> None:
    """Long-lived structures built for many wallets move to the permanent generation (a
    full collection no longer walks them); a re-settle undoes the previous freeze first,
    so garbage frozen before can be collected; a small watch list costs no pass."""
    try:
        gc.unfreeze()
        assert settle(SETTLE_MIN_WALLETS - 1) is False
        assert gc.get_freeze_count() == 0
        kept = [[n] for n in range(1000)]  # long-lived containers
        assert settle(SETTLE_MIN_WALLETS) is True
        frozen = gc.get_freeze_count()
        assert frozen >= len(kept)
        assert settle(SETTLE_MIN_WALLETS) is True
        assert gc.get_freeze_count() <= frozen + 100  # not frozen twice over
    finally:
        gc.unfreeze()
