"""Pure decoding of ERC-20 `Transfer` logs (`eth_getLogs` results, a receipt's `logs`)
into `token` transfer observations.

No I/O. Every log must belong to the block the caller expects (by hash, or by height);
a malformed one raises one `DecodeError` naming the field and the source. ERC-721
transfers, other Transfer-shaped logs and logs removed by a reorg are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from chains.errors import DecodeError
from chains.evm.address import canonical_evm_address
from chains.evm.fields import evm_address, field, hex_data, hex_hash, hex_quantity
from chains.limits import MAX_HEIGHT
from chains.types import BaseUnits, ChainHead, TransferObservation

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
"""topic0 of `Transfer(address,address,uint256)` (ERC-20; ERC-721 shares it with 4 topics)."""

_PADDED_ADDRESS = re.compile(r"0x0{24}([0-9a-f]{40})", re.ASCII)


# --- ERC-20 Transfer logs -------------------------------------------------------------
Expected = Mapping[int, str | ChainHead] | str | ChainHead
"""The block(s) logs must belong to: one hash or head, or height → hash or head."""


def token_transfers(raw_logs: Sequence[Any], expected_hashes: Expected,
                    source: str) -> list[TransferObservation]:
    """Return one `token` transfer per ERC-20 `Transfer` log (3 topics, 32-byte data).

    ERC-721 transfers (4 topics), other Transfer-shaped logs and `removed` logs are
    skipped; a log seen twice (same block hash and index) counts once. Given heads
    (not hashes), observations carry them (with timestamps). Raises DecodeError for a
    malformed log, or one whose block is not the expected one ("log of another block").
    """
    out: dict[tuple[str, int], TransferObservation] = {}
    for position, raw in enumerate(raw_logs):
        where = f"logs[{position}]"
        if isinstance(raw, dict) and raw.get("removed") is True:
            continue  # orphaned by a reorg: it may name a block that is no longer canonical
        head = _log_block(raw, where, expected_hashes, source)
        index = hex_quantity(field(raw, "logIndex", where, source), f"{where}.logIndex", source,
                             MAX_HEIGHT)
        transfer = _erc20_transfer(raw, where, head, index, source)
        if transfer is not None:
            out.setdefault((head.hash, index), transfer)
    return list(out.values())


def _log_block(raw: Any, where: str, expected: Expected, source: str) -> ChainHead:
    height = hex_quantity(field(raw, "blockNumber", where, source), f"{where}.blockNumber",
                          source, MAX_HEIGHT)
    block_hash = hex_hash(field(raw, "blockHash", where, source), f"{where}.blockHash", source)
    want = expected if isinstance(expected, str | ChainHead) else expected.get(height)
    if isinstance(want, ChainHead):
        if want.height == height and want.hash.lower() == block_hash:
            return want
    elif want is not None and want.lower() == block_hash:
        return ChainHead(height, block_hash)
    shown = want.hash if isinstance(want, ChainHead) else want
    raise DecodeError(source, f"{where}.blockHash", f"log of another block: {block_hash} "
                      f"at {height}, expected {shown or 'no block at that height'}")


def _erc20_transfer(raw: Any, where: str, head: ChainHead, index: int,
                    source: str) -> TransferObservation | None:
    topics = field(raw, "topics", where, source)
    if not isinstance(topics, list):
        raise DecodeError(source, f"{where}.topics", "not a list")
    words = [hex_hash(t, f"{where}.topics[{i}]", source) for i, t in enumerate(topics)]
    data = hex_data(field(raw, "data", where, source), f"{where}.data", source)
    contract = evm_address(field(raw, "address", where, source), f"{where}.address", source)
    if len(words) != 3 or words[0] != TRANSFER_TOPIC or len(data) != 32:
        return None
    ends = [_PADDED_ADDRESS.fullmatch(w) for w in words[1:]]
    if ends[0] is None or ends[1] is None:
        return None
    return TransferObservation(
        kind="token", block=head,
        tx_hash=hex_hash(field(raw, "transactionHash", where, source),
                         f"{where}.transactionHash", source),
        log_index=index, sender=canonical_evm_address("0x" + ends[0].group(1)),
        recipient=canonical_evm_address("0x" + ends[1].group(1)), contract=contract,
        amount=BaseUnits(int.from_bytes(data, "big")), source=source)
