"""The pure UTXO flow rules (chains/utxo/flows.py) and Core block decoding
(chains/utxo/core_scan.py)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chains.errors import DecodeError
from chains.types import Address, ChainHead, TrackedOutput
from chains.utxo.core_rpc import coins_to_sats
from chains.utxo.core_scan import decode_block
from chains.utxo.flows import (
    OP_RETURN,
    TxInput,
    TxOutput,
    UtxoTx,
    resolve_inputs,
    tx_flows,
    watched_outputs,
)

BLOCK = ChainHead(7, "ab" * 32, 1_700_000_000)
A, B, C, X, Y = (Address(name) for name in ("alice", "bob", "carol", "x-out", "y-out"))
TXID = "cd" * 32


def tx(inputs: list[tuple[Address | None, int | None]], outputs: list[tuple[Address | None, int]]
       ) -> UtxoTx:
    return UtxoTx(TXID, tuple(TxInput("ee" * 32, n, a, v) for n, (a, v) in enumerate(inputs)),
                  tuple(TxOutput(n, "0014" + "00" * 20, v, a) for n, (a, v) in enumerate(outputs)))


def net(flows: Any, fee_payer_pays: bool = True) -> dict[Address, int]:
    total: dict[Address, int] = defaultdict(int)
    for t in flows.transfers:
        total[t.recipient] += t.amount
        if t.sender is not None:
            total[t.sender] -= t.amount
    if flows.fee and fee_payer_pays:
        total[flows.fee.payer] -= flows.fee.amount
    return total


def test_a_deposit_is_one_transfer_per_output_paying_a_watched_address() -> None:
    """Outputs to watched addresses become transfers from the first input's address with
    the output index as log_index; other outputs and the fee are not the wallet's."""
    flows = tx_flows(tx([(X, 900), (Y, 100)], [(A, 300), (X, 650), (A, 20)]), BLOCK, {A}, "s")
    assert [(t.sender, t.recipient, t.amount, t.log_index) for t in flows.transfers] == [
        (X, A, 300, 0), (X, A, 20, 2)]
    assert flows.fee is None
    assert flows.transfers[0].senders == (X, Y)


def test_a_spend_pays_every_output_from_the_principal_who_also_pays_the_fee() -> None:
    """A watched spender pays each output (change back to itself included) and the fee."""
    flows = tx_flows(tx([(A, 1_000)], [(X, 600), (A, 390)]), BLOCK, {A}, "s")
    assert [(t.sender, t.recipient, t.amount) for t in flows.transfers] == [
        (A, X, 600), (A, A, 390)]
    assert flows.fee is not None and (flows.fee.payer, flows.fee.amount) == (A, 10)


def test_the_largest_watched_spender_is_the_principal_and_others_consolidate_into_it() -> None:
    """Inputs of other addresses (watched or not) become transfers into the principal."""
    flows = tx_flows(tx([(B, 300), (A, 700), (X, 50)], [(Y, 1_040)]), BLOCK, {A, B}, "s")
    assert [(t.sender, t.recipient, t.amount, t.trace_path) for t in flows.transfers] == [
        (A, Y, 1_040, None), (B, A, 300, "vin:0"), (X, A, 50, "vin:2")]
    assert flows.fee is not None and flows.fee.amount == 10


def test_an_unknown_input_value_leaves_the_fee_unknown() -> None:
    """Without every prevout's value the fee cannot be known: no FeePayment."""
    flows = tx_flows(tx([(A, 500), (None, None)], [(X, 800)]), BLOCK, {A}, "s")
    assert flows.fee is None


def test_an_op_return_output_with_value_is_paid_to_op_return() -> None:
    """Value burnt in an OP_RETURN output is a transfer to `op_return`."""
    burn = UtxoTx(TXID, (TxInput("ee" * 32, 0, A, 100),), (TxOutput(0, "6a0401020304", 90),))
    (transfer,) = tx_flows(burn, BLOCK, {A}, "s").transfers
    assert transfer.recipient == OP_RETURN


