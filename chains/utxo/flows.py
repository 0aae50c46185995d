"""PURE: a UTXO transaction's value flows for the watched wallets, as transfers and a fee.

A UTXO transaction has no single sender: it spends outputs (prevouts) of any number
of addresses and pays any number of outputs. segwatch turns it into transfers that
keep every watched address's balance change exact (received outputs minus spent
prevouts) and that the EVM rules can judge unchanged:

- When the transaction spends prevouts of watched addresses, the watched address that
  spends the most value is its *principal* (ties: the first input). Every output with
  value becomes a transfer principal → output address (`log_index` = output index),
  every input of another address a transfer that address → principal (`log_index`
  None, `trace_path` "vin:<i>"), and the fee (inputs minus outputs) is paid by the
  principal. Change back to the principal nets to zero; change to another wallet of
  the same owners is internal; a second owner's input is commingling.
- Otherwise only outputs paying watched addresses become transfers (deposits), from
  the first input's address when the source knows it (None for a coinbase or an
  unknown prevout).

A Core node without a transaction index knows the value and address of a prevout only
when segwatch tracked it (a watched wallet's output); an input of an unknown prevout
in a transaction with a watched principal leaves the fee unknown (no FeePayment),
and balance continuity reports what that hides.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from chains.types import (
    UNCONFIRMED,
    Address,
    BaseUnits,
    ChainHead,
    FeePayment,
    SpentOutput,
    TrackedOutput,
    TransferObservation,
)

__all__ = ["UNCONFIRMED", "TxFlows", "TxInput", "TxOutput", "UtxoTx", "recipient_of",
           "resolve_inputs", "tx_flows", "watched_outputs", "watched_spends"]

OP_RETURN = Address("op_return")
"""The recipient named for a provably unspendable (OP_RETURN) output with value."""


@dataclass(frozen=True, slots=True)
class TxInput:
    """One input: the prevout it spends and, when known, that prevout's address and value."""

    prev_txid: str
    prev_vout: int
    address: Address | None = None
    value: int | None = None


@dataclass(frozen=True, slots=True)
class TxOutput:
    """One output: its index, address (None when the script has none) and value."""

    index: int
    script: str
    value: int
    address: Address | None = None


@dataclass(frozen=True, slots=True)
class UtxoTx:
    """A decoded transaction. A coinbase has no inputs."""

    txid: str
    inputs: tuple[TxInput, ...]
    outputs: tuple[TxOutput, ...]


@dataclass(frozen=True, slots=True)
class TxFlows:
    """What one transaction means for the watched wallets."""

    transfers: tuple[TransferObservation, ...]
    fee: FeePayment | None


def recipient_of(output: TxOutput) -> Address:
    """The address an output pays, or a stand-in naming its script."""
    if output.address is not None:
        return output.address
    if output.script.startswith("6a"):
        return OP_RETURN
    return Address(f"script:{output.script[:90]}")


def tx_flows(tx: UtxoTx, block: ChainHead, watched: Collection[Address], source: str
             ) -> TxFlows:
    """Return the transfers and the fee `tx` (in `block`) means for `watched` addresses."""
    senders = tuple(dict.fromkeys(i.address for i in tx.inputs if i.address is not None))
    principal = _principal(tx, watched)

    def transfer(sender: Address | None, recipient: Address, amount: int,
                 index: int | None, path: str | None = None) -> TransferObservation:
        return TransferObservation(
            kind="native", block=block, tx_hash=tx.txid, log_index=index, sender=sender,
            recipient=recipient, contract=None, amount=BaseUnits(amount), source=source,
            trace_path=path, senders=senders)

    if principal is None:
        first = tx.inputs[0].address if tx.inputs else None
        return TxFlows(tuple(
            transfer(first, recipient_of(out), out.value, out.index)
            for out in tx.outputs if out.address in watched and out.value > 0), None)
    transfers = [transfer(principal, recipient_of(out), out.value, out.index)
                 for out in tx.outputs if out.value > 0]
    transfers += [transfer(i.address, principal, i.value, None, f"vin:{n}")
                  for n, i in enumerate(tx.inputs)
                  if i.address != principal and i.value is not None and i.value > 0]
    fee = None
    if all(i.value is not None for i in tx.inputs):
        paid = sum(i.value or 0 for i in tx.inputs) - sum(o.value for o in tx.outputs)
        fee = FeePayment(block, tx.txid, principal, BaseUnits(paid), True) if paid > 0 else None
    return TxFlows(tuple(transfers), fee)


def _principal(tx: UtxoTx, watched: Collection[Address]) -> Address | None:
    spent: dict[Address, int] = {}
    for i in tx.inputs:
        if i.address is not None and i.address in watched:
            spent[i.address] = spent.get(i.address, 0) + (i.value or 0)
    if not spent:
        return None
    top = max(spent.values())
    return next(address for address, value in spent.items() if value == top)


def resolve_inputs(tx: UtxoTx, tracked: Mapping[tuple[str, int], TrackedOutput]) -> UtxoTx:
    """Return `tx` with the address and value of every input that spends a tracked output
    filled in (inputs already carrying them are kept)."""
    inputs = tuple(
        TxInput(i.prev_txid, i.prev_vout, known.address, known.value)
        if i.address is None and (known := tracked.get((i.prev_txid, i.prev_vout))) else i
        for i in tx.inputs)
    return UtxoTx(tx.txid, inputs, tx.outputs)


def watched_outputs(tx: UtxoTx, watched: Collection[Address], height: int
                    ) -> list[TrackedOutput]:
    """Return the outputs of `tx` that pay watched addresses, to be tracked."""
    return [TrackedOutput(tx.txid, out.index, out.address, out.value, height)
            for out in tx.outputs if out.address is not None and out.address in watched]


def watched_spends(tx: UtxoTx, watched: Collection[Address], height: int) -> list[SpentOutput]:
    """Return the inputs of `tx` that spend watched addresses' outputs (a source that
    knows prevouts reports them, so the tracked outputs stay right across failover)."""
    return [SpentOutput(i.prev_txid, i.prev_vout, tx.txid, height)
            for i in tx.inputs if i.address is not None and i.address in watched]
