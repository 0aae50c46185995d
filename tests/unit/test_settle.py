"""Keeping the garbage collector off a large watch list (daemon/runtime/memory.py)."""

from __future__ import annotations

import gc
import threading

from daemon.runtime.memory import SETTLE_MIN_WALLETS, full_passes_deferred, settle


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


def _full_passes_while_keeping(count: int) -> int:
    """How many full collections start while `count` long-lived containers are built."""
    passes = 0

    def seen(phase: str, info: dict[str, int]) -> None:
        nonlocal passes
        if phase == "start" and info["generation"] == 2:
            passes += 1

    gc.callbacks.append(seen)
    try:
        kept = [[n] for n in range(count)]
        del kept
    finally:
        gc.callbacks.remove(seen)
    return passes


def test_no_full_collection_starts_inside_a_cycle_and_the_threshold_comes_back() -> None:
    """Building half a million survivors outside the block starts full collections; inside
    it none does (young ones still run), and the oldest threshold is restored after it,
    only when the last of two overlapping threads leaves."""
    gc.collect()
    before = gc.get_threshold()
    assert _full_passes_while_keeping(500_000) > 0  # the cost the block removes
    with full_passes_deferred():
        assert _full_passes_while_keeping(500_000) == 0
        assert gc.get_threshold()[:2] == before[:2]
    assert gc.get_threshold() == before

    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with full_passes_deferred():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(10)
    with full_passes_deferred():
        pass
    assert gc.get_threshold()[2] != before[2]  # the other thread is still inside
    leave.set()
    thread.join(10)
    assert gc.get_threshold() == before
