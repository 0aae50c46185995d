"""Fee models of L2 chains (issue 16): what an OP-stack or Arbitrum transaction's sender
pays, and what an OP-stack deposit mints, decoded from receipts and blocks.

OP-stack: `gasUsed x effectiveGasPrice + l1Fee + operator fee`, the operator fee being
`gasUsed x operatorFeeScalar / 10**6 + operatorFeeConstant` under Isthmus and
`gasUsed x operatorFeeScalar x 100 + operatorFeeConstant` from Jovian on; a deposit
(type 0x7e) pays nothing and mints `mint` to `from` even when it fails. Arbitrum:
`gasUsed x effectiveGasPrice` (gasUsed includes the L1 part). Expected values are
computed here by hand from the rules, independently of `chains.evm.decode`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chains.errors import DecodeError
from chains.evm.address import canonical_evm_address
from chains.evm.decode import (
    DecodedBlock,
    FeeRules,
    decode_block,
    decode_receipts,
    fee_payments,
    native_transfers,
)
from chains.types import ChainHead

BLOCK_HASH = "0x" + "ab" * 32
SENDER = "0x1000000000000000000000000000000000000001"
RECIPIENT = "0x2000000000000000000000000000000000000002"
JOVIAN = 1_800_000_000
OP = FeeRules("op-stack")
OP_JOVIAN_KNOWN = FeeRules("op-stack", jovian_time=JOVIAN)


def raw_receipt(tx_hash: str, **fields: Any) -> dict[str, Any]:
    return {"blockHash": BLOCK_HASH, "transactionHash": tx_hash, "from": SENDER,
            "status": "0x1", "gasUsed": "0x5208", "effectiveGasPrice": "0xf4240", "logs": [],
            "type": "0x2", **fields}


def raw_tx(tx_hash: str, index: int = 0, **fields: Any) -> dict[str, Any]:
    return {"hash": tx_hash, "transactionIndex": hex(index), "from": SENDER, "to": RECIPIENT,
            "value": "0x0", "nonce": "0x0", "gasPrice": "0xf4240", "type": "0x2", **fields}


def block_of(txs: list[dict[str, Any]], timestamp: int = JOVIAN - 1) -> DecodedBlock:
    return decode_block({"number": "0x64", "hash": BLOCK_HASH, "timestamp": hex(timestamp),
                         "parentHash": "0x" + "01" * 32, "logsBloom": "0x" + "00" * 256,
                         "transactions": txs, "miner": "0x4200000000000000000000000000000000000011",
                         "baseFeePerGas": "0x1"}, "replay")


def head(timestamp: int = JOVIAN - 1) -> ChainHead:
    return ChainHead(100, BLOCK_HASH, timestamp)


def tx_hash(n: int) -> str:
    return "0x" + f"{n:064x}"


# --- OP-stack -------------------------------------------------------------------------
def test_op_stack_sender_pays_the_l1_fee_too() -> None:
    (decoded,) = decode_receipts([raw_receipt(tx_hash(1), l1Fee="0x2a")], head(), "op", OP)
    assert decoded.fee == 21_000 * 1_000_000 + 42


def test_isthmus_and_jovian_operator_fees_follow_the_activation_time() -> None:
    """gasUsed 21,000, scalar 2,500, constant 7: Isthmus charges 21,000 x 2,500 / 10**6 + 7
    = 59 wei (integer division: 52.5 -> 52), Jovian 21,000 x 2,500 x 100 + 7."""
    raw = raw_receipt(tx_hash(1), l1Fee="0x0", operatorFeeScalar=hex(2_500),
                      operatorFeeConstant="0x7")
    before = decode_receipts([raw], head(JOVIAN - 1), "op", OP_JOVIAN_KNOWN)[0]
    after = decode_receipts([raw], head(JOVIAN), "op", OP_JOVIAN_KNOWN)[0]
    assert before.l2_fee == 52 + 7
    assert after.l2_fee == 21_000 * 2_500 * 100 + 7


def test_an_operator_fee_the_formulas_disagree_on_is_refused_without_jovian_time() -> None:
    """Fail closed: with no `jovian_time`, a fee that depends on which formula applies is
    refused (the scan stops, `scan_stalled`), never guessed; a fee both formulas agree on
    (scalar 0: the constant alone) is taken."""
    raw = raw_receipt(tx_hash(1), l1Fee="0x1", operatorFeeScalar="0x1",
                      operatorFeeConstant="0x0")
    with pytest.raises(DecodeError, match="jovian_time is not configured"):
        decode_receipts([raw], head(), "op", OP)
    agreed = raw_receipt(tx_hash(1), l1Fee="0x1", operatorFeeScalar="0x0",
                         operatorFeeConstant="0x5")
    assert decode_receipts([agreed], head(), "op", OP)[0].l2_fee == 1 + 5


def test_an_l1_fee_on_a_chain_configured_as_ethereum_is_refused_with_the_fix() -> None:
    """An OP-stack chain configured with the `ethereum` fee model would undercount every
    fee; the receipt's l1Fee is refused with the setting to change."""
    with pytest.raises(DecodeError, match='set fee_model = "op-stack"'):
        decode_receipts([raw_receipt(tx_hash(1), l1Fee="0x2a")], head(), "eth")
    assert decode_receipts([raw_receipt(tx_hash(1), l1Fee="0x0")], head(), "eth")[0].fee == \
        21_000 * 1_000_000


