"""The pure ledger diff."""

from __future__ import annotations

from daemon.rules.snapshots import diff


def test_diff_names_added_removed_and_changed_allocations_in_key_order() -> None:
    """Unchanged lines are left out; each change says what it was and both amounts."""
    before = {("eth", "0xa", "ETH", "alice"): 10, ("eth", "0xa", "ETH", "bob"): 5,
              ("eth", "0xb", "USDC", "carol"): 7}
    after = {("eth", "0xa", "ETH", "alice"): 1, ("eth", "0xb", "USDC", "carol"): 7,
             ("eth", "0xc", "ETH", "dave"): 3}
    assert [(c.owner, c.kind, c.before, c.after) for c in diff(before, after)] == [
        ("alice", "changed", 10, 1), ("bob", "removed", 5, None), ("dave", "added", None, 3)]
    assert diff(after, after) == []

