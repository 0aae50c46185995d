"""The EVM adapter against three real node implementations: anvil, the Hardhat node
(EDR) and ganache (tests/devnodes.py). The same checks run on each: balances read at
a pinned block, a scan's transfers and fees, balance continuity (each sender's change is
value flows minus fees exactly), the trace API found, and a reorg. Each node's known
limits are asserted as such (README, "Fee models and block pinning"):
- ganache 7 refuses EIP-1898 block-hash parameters: the probe reads it by number,
  proven by the block's hash;
- Hardhat and ganache serve no trace API: the scan says `none` (continuity is then
  the net for internal transfers);
- after `hardhat_mine`, the Hardhat node serves blocks whose parentHash is all zeros:
  the scan refuses them, naming the block and the parent it has."""

from __future__ import annotations

import pytest

from chains.errors import SourceUnavailable
from chains.evm.adapter import EvmAdapter
from chains.evm.devnet import DEV_ACCOUNT, AnvilNode
from chains.types import Address, AssetRef

pytestmark = pytest.mark.anvil

ETH = AssetRef("ETH", 18)
PAYEES = [Address(f"0x30000000000000000000000000000000000000{n:02d}") for n in range(1, 4)]
EXPECTED = {  # implementation → (pinning the probe chooses, trace API)
    "anvil": ("hash", "parity"),
    "HardhatNetwork": ("hash", "none"),
    "Ganache": ("number", "none"),
}


def implementation(node: AnvilNode) -> str:
    version = str(node.call("web3_clientVersion"))
    return next(name for name in EXPECTED if version.lower().startswith(name.lower()))


def test_balances_scan_fees_and_continuity_on_every_node(any_node: AnvilNode) -> None:
    """Three payments from the dev account: balances read at the head equal the node's
    own answers; the scan lists the three payments and their fees as the receipts state
    them; the sender's balance change equals minus (values + fees) exactly; the pinning and
    the trace API are the ones known for the implementation."""
    kind = implementation(any_node)
    start = int(any_node.call("eth_blockNumber"), 16)
    before = int(any_node.call("eth_getBalance", [DEV_ACCOUNT, hex(start)]), 16)
    receipts = [any_node.transact(payee, value=10**15 + n) for n, payee in enumerate(PAYEES)]
    with EvmAdapter(any_node.url, expected_chain_id=31337) as adapter:
        head = adapter.head()
        observations = adapter.balances([DEV_ACCOUNT, *PAYEES], [ETH], head)
        result = adapter.scan([DEV_ACCOUNT, *PAYEES], start + 1, head.height)
        assert (adapter.pinning, result.traces) == EXPECTED[kind]
    by_node = {a: int(any_node.call("eth_getBalance", [a, hex(head.height)]), 16)
               for a in [DEV_ACCOUNT, *PAYEES]}
    assert {o.address: o.amount for o in observations} == by_node
    paid = {(t.recipient, t.amount) for t in result.transfers if t.kind == "native"}
    assert paid == {(payee, 10**15 + n) for n, payee in enumerate(PAYEES)}
    fees = {f.tx_hash: f.amount for f in result.fees}
    assert fees == {r["transactionHash"]: int(r["gasUsed"], 16) * int(r["effectiveGasPrice"], 16)
                    for r in receipts}
    outflow = sum(t.amount for t in result.transfers if t.sender == DEV_ACCOUNT)
    assert by_node[DEV_ACCOUNT] - before == -outflow - sum(fees.values())


def test_a_reorg_is_seen_on_every_node(any_node: AnvilNode) -> None:
    """Snapshot, pay, revert, pay someone else: the block at that height has another hash
    and a scan of it sees only the new payment."""
    snapshot = any_node.snapshot()
    height = int(any_node.call("eth_blockNumber"), 16) + 1
    any_node.transact(PAYEES[0], value=7)
    with EvmAdapter(any_node.url, expected_chain_id=31337) as adapter:
        first = adapter.block_at(height)
        any_node.revert(snapshot)
        any_node.call("evm_mine", [])  # a block between: the new branch differs in content
        any_node.transact(PAYEES[1], value=9)
        replaced = adapter.block_at(height)
        assert replaced.hash != first.hash
        scanned = adapter.scan([PAYEES[0], PAYEES[1]], height, adapter.head().height)
    assert {(t.recipient, t.amount) for t in scanned.transfers} == {(PAYEES[1], 9)}


def test_hardhat_mine_blocks_are_refused_naming_the_bad_parent(any_node: AnvilNode) -> None:
    """Hardhat only: `hardhat_mine 10` serves blocks whose parentHash is all zeros (the
    node's known limit); the scan refuses the range and says which block has which
    parent where the hash of which block was expected. (anvil and ganache mine sound
    blocks: their scans succeed.)"""
    kind = implementation(any_node)
    start = int(any_node.call("eth_blockNumber"), 16)
    if kind == "HardhatNetwork":
        any_node.call("hardhat_mine", ["0xa"])
    else:
        for _ in range(10):
            any_node.call("evm_mine", [])
    end = start + 10
    with EvmAdapter(any_node.url, expected_chain_id=31337) as adapter:
        if kind != "HardhatNetwork":
            assert len(adapter.scan([PAYEES[0]], start + 1, end).blocks) == 10
            return
        with pytest.raises(SourceUnavailable) as caught:
            adapter.scan([PAYEES[0]], start, end)
    assert f"has parent 0x{'00' * 32}, expected the hash of block" in caught.value.user_message
