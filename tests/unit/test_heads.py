"""Issue 18 item 4: what the head watcher takes from the WebSocket (pure parsing; the
watcher itself runs against anvil in tests/integration/test_ws_heads.py)."""

from __future__ import annotations

import pytest

from daemon.runtime.heads import SubscriptionError, _head_height


def note(subscription: str, result: object) -> dict[str, object]:
    return {"jsonrpc": "2.0", "method": "eth_subscription",
            "params": {"subscription": subscription, "result": result}}


def test_a_new_head_of_our_subscription_gives_its_number() -> None:
    assert _head_height(note("0xab", {"number": "0x1f", "hash": "0x00"}), "0xab") == 31


def test_other_messages_are_ignored() -> None:
    """Another subscription's notification, a reply, a non-object: nothing."""
    assert _head_height(note("0xcd", {"number": "0x1"}), "0xab") is None
    assert _head_height({"jsonrpc": "2.0", "id": 1, "result": "0xab"}, "0xab") is None
    assert _head_height(["not", "an", "object"], "0xab") is None


@pytest.mark.parametrize("number", [None, 17, "17", "0x", "0xzz", "0x" + "f" * 40])
def test_a_head_without_a_valid_number_ends_the_subscription(number: object) -> None:
    """A notification for our subscription whose number is missing, not hex or absurdly
    long is the source's fault: SubscriptionError (the watcher reconnects)."""
    with pytest.raises(SubscriptionError, match="without a block number"):
        _head_height(note("0xab", {"number": number}), "0xab")
