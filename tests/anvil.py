"""pytest fixtures for tests against a real anvil node (helpers: chains.evm.devnet).

Loaded as a plugin from tests/conftest.py: `anvil` (one node per session) and
`anvil_node` (the same node, its chain state snapshotted before and reverted after
each test). Without an anvil binary the tests skip; with `CI=true` they fail.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from chains.evm.devnet import AnvilNode, find_anvil, start_anvil
from tests.realdeps import missing


def require_anvil() -> str:
    """Return the anvil binary; skip the test without one (fail when CI=true)."""
    binary = find_anvil()
    if binary is None:
        missing("anvil", "not found: run `make install` or set SEGWATCH_ANVIL")
        raise AssertionError("unreachable")
    return binary


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    """One anvil node for the whole session (chain id 31337)."""
    node = start_anvil(require_anvil())
    try:
        yield node
    finally:
        node.stop()


def _head_time(node: AnvilNode) -> int:
    return int(node.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)


@pytest.fixture
def anvil_node(anvil: AnvilNode) -> Iterator[AnvilNode]:
    """The session's anvil node, with its state reverted after the test.

    One block is mined first: a revert goes back to a block mined when the snapshot was
    taken, possibly many minutes ago, and the daemon rightly refuses a source whose
    newest block is older than the chain's head-age limit.
    """
    snapshot_id = anvil.snapshot()
    anvil.call("evm_setNextBlockTimestamp", [max(int(time.time()), _head_time(anvil) + 1)])
    anvil.mine(1)
    try:
        yield anvil
    finally:
        anvil.revert(snapshot_id)
