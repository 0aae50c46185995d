"""PURE: Esplora REST answers as chain types, and what a scan makes of them (no I/O).

The decoders turn `/block/:hash`, `/blocks/:height`, `/address/:a` and address-history
pages (`/address/:a/txs[/chain/:txid]`) into blocks, block links, balances, transaction
counts and transactions. Each is strict: a missing, mistyped or inconsistent field is
a DecodeError naming it (`blocks/120[3].previousblockhash`), never a guess. Addresses
are made canonical for the network where they parse and kept as given where not.

The rest checks and combines what the adapter read in several answers: block pages
must link into one chain (`chain_links`), history pages must continue each other
newest first (`check_next_page`), and `scan_result` turns the range's and the
mempool's transactions into transfers, fees and outputs. The adapter itself (HTTP,
concurrency, retries) is chains.utxo.esplora, its request pacing
chains.utxo.esplora_http and its paging of address histories chains.utxo.esplora_scan.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from chains.errors import DecodeError, InvalidAddress, SourceUnavailable
from chains.http import BoundedResponse
from chains.types import (
    Address,
    BlockLink,
    ChainHead,
    FeePayment,
    ScanResult,
    SpentOutput,
    TrackedOutput,
    TransferObservation,
)
from chains.utxo.address import canonical_utxo_address
from chains.utxo.decode import (
    block_hash,
    checked_height,
    checked_sats,
    checked_time,
    is_hex,
    non_negative_int,
)
from chains.utxo.flows import (
    UNCONFIRMED,
    TxInput,
    TxOutput,
    UtxoTx,
    tx_flows,
    watched_outputs,
    watched_spends,
)

HISTORY_PAGE = 25
"""Confirmed transactions per address-history page; a shorter page ends the history."""

NO_PARENT = "0" * 64
"""The parent hash of a genesis block."""


@dataclass(frozen=True, slots=True)
class ConfirmedTx:
    """A transaction of an address history and the block (height, hash) that holds it."""

    tx: UtxoTx
    height: int
    block_hash: str


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of an address history: its mempool and its confirmed transactions."""

    mempool: tuple[UtxoTx, ...]
    confirmed: tuple[ConfirmedTx, ...]


@dataclass(frozen=True, slots=True)
class AddressHistory:
    """What `scan` read of one address: its mempool transactions and its confirmed ones,
    newest first, down to the first below the range or to the end of its history; `gap`
    says why that history is incomplete, if it is."""

    address: Address
    mempool: tuple[UtxoTx, ...]
    confirmed: tuple[ConfirmedTx, ...]
    gap: str | None = None


def decode_block(raw: Any, source: str) -> ChainHead:
    """Return an Esplora `/block/:hash` answer as a ChainHead. Raises DecodeError."""
    if not isinstance(raw, dict):
        raise DecodeError(source, "block", "not a JSON object")
    return ChainHead(
        height=checked_height(raw.get("height"), source, "block.height"),
        hash=block_hash(raw.get("id"), source, "block.id"),
        timestamp=checked_time(raw.get("timestamp"), source, "block.timestamp"),
    )


def decode_address_balance(raw: Any, source: str, address: str,
                           network: str | None = None) -> int:
    """Return the confirmed satoshis of an `/address/:a` answer (funded minus spent sums of
    `chain_stats`; `mempool_stats` is ignored). Raises DecodeError, also when the answer
    is for another address, spends more than it funded, or holds more than the coin's
    supply on `network`."""
    field = f"address/{address}"
    if not isinstance(raw, dict) or not isinstance(raw.get("chain_stats"), dict):
        raise DecodeError(source, f"{field}.chain_stats", "missing or not a JSON object")
    if raw.get("address", address) != address:
        raise DecodeError(source, f"{field}.address", f"answers for {raw.get('address')!r}")
    stats = raw["chain_stats"]
    funded = non_negative_int(stats.get("funded_txo_sum"), source,
                              f"{field}.chain_stats.funded_txo_sum")
    spent = non_negative_int(stats.get("spent_txo_sum"), source,
                             f"{field}.chain_stats.spent_txo_sum")
    if spent > funded:
        raise DecodeError(source, f"{field}.chain_stats", f"spent {spent} > funded {funded}")
    return checked_sats(funded - spent, source, f"{field}.chain_stats balance", network)


