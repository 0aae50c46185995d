"""The interface every chain adapter implements."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, runtime_checkable

from chains.types import Address, AssetRef, BalanceObservation, ChainHead, ScanResult, TrackedOutput


class ChainAdapter(Protocol):
    """Reads one chain through one data source. Closeable like an HTTP transport."""

    @property
    def source(self) -> str:
        """The source's redacted URL, safe to log."""
        ...

    @property
    def requests_made(self) -> int:
        """HTTP requests this adapter has sent so far (for logs and benchmarks)."""
        ...

    def chain_id(self) -> int | str:
        """Return the chain id (EVM) or network name (UTXO) the source serves.

        Raises SourceUnavailable.
        """
        ...

    def head(self) -> ChainHead:
        """Return the source's newest block. Raises SourceUnavailable, DecodeError."""
        ...

    def block_at(self, height: int) -> ChainHead:
        """Return the canonical block at `height`. Raises SourceUnavailable, DecodeError."""
        ...

    def balances(
        self,
        addresses: Sequence[Address],
        assets: Sequence[AssetRef],
        block: ChainHead,
    ) -> list[BalanceObservation]:
        """Return one observation per (address, asset), all read at `block`.

        A single (address, asset) that cannot be read carries an `error`; only a
        source failure raises (SourceUnavailable).
        """
        ...

    def scan(self, watched: Collection[Address], start: int, end: int,
             tracked: Collection[TrackedOutput] = ()) -> ScanResult:
        """Return the transfers and fees of `watched` in blocks start..end (inclusive),
        with the scanned blocks' hashes and parent hashes.

        `tracked`: the watched wallets' outputs still unspent before `start`, which a
        UTXO source without prevout data (Core RPC) needs to see them spent; the
        result's `created`/`spent` update that set. Other sources ignore it.

        Raises SourceUnavailable when any part of the range cannot be read, DecodeError
        for a malformed or inconsistent answer.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class OutputTracker(Protocol):
    """A UTXO source that cannot tell whose output an input spends (Core RPC): its scans
    need the watched wallets' unspent outputs, read once per wallet to start tracking."""

    def unspent(self, addresses: Sequence[Address]) -> tuple[ChainHead, list[TrackedOutput]]:
        """Return the addresses' unspent outputs and the block they were read at."""
        ...
