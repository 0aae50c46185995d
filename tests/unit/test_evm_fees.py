"""Fees a sender pays and the fee recipient is credited, from receipts (issue 16:
EIP-4844 blob fees and fee-recipient credits).

A blob transaction's sender pays `gasUsed * effectiveGasPrice` plus `blobGasUsed *
blobGasPrice`, whether the transaction succeeded or not; a receipt without `blobGasUsed`
pays no blob fee even when the node states a `blobGasPrice` (anvil does on every
receipt); blob gas without its price is refused (the fee would be unknown). A block's
fee recipient is credited each transaction's gas times its price above the base fee."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chains.errors import DecodeError
from chains.evm.decode import decode_receipts
from chains.types import ChainHead

RECORDED = Path(__file__).parent.parent / "fixtures" / "execution-apis" / \
    "eth_getTransactionReceipt_get-blob-tx.json"
HASH = "0x" + "ab" * 32
SENDER = "0x658bdf435d810c91414ec09147daa6db62406379"


def receipt(**fields: Any) -> dict[str, Any]:
    return {"blockHash": HASH, "transactionHash": "0x" + "cd" * 32, "from": SENDER,
            "status": "0x1", "gasUsed": "0x5208", "effectiveGasPrice": "0x3b9aca00",
            "logs": [], **fields}


def test_a_recorded_failed_blob_transaction_pays_gas_and_blob_gas() -> None:
    raw = json.loads(RECORDED.read_text())["result"]
    block = ChainHead(7, raw["blockHash"])
    (decoded,) = decode_receipts([raw], block, "recorded")
    assert decoded.success is False
    # by hand: 21,389 gas at 397,158,084 wei, plus 131,072 blob gas at 1 wei
    assert decoded.blob_fee == 131_072
    assert decoded.fee == 21_389 * 397_158_084 + 131_072 == 8_494_814_389_748


def test_a_blob_gas_price_alone_is_not_a_fee() -> None:
    (decoded,) = decode_receipts([receipt(blobGasPrice="0x1")], ChainHead(1, HASH), "anvil")
    assert decoded.blob_fee == 0 and decoded.fee == 21_000 * 10**9


def test_blob_gas_without_its_price_is_refused() -> None:
    with pytest.raises(DecodeError, match="blobGasPrice"):
        decode_receipts([receipt(blobGasUsed="0x20000")], ChainHead(1, HASH), "node")


@given(gas=st.integers(0, 30_000_000), price=st.integers(0, 10**13),
       blobs=st.integers(0, 9), blob_price=st.integers(1, 10**12), ok=st.booleans())
def test_the_fee_is_gas_plus_blob_gas_exactly(gas: int, price: int, blobs: int,
                                              blob_price: int, ok: bool) -> None:
    raw = receipt(gasUsed=hex(gas), effectiveGasPrice=hex(price), status=hex(int(ok)),
                  blobGasUsed=hex(blobs * 131_072), blobGasPrice=hex(blob_price))
    (decoded,) = decode_receipts([raw], ChainHead(1, HASH), "node")
    assert decoded.fee == gas * price + blobs * 131_072 * blob_price


MAINNET = Path(__file__).parent.parent / "fixtures" / "eth-mainnet-17173049"


def test_a_recorded_mainnet_blocks_fee_recipient_credit_is_the_sum_of_its_tips() -> None:
    """Block 17,173,049 (tests/fixtures/README.md): the credit is the sum over its 116
    transactions of gasUsed * (effectiveGasPrice - baseFeePerGas), computed here from the
    raw JSON alone, and goes to the block's `miner` as a `reward` with no sender."""
    from chains.evm.decode import decode_block, fee_recipient_credit

    raw_block = json.loads((MAINNET / "eth_getBlockByNumber_17173049_true.json").read_text())
    raw_receipts = json.loads((MAINNET / "eth_getBlockReceipts_17173049.json").read_text())
    base = int(raw_block["baseFeePerGas"], 16)
    by_hand = sum(int(r["gasUsed"], 16) * (int(r["effectiveGasPrice"], 16) - base)
                  for r in raw_receipts)
    block = decode_block(raw_block, "recorded")
    credit = fee_recipient_credit(block, decode_receipts(raw_receipts, block.head, "recorded"))
    assert credit is not None and by_hand > 0
    assert (credit.kind, credit.sender, credit.amount) == ("reward", None, by_hand)
    assert credit.recipient.lower() == raw_block["miner"].lower()
    assert credit.key == ("", "reward", 17173049, block.head.hash)


def test_a_price_below_the_base_fee_is_refused() -> None:
    from chains.evm.decode import DecodedBlock, Tx, fee_recipient_credit

    head = ChainHead(1, HASH)
    sender = decode_receipts([receipt()], head, "n")[0].sender
    block = DecodedBlock(head, "0x" + "00" * 32, b"\0" * 256, (Tx(
        "0x" + "cd" * 32, 0, sender, None, 0, None, 0),), (), "n", miner=sender,  # type: ignore[arg-type]
        base_fee=2 * 10**9)
    with pytest.raises(DecodeError, match="below the base fee"):
        fee_recipient_credit(block, decode_receipts([receipt()], head, "n"))
