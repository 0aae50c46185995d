"""`compare_scans`: two sources' scans of one range agree on block hashes and on each
block's number of watched transfers, or the disagreement is named."""

from __future__ import annotations

from chains.types import Address, BaseUnits, BlockLink, ChainHead, ScanResult, TransferObservation
from daemon.runtime.scanning import compare_scans

A = Address("0x" + "a1" * 20)
B = Address("0x" + "b2" * 20)


def blocks(*heights: int, salt: int = 0) -> tuple[BlockLink, ...]:
    return tuple(BlockLink(h, f"0x{h + salt:064x}", f"0x{h - 1:064x}", None) for h in heights)


def transfer(height: int, kind: str = "native") -> TransferObservation:
    return TransferObservation(kind, ChainHead(height, f"0x{height:064x}"),  # type: ignore[arg-type]
                               "0x" + "cd" * 32, None, A, B, None, BaseUnits(1), "s")


def scan(block_links: tuple[BlockLink, ...], *moved: TransferObservation,
         traces: str = "none") -> ScanResult:
    return ScanResult(block_links, moved, (), traces, 0)  # type: ignore[arg-type]


def test_identical_scans_agree() -> None:
    """The same blocks and the same transfers: no disagreement."""
    assert compare_scans(scan(blocks(5, 6), transfer(6)), scan(blocks(5, 6), transfer(6))) is None


def test_a_swapped_block_hash_is_named() -> None:
    """A block whose hash differs between the sources is named with both hashes."""
    reason = compare_scans(scan(blocks(5, 6)), scan(blocks(5) + blocks(6, salt=9)))
    assert reason is not None and reason.startswith("block 6 is 0x")


def test_a_withheld_transfer_is_named() -> None:
    """A block where one source reports fewer watched transfers is named with both counts."""
    reason = compare_scans(scan(blocks(5, 6), transfer(5)), scan(blocks(5, 6)))
    assert reason == ("block 5 has 1 transfers of watched wallets at one source and 0 "
                      "at the other")


def test_internal_transfers_count_only_when_both_sources_trace_alike() -> None:
    """An internal transfer that only a tracing source sees is no disagreement; between two
    tracing sources it is."""
    traced = scan(blocks(5), transfer(5, "internal"), traces="geth")
    assert compare_scans(traced, scan(blocks(5))) is None
    assert compare_scans(traced, scan(blocks(5), traces="geth")) is not None
