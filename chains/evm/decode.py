"""Pure decoding of EVM JSON-RPC payloads (blocks, receipts) into observations.

No I/O. Every function parses raw JSON strictly and raises one `DecodeError` naming
the field and the source; no KeyError, ValueError or TypeError escapes. Amounts are
`int` base units from the moment they are parsed. The field helpers are in
`chains.evm.fields`, ERC-20 Transfer logs in `chains.evm.logs`, the logs bloom in
`chains.evm.bloom`, internal transfers (traces) in `chains.evm.traces`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chains.errors import DecodeError
from chains.evm.fields import evm_address, field, hex_data, hex_hash, hex_quantity, optional_address
from chains.limits import MAX_HEIGHT, MAX_TIMESTAMP, UINT64_MAX
from chains.types import (
    Address,
    BaseUnits,
    ChainHead,
    FeeModel,
    FeePayment,
    TransferObservation,
)

GWEI = 10**9
DEPOSIT_TX_TYPE = 0x7E
"""OP-stack deposit transactions (L1 → L2): no fee; `mint` is credited to `from`."""


# --- fee rules ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FeeRules:
    """How a chain charges a transaction's sender, on top of `gasUsed x effectiveGasPrice`
    and an EIP-4844 blob fee:
    - `ethereum`: nothing more. A receipt carrying a non-zero `l1Fee` is refused (the
      chain is an OP-stack chain configured as `ethereum`: every fee would be short).
    - `op-stack`: the receipt's `l1Fee`, and since Isthmus an operator fee computed from
      the receipt's `operatorFeeScalar` and `operatorFeeConstant`: before Jovian
      `gasUsed x scalar / 10**6 + constant` (integer division), from Jovian on
      `gasUsed x scalar x 100 + constant`. Deposit transactions (type 0x7e) pay nothing
      and mint `mint` to `from` even when they fail.
    - `arbitrum`: nothing more: `gasUsed` already includes the L1 component
      (`gasUsedForL1`, which must not exceed it).
    `jovian_time`: when Jovian activated on this chain (unix seconds). None: unknown, and
    a receipt whose operator fee differs between the two formulas is refused rather than
    guessed."""

    model: FeeModel = "ethereum"
    jovian_time: int | None = None


ETHEREUM_FEES = FeeRules()


def operator_fee(gas_used: int, scalar: int, constant: int, jovian: bool) -> int:
    """The OP-stack operator fee of a transaction (Isthmus, or Jovian's formula)."""
    if jovian:
        return gas_used * scalar * 100 + constant
    return gas_used * scalar // 1_000_000 + constant


# --- blocks ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Tx:
    """A transaction of a block. `recipient` is None for a contract creation; `gas_price`
    is the price the node reports (the effective price for mined EIP-1559 transactions)."""

    hash: str
    index: int
    sender: Address
    recipient: Address | None
    value: BaseUnits
    gas_price: int | None
    nonce: int
    type: int = 0
    mint: int = 0
    """What an OP-stack deposit transaction mints to its sender (0 for any other)."""

    @property
    def deposit(self) -> bool:
        """An OP-stack deposit transaction (type 0x7e)."""
        return self.type == DEPOSIT_TX_TYPE


@dataclass(frozen=True, slots=True)
class DecodedBlock:
    """A block read from `source`, with its full transactions and EIP-4895 withdrawals."""

    head: ChainHead
    parent_hash: str
    logs_bloom: bytes
    transactions: tuple[Tx, ...]
    withdrawals: tuple[TransferObservation, ...]
    source: str
    miner: Address | None = None
    """The fee recipient (`miner`): credited each transaction's priority fee."""
    base_fee: int | None = None
    """`baseFeePerGas` (None before London: the whole gas price went to the miner)."""


def decode_block(raw: Any, source: str) -> DecodedBlock:
    """Return the block of an `eth_getBlockByNumber(n, true)` result.

    Blocks without `withdrawals` (pre-Shanghai) have none. Raises DecodeError for a
    malformed field, or when `transactions` holds hashes instead of full objects.
    """
    if not isinstance(raw, dict):
        raise DecodeError(source, "block", f"expected a JSON object, got {type(raw).__name__}")
    head = ChainHead(
        height=hex_quantity(field(raw, "number", "block", source), "block.number", source,
                            MAX_HEIGHT),
        hash=hex_hash(field(raw, "hash", "block", source), "block.hash", source),
        timestamp=hex_quantity(field(raw, "timestamp", "block", source), "block.timestamp",
                               source, MAX_TIMESTAMP))
    txs = field(raw, "transactions", "block", source)
    if not isinstance(txs, list):
        raise DecodeError(source, "block.transactions", "not a list")
    withdrawals = raw.get("withdrawals") or []
    if not isinstance(withdrawals, list):
        raise DecodeError(source, "block.withdrawals", "not a list")
    return DecodedBlock(
        head=head,
        parent_hash=hex_hash(field(raw, "parentHash", "block", source), "block.parentHash",
                             source),
        logs_bloom=hex_data(field(raw, "logsBloom", "block", source), "block.logsBloom",
                            source, 256),
        transactions=tuple(_decode_tx(tx, i, source) for i, tx in enumerate(txs)),
        withdrawals=tuple(_decode_withdrawal(w, i, head, source)
                          for i, w in enumerate(withdrawals)),
        source=source,
        miner=optional_address(raw.get("miner"), "block.miner", source),
        base_fee=None if raw.get("baseFeePerGas") is None else hex_quantity(
            raw["baseFeePerGas"], "block.baseFeePerGas", source))


def _decode_tx(raw: Any, position: int, source: str) -> Tx:
    where = f"block.transactions[{position}]"
    if isinstance(raw, str):
        raise DecodeError(source, where, "a hash, not a transaction: ask for full "
                                         "transactions (eth_getBlockByNumber(n, true))")
    if not isinstance(raw, dict):
        raise DecodeError(source, where, f"expected a JSON object, got {type(raw).__name__}")
    price = raw.get("gasPrice")
    kind = raw.get("type")
    mint = raw.get("mint")
    return Tx(
        hash=hex_hash(field(raw, "hash", where, source), f"{where}.hash", source),
        index=hex_quantity(field(raw, "transactionIndex", where, source),
                           f"{where}.transactionIndex", source, MAX_HEIGHT),
        sender=evm_address(field(raw, "from", where, source), f"{where}.from", source),
        recipient=optional_address(raw.get("to"), f"{where}.to", source),  # absent: creation
        value=BaseUnits(hex_quantity(field(raw, "value", where, source), f"{where}.value",
                                     source)),
        gas_price=None if price is None else hex_quantity(price, f"{where}.gasPrice", source),
        nonce=hex_quantity(field(raw, "nonce", where, source), f"{where}.nonce", source,
                           UINT64_MAX),
        type=0 if kind is None else hex_quantity(kind, f"{where}.type", source, 0xFF),
        mint=0 if mint is None else hex_quantity(mint, f"{where}.mint", source))


def _decode_withdrawal(raw: Any, position: int, head: ChainHead,
                       source: str) -> TransferObservation:
    where = f"block.withdrawals[{position}]"
    gwei = hex_quantity(field(raw, "amount", where, source), f"{where}.amount", source,
                        UINT64_MAX)
    return TransferObservation(
        kind="withdrawal", block=head, tx_hash=None,
        log_index=hex_quantity(field(raw, "index", where, source), f"{where}.index", source,
                               MAX_HEIGHT),
        sender=None,
        recipient=evm_address(field(raw, "address", where, source), f"{where}.address",
                              source),
        contract=None, amount=BaseUnits(gwei * GWEI), source=source)


# --- receipts, native value and fees --------------------------------------------------
@dataclass(frozen=True, slots=True)
class Receipt:
    """A transaction's receipt. `effective_gas_price` is None where the node omits it
    (pre-London nodes); `logs` are the raw log objects, for `token_transfers`;
    `blob_fee` is what an EIP-4844 transaction paid for its blobs (`blobGasUsed *
    blobGasPrice`, charged whether it succeeded or not; 0 for any other transaction);
    `l2_fee` what the chain's fee model adds (OP-stack: `l1Fee` plus the operator fee);
    `deposit`: an OP-stack deposit, which pays no fee at all."""

    tx_hash: str
    block_hash: str
    sender: Address
    success: bool
    gas_used: int
    effective_gas_price: int | None
    contract_address: Address | None
    logs: tuple[Any, ...]
    blob_fee: int = 0
    l2_fee: int = 0
    deposit: bool = False

    @property
    def fee(self) -> int | None:
        """Wei paid for gas (and blobs, and the L2 fee model's extras), when the receipt
        states the price; 0 for a deposit."""
        if self.deposit:
            return 0
        price = self.effective_gas_price
        return None if price is None else self.gas_used * price + self.blob_fee + self.l2_fee

    def fee_at(self, gas_price: int | None) -> int | None:
        """The fee with `gas_price` standing in for a missing effective gas price."""
        if self.deposit or self.effective_gas_price is not None:
            return self.fee
        return None if gas_price is None else \
            self.gas_used * gas_price + self.blob_fee + self.l2_fee


def decode_receipts(raw: Any, block: ChainHead, source: str,
                    rules: FeeRules = ETHEREUM_FEES) -> tuple[Receipt, ...]:
    """Return the receipts of a list of receipt objects (e.g. `eth_getBlockReceipts`),
    their fees under `rules` (the chain's fee model).

    A receipt with `root` instead of `status` (pre-Byzantium) counts as successful.
    Raises DecodeError for a malformed field, a receipt whose `blockHash` is not
    `block.hash` ("receipt of another block"), or a fee the rules cannot state exactly.
    """
    if not isinstance(raw, list):
        raise DecodeError(source, "receipts", "not a list")
    return tuple(_decode_receipt(r, i, block, source, rules) for i, r in enumerate(raw))


def _decode_receipt(raw: Any, position: int, block: ChainHead, source: str,
                    rules: FeeRules = ETHEREUM_FEES) -> Receipt:
    where = f"receipts[{position}]"
    block_hash = hex_hash(field(raw, "blockHash", where, source), f"{where}.blockHash", source)
    if block_hash != block.hash.lower():
        raise DecodeError(source, f"{where}.blockHash", f"receipt of another block: "
                          f"{block_hash}, expected {block.hash} ({block.height})")
    status = raw.get("status")
    if status is None and "root" not in raw:
        raise DecodeError(source, f"{where}.status", "missing (and no pre-Byzantium root)")
    price = raw.get("effectiveGasPrice")
    logs = raw.get("logs", [])
    if not isinstance(logs, list):
        raise DecodeError(source, f"{where}.logs", "not a list")
    gas_used = hex_quantity(field(raw, "gasUsed", where, source), f"{where}.gasUsed", source,
                            UINT64_MAX)
    kind = raw.get("type")
    deposit = rules.model == "op-stack" and kind is not None and \
        hex_quantity(kind, f"{where}.type", source, 0xFF) == DEPOSIT_TX_TYPE
    return Receipt(
        tx_hash=hex_hash(field(raw, "transactionHash", where, source),
                         f"{where}.transactionHash", source),
        block_hash=block_hash,
        sender=evm_address(field(raw, "from", where, source), f"{where}.from", source),
        success=status is None or hex_quantity(status, f"{where}.status", source) == 1,
        gas_used=gas_used,
        effective_gas_price=None if price is None else hex_quantity(
            price, f"{where}.effectiveGasPrice", source),
        contract_address=optional_address(raw.get("contractAddress"),
                                          f"{where}.contractAddress", source),
        logs=tuple(logs), blob_fee=_blob_fee(raw, where, source),
        l2_fee=0 if deposit else _l2_fee(raw, where, source, rules, gas_used, block),
        deposit=deposit)


def _l2_fee(raw: Any, where: str, source: str, rules: FeeRules, gas_used: int,
            block: ChainHead) -> int:
    """What the fee model adds to `gasUsed x effectiveGasPrice` (see FeeRules)."""
    l1_fee = raw.get("l1Fee")
    if rules.model == "ethereum":
        if l1_fee is not None and hex_quantity(l1_fee, f"{where}.l1Fee", source) != 0:
            raise DecodeError(source, f"{where}.l1Fee", "an L1 fee on a chain whose "
                              "fee_model is \"ethereum\": set fee_model = \"op-stack\"")
        return 0
    if rules.model == "arbitrum":
        for_l1 = raw.get("gasUsedForL1")
        if for_l1 is not None and hex_quantity(for_l1, f"{where}.gasUsedForL1", source,
                                               UINT64_MAX) > gas_used:
            raise DecodeError(source, f"{where}.gasUsedForL1", "exceeds gasUsed, which "
                              "includes it")
        return 0
    fee = 0 if l1_fee is None else hex_quantity(l1_fee, f"{where}.l1Fee", source)
    scalar, constant = raw.get("operatorFeeScalar"), raw.get("operatorFeeConstant")
    if scalar is None and constant is None:
        return fee  # before Isthmus
    scalar = hex_quantity(scalar if scalar is not None else "0x0",
                          f"{where}.operatorFeeScalar", source, UINT64_MAX)
    constant = hex_quantity(constant if constant is not None else "0x0",
                            f"{where}.operatorFeeConstant", source, UINT64_MAX)
    isthmus = operator_fee(gas_used, scalar, constant, jovian=False)
    jovian = operator_fee(gas_used, scalar, constant, jovian=True)
    if rules.jovian_time is not None and block.timestamp is not None:
        return fee + (jovian if block.timestamp >= rules.jovian_time else isthmus)
    if isthmus != jovian:
        raise DecodeError(source, f"{where}.operatorFeeScalar", "the operator fee differs "
                          f"before and after Jovian ({isthmus} or {jovian} wei) and the "
                          "chain's jovian_time is not configured")
    return fee + isthmus


def _blob_fee(raw: Any, where: str, source: str) -> int:
    """`blobGasUsed * blobGasPrice` of a receipt; 0 without `blobGasUsed` (nodes such as
    anvil state a `blobGasPrice` on every receipt). Raises DecodeError for blob gas
    without its price: the fee would be unknown."""
    used = raw.get("blobGasUsed")
    if used is None:
        return 0
    price = raw.get("blobGasPrice")
    if price is None:
        raise DecodeError(source, f"{where}.blobGasPrice", "missing beside blobGasUsed")
    return hex_quantity(used, f"{where}.blobGasUsed", source, UINT64_MAX) * \
        hex_quantity(price, f"{where}.blobGasPrice", source)


def _paired(block: DecodedBlock, receipts: Iterable[Receipt],
            source: str) -> list[tuple[Tx, Receipt]]:
    """Each transaction of `block` with its receipt; receipts of other transactions are
    ignored. Raises DecodeError for a missing or inconsistent receipt."""
    by_hash = {r.tx_hash: r for r in receipts}
    pairs: list[tuple[Tx, Receipt]] = []
    for tx in block.transactions:
        receipt = by_hash.get(tx.hash)
        if receipt is None:
            raise DecodeError(source, "receipts", f"no receipt for transaction {tx.hash}")
        if receipt.block_hash != block.head.hash:
            raise DecodeError(source, "receipt.blockHash",
                              f"receipt of another block for {tx.hash}")
        if receipt.sender != tx.sender:
            raise DecodeError(source, "receipt.from", f"sender differs from {tx.hash}'s")
        pairs.append((tx, receipt))
    return pairs


def native_transfers(block: DecodedBlock, receipts: Iterable[Receipt],
                     source: str) -> list[TransferObservation]:
    """Return one `native` transfer per successful transaction of `block` with value > 0,
    and one `mint` per OP-stack deposit that mints (successful or not).

    A contract creation's recipient is the receipt's `contractAddress`. Raises
    DecodeError when a transaction has no receipt, or a creation no contract address.
    """
    out: list[TransferObservation] = []
    for tx, receipt in _paired(block, receipts, source):
        if (tx.deposit or receipt.deposit) and tx.mint:
            out.append(TransferObservation(
                kind="mint", block=block.head, tx_hash=tx.hash, log_index=None, sender=None,
                recipient=tx.sender, contract=None, amount=BaseUnits(tx.mint), source=source,
                trace_path="mint"))
        if tx.value == 0 or not receipt.success:
            continue
        recipient = tx.recipient or receipt.contract_address
        if recipient is None:
            raise DecodeError(source, "receipt.contractAddress",
                              f"missing for contract creation {tx.hash}")
        out.append(TransferObservation(
            kind="native", block=block.head, tx_hash=tx.hash, log_index=None,
            sender=tx.sender, recipient=recipient, contract=None, amount=tx.value,
            source=source))
    return out


def fee_payments(block: DecodedBlock, receipts: Iterable[Receipt]) -> list[FeePayment]:
    """Return the gas fee of every transaction of `block`, paid by its sender, failed or not.

    The price is the receipt's `effectiveGasPrice`, else the transaction's `gasPrice`;
    an EIP-4844 transaction's blob fee and the fee model's extras (`Receipt.l2_fee`) are
    added; OP-stack deposits pay nothing.
    Raises DecodeError (naming `block.source`) when a receipt is missing or neither
    price is known.
    """
    out: list[FeePayment] = []
    for tx, receipt in _paired(block, receipts, block.source):
        if tx.deposit or receipt.deposit:
            continue  # an OP-stack deposit pays no fee
        amount = receipt.fee_at(tx.gas_price)
        if amount is None:
            raise DecodeError(block.source, "receipt.effectiveGasPrice",
                              f"no gas price for {tx.hash}")
        out.append(FeePayment(block=block.head, tx_hash=tx.hash, payer=tx.sender,
                              amount=BaseUnits(amount), success=receipt.success))
    return out


def fee_recipient_credit(block: DecodedBlock, receipts: Iterable[Receipt]
                         ) -> TransferObservation | None:
    """What `block`'s fee recipient (`miner`) was credited: each transaction's gas times
    its price above the base fee (the base fee and blob fees are burned), as one
    `reward` transfer with no sender; None without a miner or a credit. `block` must hold
    every transaction of the block. Raises DecodeError when a receipt is missing, a
    price is unknown, or a price is below the base fee."""
    if block.miner is None or not block.transactions:
        return None
    credit = 0
    for tx, receipt in _paired(block, receipts, block.source):
        if tx.deposit or receipt.deposit:
            continue
        price = receipt.effective_gas_price if receipt.effective_gas_price is not None \
            else tx.gas_price
        if price is None:
            raise DecodeError(block.source, "receipt.effectiveGasPrice",
                              f"no gas price for {tx.hash}")
        tip = price - (block.base_fee or 0)
        if tip < 0:
            raise DecodeError(block.source, "receipt.effectiveGasPrice",
                              f"{tx.hash} paid {price}, below the base fee {block.base_fee}")
        credit += receipt.gas_used * tip
    if credit == 0:
        return None
    return TransferObservation(
        kind="reward", block=block.head, tx_hash=None, log_index=block.head.height,
        sender=None, recipient=block.miner, contract=None, amount=BaseUnits(credit),
        source=block.source, trace_path=block.head.hash)