@pytest.mark.parametrize("ok", [True, False])
def test_a_deposit_pays_nothing_and_mints_to_its_sender_even_when_it_fails(ok: bool) -> None:
    """Deposit (type 0x7e) minting 5 and sending 3: `from` is credited 5 whatever happens;
    the 3 move only when execution succeeds; there is no fee."""
    deposit = raw_tx(tx_hash(1), type="0x7e", mint="0x5", value="0x3", gasPrice="0x0")
    block = block_of([deposit])
    receipts = decode_receipts([raw_receipt(tx_hash(1), type="0x7e", status=hex(int(ok)),
                                            effectiveGasPrice="0x0")], block.head, "op", OP)
    assert fee_payments(block, receipts) == []
    flows = {(t.kind, t.sender, t.recipient, t.amount)
             for t in native_transfers(block, receipts, "op")}
    sender, recipient = canonical_evm_address(SENDER), canonical_evm_address(RECIPIENT)
    assert ("mint", None, sender, 5) in flows
    assert (("native", sender, recipient, 3) in flows) is ok
    assert len(flows) == (2 if ok else 1)


# --- Arbitrum -------------------------------------------------------------------------
def test_arbitrum_fee_is_gas_used_times_price_with_l1_gas_inside() -> None:
    raw = raw_receipt(tx_hash(1), gasUsed=hex(300_000), gasUsedForL1=hex(120_000),
                      effectiveGasPrice=hex(10_000_000))
    (decoded,) = decode_receipts([raw], head(), "arb", FeeRules("arbitrum"))
    assert decoded.fee == 300_000 * 10_000_000  # gasUsedForL1 is part of gasUsed
    bad = raw_receipt(tx_hash(1), gasUsed=hex(100), gasUsedForL1=hex(101))
    with pytest.raises(DecodeError, match="gasUsedForL1"):
        decode_receipts([bad], head(), "arb", FeeRules("arbitrum"))


# --- every model, random receipts -------------------------------------------------------
TxSpec = tuple[int, int, int, int, int, int, int, bool, int, int]
"""(type, value, mint, gas used, price, l1 fee, blob gas, success, scalar, constant)"""

tx_specs = st.tuples(
    st.sampled_from([0x0, 0x2, 0x3, 0x7E]), st.integers(0, 10**20), st.integers(0, 10**20),
    st.integers(0, 30_000_000), st.integers(0, 10**12), st.integers(0, 10**15),
    st.sampled_from([0, 131_072, 262_144]), st.booleans(), st.integers(0, 10**6),
    st.integers(0, 10**12))