def decode_tx_count(raw: Any, source: str, address: str) -> int:
    """Return `chain_stats.tx_count` of an `/address/:a` answer: how many confirmed
    transactions touch the address. Raises DecodeError, also for another address."""
    field = f"address/{address}"
    if not isinstance(raw, dict) or not isinstance(raw.get("chain_stats"), dict):
        raise DecodeError(source, f"{field}.chain_stats", "missing or not a JSON object")
    if raw.get("address", address) != address:
        raise DecodeError(source, f"{field}.address", f"answers for {raw.get('address')!r}")
    return non_negative_int(raw["chain_stats"].get("tx_count"), source,
                            f"{field}.chain_stats.tx_count")


def decode_block_page(raw: Any, source: str, top: int) -> list[BlockLink]:
    """Return a `/blocks/:top` answer as block links, newest first, starting at `top`.

    Raises DecodeError naming the field for a malformed block, a page that does not
    start at `top`, or blocks that do not each extend the one below them.
    """
    field = f"blocks/{top}"
    if not isinstance(raw, list) or not raw:
        raise DecodeError(source, field, "not a non-empty JSON array")
    links = [decode_block_link(item, source, f"{field}[{n}]") for n, item in enumerate(raw)]
    if links[0].height != top:
        raise DecodeError(source, f"{field}[0].height", f"{links[0].height}, asked for {top}")
    for n, (upper, lower) in enumerate(itertools.pairwise(links), start=1):
        if lower.height != upper.height - 1 or upper.parent_hash != lower.hash:
            raise DecodeError(source, f"{field}[{n}]", "is not the parent of the block above")
    return links


def decode_block_link(raw: Any, source: str, field: str) -> BlockLink:
    """Return one block of a `/blocks` answer (`id`, `height`, `previousblockhash`,
    `timestamp`) as a BlockLink; genesis has no parent. Raises DecodeError."""
    if not isinstance(raw, dict):
        raise DecodeError(source, field, "not a JSON object")
    at = checked_height(raw.get("height"), source, f"{field}.height")
    parent = raw.get("previousblockhash")
    return BlockLink(
        height=at,
        hash=block_hash(raw.get("id"), source, f"{field}.id"),
        parent_hash=NO_PARENT if at == 0 and parent is None
        else block_hash(parent, source, f"{field}.previousblockhash"),
        timestamp=checked_time(raw.get("timestamp"), source, f"{field}.timestamp"),
    )


def chain_links(pages: Iterable[Sequence[BlockLink]], start: int, end: int, source: str
                ) -> tuple[BlockLink, ...]:
    """Return the links of blocks start..end, oldest first, from decoded block pages.

    Raises DecodeError when a height is missing, SourceUnavailable when a block does not
    extend the one below it (pages read before and after the chain moved).
    """
    by_height = {link.height: link for page in pages for link in page}
    links: list[BlockLink] = []
    for height in range(start, end + 1):
        link = by_height.get(height)
        if link is None:
            raise DecodeError(source, "blocks", f"no block at height {height} in the pages")
        if links and link.parent_hash != links[-1].hash:
            raise SourceUnavailable(source, f"the chain moved during the scan (block {height} "
                                    f"does not extend block {height - 1})")
        links.append(link)
    return tuple(links)


def decode_history_page(raw: Any, source: str, network: str, field: str) -> HistoryPage:
    """Return an address-history page (`/address/:a/txs[/chain/:txid]`), its addresses
    canonical for `network` where they parse.

    Raises DecodeError naming the field for a malformed transaction or a page with more
    than HISTORY_PAGE confirmed transactions.
    """
    if not isinstance(raw, list):
        raise DecodeError(source, field, "not a JSON array")
    mempool: list[UtxoTx] = []
    confirmed: list[ConfirmedTx] = []
    for n, item in enumerate(raw):
        tx = decode_tx(item, source, network, f"{field}[{n}]")
        status = decode_status(item.get("status"), source, f"{field}[{n}].status")
        if status is None:
            mempool.append(tx)
        else:
            confirmed.append(ConfirmedTx(tx, *status))
    if len(confirmed) > HISTORY_PAGE:
        raise DecodeError(source, field, f"{len(confirmed)} confirmed transactions on one "
                          f"page (at most {HISTORY_PAGE})")
    return HistoryPage(tuple(mempool), tuple(confirmed))


