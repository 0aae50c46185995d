"""Plain data shapes that adapters produce. Amounts are `int` base units, never floats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NewType

Address = NewType("Address", str)
"""A canonical address: EIP-55 checksummed for EVM chains."""

BaseUnits = NewType("BaseUnits", int)
"""An amount in the asset's smallest unit (wei, satoshi)."""


@dataclass(frozen=True, slots=True)
class ChainHead:
    """A block a read is pinned to."""

    height: int
    hash: str
    timestamp: int | None = None


UNCONFIRMED = ChainHead(height=-1, hash="", timestamp=None)
"""The `block` of a UTXO transfer still in the mempool (0 confirmations)."""


@dataclass(frozen=True, slots=True)
class AssetRef:
    """A native coin (`contract is None`) or a token contract on one chain."""

    symbol: str
    decimals: int
    contract: Address | None = None

    @property
    def is_native(self) -> bool:
        return self.contract is None


@dataclass(frozen=True, slots=True)
class BalanceObservation:
    """What a source reported for one (address, asset) at one block.

    Exactly one of `amount` and `error` is set: a balance that could not be read
    (a token whose `balanceOf` reverts, malformed return data) carries the reason.
    """

    address: Address
    asset: AssetRef
    amount: BaseUnits | None
    block: ChainHead
    source: str
    error: str | None = None


TransferKind = Literal["native", "token", "internal", "withdrawal", "reward", "mint"]

FeeModel = Literal["ethereum", "op-stack", "arbitrum"]
"""How an EVM chain charges a transaction's sender (chains/evm/decode.py `FeeRules`)."""


@dataclass(frozen=True, slots=True)
class TransferObservation:
    """Value that moved between two addresses in one block, as a source reported it.

    - `native`: a successful transaction's `value` (`log_index` None).
    - `token`: an ERC-20 `Transfer` log (`contract` set, `log_index` the log's index).
    - `internal`: ETH moved by a contract call frame (`trace_path` e.g. "0.1").
    - `withdrawal`: an EIP-4895 consensus-layer withdrawal (`tx_hash` and `sender`
      None, `log_index` the withdrawal index, amount converted from gwei to wei).
    - `reward`: a block's priority fees credited to its fee recipient (`tx_hash` and
      `sender` None, `log_index` the block's height, `trace_path` its hash).
    - `mint`: value an OP-stack deposit transaction (type 0x7e) mints to its `from`,
      whether its execution succeeds or not (`sender` None, `trace_path` "mint").

    On UTXO chains every transfer is `native`: an output (`log_index` its index) or an
    input consolidated into the transaction's principal (`trace_path` "vin:<i>"), and
    `senders` lists the addresses of all of the transaction's inputs the source knows
    (see chains/utxo/flows.py).
    """

    kind: TransferKind
    block: ChainHead
    tx_hash: str | None
    log_index: int | None
    sender: Address | None
    recipient: Address
    contract: Address | None
    amount: BaseUnits
    source: str
    trace_path: str | None = None
    senders: tuple[Address, ...] = ()

    @property
    def key(self) -> tuple[str, str, int, str]:
        """The transfer's identity within its block: the same transfer re-read has the same key."""
        return (self.tx_hash or "", self.kind, -1 if self.log_index is None else self.log_index,
                self.trace_path or "")


@dataclass(frozen=True, slots=True)
class FeePayment:
    """Gas paid by a transaction's sender, successful or not (`success` False: reverted)."""

    block: ChainHead
    tx_hash: str
    payer: Address
    amount: BaseUnits
    success: bool


TraceMode = Literal["geth", "parity", "none"]
"""Which trace API a source serves: geth `debug_traceBlockByNumber` (callTracer),
Parity/Erigon `trace_block`, or none (internal transfers cannot be listed)."""


@dataclass(frozen=True, slots=True)
class BlockLink:
    """A scanned block's identity and its parent: what reorg detection compares."""

    height: int
    hash: str
    parent_hash: str
    timestamp: int | None


@dataclass(frozen=True, slots=True)
class TrackedOutput:
    """A watched address's UTXO output created at `height`: what a Core-RPC scan must
    remember to see it spent later (a node without a transaction index cannot tell
    whose prevout an input spends)."""

    txid: str
    vout: int
    address: Address
    value: int
    height: int

    @property
    def outpoint(self) -> tuple[str, int]:
        return (self.txid, self.vout)


@dataclass(frozen=True, slots=True)
class SpentOutput:
    """A tracked output spent by transaction `by_txid` in block `height`."""

    txid: str
    vout: int
    by_txid: str
    height: int


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Everything one range scan observed for the watched wallets."""

    blocks: tuple[BlockLink, ...]
    transfers: tuple[TransferObservation, ...]
    fees: tuple[FeePayment, ...]
    traces: TraceMode
    rechecked_blocks: int
    mempool: tuple[TransferObservation, ...] = ()
    """UTXO: unconfirmed transfers (block `UNCONFIRMED`), listed by `check`, never stored."""
    created: tuple[TrackedOutput, ...] = ()
    """UTXO Core sources: watched outputs the range created (to track their spends)."""
    spent: tuple[SpentOutput, ...] = ()
    """UTXO Core sources: tracked outputs the range spent."""
