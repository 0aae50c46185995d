"""How the Esplora adapter's scan reads: concurrent reads gathered, histories paged.

`gather_all` and `cancel_all` collect the block pages and address histories that the
adapter's worker threads read at once (after a failure, the reads not yet started are
cancelled); `address_history` reads one address's history page by page, newest first, and
checks a history read to its end against `chain_stats.tx_count`, through the
adapter's own page and count reads, passed in. The adapter itself (HTTP, pacing,
retries, and checking that the chain held still during a scan) is chains.utxo.esplora,
the decoding of each answer chains.utxo.esplora_decode.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import quote

from chains.errors import DecodeError
from chains.types import Address
from chains.utxo.esplora_decode import (
    HISTORY_PAGE,
    AddressHistory,
    ConfirmedTx,
    HistoryPage,
    check_next_page,
)

_T = TypeVar("_T")


def gather_all(jobs: Iterable[Future[_T]]) -> list[_T]:
    """The jobs' results in order; the first failure is raised."""
    return [job.result() for job in jobs]


def cancel_all(*groups: Iterable[Future[Any]]) -> None:
    for job in itertools.chain(*groups):
        job.cancel()


def address_history(address: Address, start: int, history_page: Callable[[str], HistoryPage],
             tx_count: Callable[[Address], int], source: str) -> AddressHistory:
    """Read `address`'s history pages, newest first, until a confirmed transaction
    below `start` or the end of the history; check a history read to its end
    against `chain_stats.tx_count`."""
    path = f"/address/{quote(address, safe='')}/txs"
    first = history_page(path)
    confirmed: list[ConfirmedTx] = []
    seen: set[str] = set()
    last, last_path = first.confirmed, path
    while True:
        check_next_page(confirmed, last, seen, source, last_path[1:])
        confirmed += last
        seen.update(item.tx.txid for item in last)
        if len(last) < HISTORY_PAGE or last[-1].height < start:
            break
        last_path = f"{path}/chain/{last[-1].tx.txid}"
        page = history_page(last_path)
        if page.mempool:
            raise DecodeError(source, last_path[1:], "lists unconfirmed transactions")
        last = page.confirmed
    gap = None
    if len(last) < HISTORY_PAGE:
        count = tx_count(address)
        if count != len(confirmed):
            gap = (f"read {len(confirmed)} confirmed transactions, "
                   f"chain_stats.tx_count is {count}")
    return AddressHistory(address, first.mempool, tuple(confirmed), gap)