def decode_tx(raw: Any, source: str, network: str, field: str) -> UtxoTx:
    """Return an Esplora transaction (`txid`, `vin`, `vout`) as a UtxoTx; a coinbase
    has no inputs. Raises DecodeError naming the field."""
    if not isinstance(raw, dict):
        raise DecodeError(source, field, "not a JSON object")
    txid = _hex32(raw.get("txid"), source, f"{field}.txid")
    vin = _array(raw.get("vin"), source, f"{field}.vin")
    vout = _array(raw.get("vout"), source, f"{field}.vout")
    inputs = [_input(item, source, network, f"{field}.vin[{n}]") for n, item in enumerate(vin)]
    outputs = tuple(_output(item, n, source, network, f"{field}.vout[{n}]")
                    for n, item in enumerate(vout))
    return UtxoTx(txid, tuple(i for i in inputs if i is not None), outputs)


def decode_status(raw: Any, source: str, field: str) -> tuple[int, str] | None:
    """Return a transaction `status` as (block height, block hash), None when it is
    unconfirmed. Raises DecodeError naming the field."""
    if not isinstance(raw, dict) or not isinstance(raw.get("confirmed"), bool):
        raise DecodeError(source, f"{field}.confirmed", "missing or not a boolean")
    if not raw["confirmed"]:
        return None
    return (checked_height(raw.get("block_height"), source, f"{field}.block_height"),
            block_hash(raw.get("block_hash"), source, f"{field}.block_hash"))


def check_next_page(history: Sequence[ConfirmedTx], page: Sequence[ConfirmedTx],
                    seen: AbstractSet[str], source: str, field: str) -> None:
    """Raise DecodeError unless `page` continues `history` (whose txids are `seen`) newest
    first, with no transaction twice: where paging stops depends on that order, and a
    source that repeated a page would otherwise be paged through for ever."""
    for newer, older in itertools.pairwise([*history[-1:], *page]):
        if older.height > newer.height:
            raise DecodeError(source, field, f"not newest first: {older.tx.txid} at "
                              f"{older.height} after {newer.tx.txid} at {newer.height}")
    txids = [item.tx.txid for item in page]
    if len(set(txids)) != len(txids) or not seen.isdisjoint(txids):
        raise DecodeError(source, field, "lists a transaction twice")


def range_txs(histories: Iterable[AddressHistory], links: Sequence[BlockLink], source: str
              ) -> list[tuple[UtxoTx, ChainHead]]:
    """Return the histories' confirmed transactions in the range of `links` (each once),
    with their blocks, ordered by height, then txid.

    Raises SourceUnavailable when a transaction's block is not the range's block at its
    height: the chain moved between the reads.
    """
    start = links[0].height
    found: dict[str, tuple[UtxoTx, ChainHead]] = {}
    for history in histories:
        for item in history.confirmed:
            if not start <= item.height <= links[-1].height:
                continue
            link = links[item.height - start]
            if item.block_hash != link.hash:
                raise SourceUnavailable(
                    source, f"the chain moved during the scan: {item.tx.txid} is in block "
                    f"{item.block_hash} at height {item.height}, the scan read {link.hash}")
            found[item.tx.txid] = (item.tx, ChainHead(link.height, link.hash, link.timestamp))
    return sorted(found.values(), key=lambda pair: (pair[1].height, pair[0].txid))


def mempool_txs(histories: Iterable[AddressHistory]) -> list[UtxoTx]:
    """Return the histories' unconfirmed transactions, each once, except those another
    history already saw confirmed (mined between the reads)."""
    histories = list(histories)
    mined = {item.tx.txid for history in histories for item in history.confirmed}
    unique = {tx.txid: tx for history in histories for tx in history.mempool}
    return [tx for txid, tx in unique.items() if txid not in mined]