def expected_change(model: str, spec: TxSpec, jovian: bool) -> int:
    """The sender's balance change by the rules, computed from scratch (the recipient is
    another wallet)."""
    kind, value, mint, gas, price, l1_fee, blob_gas, ok, scalar, constant = spec
    if model == "op-stack" and kind == 0x7E:
        return mint - (value if ok else 0)
    fee = gas * price + blob_gas * 3
    if model == "op-stack":
        fee += l1_fee + (gas * scalar * 100 + constant if jovian
                         else gas * scalar // 1_000_000 + constant)
    return -fee - (value if ok else 0)


@given(model=st.sampled_from(["ethereum", "op-stack", "arbitrum"]),
       specs=st.lists(tx_specs, min_size=1, max_size=6), jovian=st.booleans())
def test_balance_change_is_value_flows_minus_fees_exactly(model: str, specs: list[TxSpec],
                                                          jovian: bool) -> None:
    """For random receipts under each fee model, the sender's balance change computed from
    the rules equals the decoded flows (native, mint) minus the decoded fees."""
    stamp = JOVIAN if jovian else JOVIAN - 1
    txs, receipts = [], []
    for n, (kind, value, mint, gas, price, l1_fee, blob_gas, ok, scalar, constant) in \
            enumerate(specs):
        if model != "op-stack" and kind == 0x7E:
            kind = 0x2
        txs.append(raw_tx(tx_hash(n), n, type=hex(kind), value=hex(value),
                          **({"mint": hex(mint)} if kind == 0x7E else {})))
        extra: dict[str, Any] = {}
        if blob_gas:
            extra.update(blobGasUsed=hex(blob_gas), blobGasPrice="0x3")
        if model == "op-stack" and kind != 0x7E:
            extra.update(l1Fee=hex(l1_fee), operatorFeeScalar=hex(scalar),
                         operatorFeeConstant=hex(constant))
        receipts.append(raw_receipt(tx_hash(n), type=hex(kind), status=hex(int(ok)),
                                    gasUsed=hex(gas), effectiveGasPrice=hex(price), **extra))
    rules = FeeRules(model, jovian_time=JOVIAN)  # type: ignore[arg-type]
    block = block_of(txs, stamp)
    decoded = decode_receipts(receipts, block.head, "random", rules)
    sender = canonical_evm_address(SENDER)
    flows = sum(t.amount for t in native_transfers(block, decoded, "random")
                if t.recipient == sender) - \
        sum(t.amount for t in native_transfers(block, decoded, "random") if t.sender == sender)
    fees = sum(f.amount for f in fee_payments(block, decoded) if f.payer == sender)
    normalized = [(0x2 if model != "op-stack" and s[0] == 0x7E else s[0], *s[1:])
                  for s in specs]
    assert flows - fees == sum(expected_change(model, s, jovian)  # type: ignore[arg-type]
                               for s in normalized)


# --- recorded receipts (tests/fixtures/README.md) ---------------------------------------
FIXTURES = Path(__file__).parent.parent / "fixtures"


def recorded(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


def recorded_head(raw: dict[str, Any], timestamp: int | None = None) -> ChainHead:
    return ChainHead(int(raw["blockNumber"], 16), raw["blockHash"], timestamp)


def test_recorded_op_mainnet_ecotone_receipt_fee_includes_its_l1_fee() -> None:
    """OP Mainnet, Ecotone: 34,233 gas at 61,644,420 wei plus an l1Fee of 70,284,681,252."""
    raw = recorded("op-stack/receipt_op-mainnet-inferred_ecotone_weth-transfer.json")
    (decoded,) = decode_receipts([raw], recorded_head(raw), "recorded", OP)
    assert decoded.fee == 34_233 * 61_644_420 + 70_284_681_252 == 2_180_558_111_112
    with pytest.raises(DecodeError, match='set fee_model = "op-stack"'):
        decode_receipts([raw], recorded_head(raw), "recorded")


def test_recorded_isthmus_devnet_receipt_pays_the_operator_fee() -> None:
    """An Isthmus devnet receipt (go-ethereum's internal JSON: no `from`, given here):
    74,824 gas x 300 / 10**6 = 22 (integer division) + 400 = 422 wei of operator fee on
    top of gas and the l1Fee, as its test's author measured on the balance."""
    raw = {**recorded("op-stack/receipt_devnet_isthmus_operator-fee.json"), "from": SENDER}
    isthmus_only = FeeRules("op-stack", jovian_time=2**40)
    (decoded,) = decode_receipts([raw], recorded_head(raw, 0), "recorded", isthmus_only)
    assert decoded.l2_fee == 0x2353D65 + 422
    assert decoded.fee == 74_824 * 0x6696339C + 37_043_557 + 422 == 128_781_093_286_635
    with pytest.raises(DecodeError, match="jovian_time"):  # which formula: unknown
        decode_receipts([raw], recorded_head(raw, 0), "recorded", OP)


def test_recorded_op_mainnet_system_deposit_pays_nothing() -> None:
    """The per-block L1-info deposit (type 0x7e, effectiveGasPrice 0, gasUsed 64,013)."""
    raw = recorded("op-stack/receipt_op-mainnet-inferred_pre-canyon_l1-info-deposit.json")
    (decoded,) = decode_receipts([raw], recorded_head(raw), "recorded", OP)
    assert decoded.deposit and decoded.fee == 0 and decoded.l2_fee == 0


@pytest.mark.parametrize("ok", [True, False])
def test_recorded_base_user_deposit_mints_to_its_sender(ok: bool) -> None:
    """Base mainnet bridge deposit minting 500,000,000,000,000 wei (its `value` too): the
    sender is credited the mint whatever the outcome; the value moves on success only.
    (No receipt of it was found: the receipt here is the deposit receipt's shape.)"""
    tx = recorded("op-stack/tx_base-mainnet_user-deposit-mint.json")
    block = decode_block({"number": tx["blockNumber"], "hash": tx["blockHash"],
                          "timestamp": "0x0", "parentHash": "0x" + "01" * 32,
                          "logsBloom": "0x" + "00" * 256, "transactions": [tx]}, "recorded")
    receipts = decode_receipts([{
        "blockHash": tx["blockHash"], "transactionHash": tx["hash"], "from": tx["from"],
        "status": hex(int(ok)), "gasUsed": tx["gas"], "effectiveGasPrice": "0x0",
        "type": "0x7e", "depositNonce": tx["nonce"], "logs": []}], block.head, "recorded", OP)
    assert fee_payments(block, receipts) == []
    flows = [(t.kind, t.sender, t.amount) for t in native_transfers(block, receipts, "x")]
    sender = canonical_evm_address(tx["from"])
    assert ("mint", None, 500_000_000_000_000) in flows
    assert (("native", sender, 500_000_000_000_000) in flows) is ok


def test_recorded_arbitrum_receipt_fee_is_gas_used_times_price() -> None:
    """Arbitrum One: 241,033 gas (of which 182,534 for L1) at 10,000,000 wei."""
    raw = recorded("arbitrum/receipt_arb1_arb-token-transfer.json")
    (decoded,) = decode_receipts([raw], recorded_head(raw), "recorded", FeeRules("arbitrum"))
    assert int(raw["gasUsedForL1"], 16) == 182_534
    assert decoded.fee == 241_033 * 10_000_000 == 2_410_330_000_000
