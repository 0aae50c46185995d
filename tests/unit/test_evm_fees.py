"""Fees a sender pays, from receipts (issue 16, first step: EIP-4844 blob fees).

A blob transaction's sender pays `gasUsed * effectiveGasPrice` plus `blobGasUsed *
blobGasPrice`, whether the transaction succeeded or not; a receipt without `blobGasUsed`
pays no blob fee even when the node states a `blobGasPrice` (anvil does on every
receipt); blob gas without its price is refused (the fee would be unknown)."""

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