def scan_result(links: tuple[BlockLink, ...], histories: Sequence[AddressHistory],
                watched: frozenset[Address], source: str) -> ScanResult:
    """Return the ScanResult of the range `links` from the histories read: the transfers,
    fees, created and spent outputs of `watched` in its confirmed transactions, and the
    transfers of its mempool transactions. Raises SourceUnavailable as range_txs does."""
    transfers: list[TransferObservation] = []
    fees: list[FeePayment] = []
    created: list[TrackedOutput] = []
    spent: list[SpentOutput] = []
    for tx, block in range_txs(histories, links, source):
        flows = tx_flows(tx, block, watched, source)
        transfers += flows.transfers
        if flows.fee is not None:
            fees.append(flows.fee)
        created += watched_outputs(tx, watched, block.height)
        spent += watched_spends(tx, watched, block.height)
    mempool = [transfer for tx in mempool_txs(histories)
               for transfer in tx_flows(tx, UNCONFIRMED, watched, source).transfers]
    return ScanResult(links, tuple(transfers), tuple(fees), "none", 0,
                      mempool=tuple(mempool), created=tuple(created), spent=tuple(spent))


def _input(raw: Any, source: str, network: str, field: str) -> TxInput | None:
    """One input with its prevout's address and value; None for a coinbase input."""
    if not isinstance(raw, dict):
        raise DecodeError(source, field, "not a JSON object")
    coinbase = raw.get("is_coinbase", False)
    if not isinstance(coinbase, bool):
        raise DecodeError(source, f"{field}.is_coinbase", "not a boolean")
    if coinbase:
        return None
    prevout = raw.get("prevout")
    if not isinstance(prevout, dict):
        raise DecodeError(source, f"{field}.prevout", "missing or not a JSON object")
    return TxInput(
        prev_txid=_hex32(raw.get("txid"), source, f"{field}.txid"),
        prev_vout=checked_height(raw.get("vout"), source, f"{field}.vout"),
        address=_address(prevout.get("scriptpubkey_address"), network, source,
                         f"{field}.prevout.scriptpubkey_address"),
        value=checked_sats(prevout.get("value"), source, f"{field}.prevout.value", network),
    )


def _output(raw: Any, index: int, source: str, network: str, field: str) -> TxOutput:
    if not isinstance(raw, dict):
        raise DecodeError(source, field, "not a JSON object")
    script = raw.get("scriptpubkey")
    if not isinstance(script, str) or not is_hex(script):
        raise DecodeError(source, f"{field}.scriptpubkey", f"not hex: {str(script)[:80]!r}")
    return TxOutput(
        index=index,
        script=script.lower(),
        value=checked_sats(raw.get("value"), source, f"{field}.value", network),
        address=_address(raw.get("scriptpubkey_address"), network, source,
                         f"{field}.scriptpubkey_address"),
    )


def _address(value: Any, network: str, source: str, field: str) -> Address | None:
    """An optional address, canonical for `network` when it parses, else as given."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise DecodeError(source, field, f"not an address: {str(value)[:80]!r}")
    return _canonical(value, network)


@lru_cache(maxsize=65_536)
def _canonical(text: str, network: str) -> Address:
    try:
        return canonical_utxo_address(text, network)
    except InvalidAddress:
        return Address(text)


def _hex32(value: Any, source: str, field: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or not is_hex(value):
        raise DecodeError(source, field, f"not a 32-byte hex txid: {str(value)[:80]!r}")
    return value.lower()


def _array(value: Any, source: str, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise DecodeError(source, field, "missing or not a JSON array")
    return value


def json_body(response: BoundedResponse, source: str, field: str) -> Any:
    """The response body as JSON. Raises DecodeError naming `field`."""
    try:
        return json.loads(response.content)
    except ValueError:
        raise DecodeError(source, field, "response body is not valid JSON") from None
    except RecursionError:  # garbage such as "[[[[..." nested past the parser's limit
        raise DecodeError(source, field, "response body is nested too deeply") from None