def test_tracked_outputs_fill_in_inputs_and_new_watched_outputs_are_tracked() -> None:
    """resolve_inputs gives an input its tracked prevout's address and value."""
    tracked = TrackedOutput("ee" * 32, 0, A, 500, 3)
    spent = resolve_inputs(tx([(None, None)], [(X, 400), (B, 90)]), {tracked.outpoint: tracked})
    assert spent.inputs[0] == TxInput("ee" * 32, 0, A, 500)
    assert watched_outputs(spent, {A, B}, 7) == [TrackedOutput(TXID, 1, B, 90, 7)]


amounts = st.integers(min_value=1, max_value=10**15)
parties = st.sampled_from([A, B, C, X, Y])


@given(st.lists(st.tuples(parties, amounts), min_size=1, max_size=6),
       st.lists(st.tuples(parties, amounts), min_size=1, max_size=6),
       st.sets(st.sampled_from([A, B, C]), min_size=1))
def test_every_watched_balance_change_is_outputs_received_minus_inputs_spent(
        inputs: list[tuple[Address, int]], outputs: list[tuple[Address, int]],
        watched: set[Address]) -> None:
    """For any transaction whose prevouts are known and that pays at most what it spends,
    the transfers and fee change each watched address's balance by exactly what it
    received in outputs minus what its inputs spent."""
    if sum(v for _, v in outputs) > sum(v for _, v in inputs):
        outputs = [(outputs[0][0], 1)]
        inputs = [*inputs, (X, 1)]
    flows = tx_flows(tx(list(inputs), list(outputs)), BLOCK, watched, "s")
    spends_watched = any(a in watched for a, _ in inputs)
    computed = net(flows)
    for address in watched:
        received = sum(v for a, v in outputs if a == address)
        spent = sum(v for a, v in inputs if a == address) if spends_watched else 0
        assert computed[address] == received - spent


def core_block(**changes: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "hash": "11" * 32, "height": 5, "time": 1_700_000_000, "previousblockhash": "22" * 32,
        "tx": [{"txid": "33" * 32, "vin": [{"coinbase": "0101"}],
                "vout": [{"n": 0, "value": Decimal("50.00000001"),
                          "scriptPubKey": {"hex": "0014" + "00" * 20,
                                           "addresses": ["rltc1qexample"]}}]}]}
    block.update(changes)
    return block


def test_a_core_block_decodes_exactly() -> None:
    """A verbosity-2 block becomes its link and transactions; a coinbase has no inputs,
    amounts are exact satoshis, and Core ≤ 21's `addresses` list gives the address."""
    link, (coinbase,) = decode_block(core_block(), "s", coins_to_sats)
    assert (link.height, link.parent_hash) == (5, "22" * 32)
    assert coinbase.inputs == ()
    assert coinbase.outputs == (TxOutput(0, "0014" + "00" * 20, 5_000_000_001,
                                         Address("rltc1qexample")),)


@pytest.mark.parametrize("change", [
    {"tx": None},
    {"height": -1},
    {"previousblockhash": "zz"},
    {"tx": [{"txid": "33" * 32, "vin": [], "vout": [{"n": 1, "value": Decimal(1),
                                                      "scriptPubKey": {"hex": "00"}}]}]},
    {"tx": [{"txid": "33" * 32, "vin": [], "vout": [{"n": 0, "value": 0.1,
                                                      "scriptPubKey": {"hex": "00"}}]}]},
    {"tx": [{"txid": "33" * 32, "vin": [{"txid": "44" * 32}], "vout": []}]},
])
def test_a_malformed_core_block_is_a_decode_error(change: dict[str, Any]) -> None:
    """Missing arrays, bad heights or hashes, misnumbered outputs, float amounts and inputs
    without an output index are refused, naming the field."""
    with pytest.raises(DecodeError):
        decode_block(core_block(**change), "s", coins_to_sats)
