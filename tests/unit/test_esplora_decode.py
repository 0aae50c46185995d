"""Esplora answers → blocks, transactions and history pages (pure decoders, no I/O)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chains.errors import DecodeError, SourceUnavailable
from chains.types import Address, BlockLink, ChainHead
from chains.utxo.esplora_decode import (
    HISTORY_PAGE,
    NO_PARENT,
    AddressHistory,
    ConfirmedTx,
    chain_links,
    check_next_page,
    decode_block_page,
    decode_history_page,
    decode_status,
    decode_tx,
    decode_tx_count,
    mempool_txs,
    range_txs,
)
from chains.utxo.flows import TxInput, TxOutput, UtxoTx

SRC = "https://esplora.test/api"
NET = "litecoin-regtest"
ADDR = "rltc1qxxhu7c0cxlr37e9f9u5ew5p3sdg7l8xsk5fr07"


def h(n: int) -> str:
    return f"{n:064x}"


def tx_json(txid: str = h(1), *, confirmed_at: int | None = 7) -> dict[str, Any]:
    status: dict[str, Any] = {"confirmed": False}
    if confirmed_at is not None:
        status = {"confirmed": True, "block_height": confirmed_at,
                  "block_hash": h(1000 + confirmed_at), "block_time": 1}
    return {
        "txid": txid,
        "vin": [{"txid": h(2), "vout": 3, "is_coinbase": False,
                 "prevout": {"scriptpubkey": "0014" + "11" * 20,
                             "scriptpubkey_address": ADDR.upper(), "value": 5_000}}],
        "vout": [{"scriptpubkey": "0014" + "22" * 20, "scriptpubkey_address": "not-parsable",
                  "value": 4_000},
                 {"scriptpubkey": "6a04deadbeef", "value": 0}],
        "status": status,
    }


def block_json(height: int) -> dict[str, Any]:
    return {"id": h(1000 + height), "height": height, "timestamp": 100 + height,
            "previousblockhash": h(1000 + height - 1) if height else None}


def test_a_transaction_decodes_with_prevouts_and_canonical_addresses() -> None:
    """Inputs carry their prevout's address (canonical: bech32 lowercased) and value;
    outputs keep their index and script; an address that does not parse is kept."""
    tx = decode_tx(tx_json(), SRC, NET, "tx")
    assert tx == UtxoTx(h(1), (TxInput(h(2), 3, Address(ADDR), 5_000),), (
        TxOutput(0, "0014" + "22" * 20, 4_000, Address("not-parsable")),
        TxOutput(1, "6a04deadbeef", 0, None)))


def test_a_coinbase_has_no_inputs() -> None:
    """An input marked is_coinbase (no prevout) is no input at all."""
    raw = tx_json()
    raw["vin"] = [{"txid": "0" * 64, "vout": 0xFFFFFFFF, "prevout": None, "is_coinbase": True}]
    assert decode_tx(raw, SRC, NET, "tx").inputs == ()


@pytest.mark.parametrize("value", [1.5, True, -1, "4000", None])
@pytest.mark.parametrize("where", ["vout", "prevout"])
def test_an_amount_that_is_not_a_non_negative_json_integer_is_rejected(
        value: Any, where: str) -> None:
    """Floats, booleans, negatives, strings and missing amounts are a DecodeError naming
    the field."""
    raw = tx_json()
    if where == "vout":
        raw["vout"][0]["value"] = value
        field = r"tx\.vout\[0\]\.value"
    else:
        raw["vin"][0]["prevout"]["value"] = value
        field = r"tx\.vin\[0\]\.prevout\.value"
    with pytest.raises(DecodeError, match=field):
        decode_tx(raw, SRC, NET, "tx")


@pytest.mark.parametrize(("edit", "field"), [
    (lambda t: t.pop("txid"), r"tx\.txid"),
    (lambda t: t.update(txid="zz" * 32), r"tx\.txid"),
    (lambda t: t.pop("vout"), r"tx\.vout"),
    (lambda t: t["vin"][0].pop("prevout"), r"tx\.vin\[0\]\.prevout"),
    (lambda t: t["vin"][0].update(is_coinbase="no"), r"tx\.vin\[0\]\.is_coinbase"),
    (lambda t: t["vin"][0].pop("vout"), r"tx\.vin\[0\]\.vout"),
    (lambda t: t["vout"][1].update(scriptpubkey="xyz"), r"tx\.vout\[1\]\.scriptpubkey"),
    (lambda t: t["vout"][0].update(scriptpubkey_address=5), r"vout\[0\]\.scriptpubkey_address"),
])
def test_a_missing_or_malformed_field_is_a_decode_error_naming_it(edit: Any, field: str) -> None:
    """Every field the flows need is checked; the error names it."""
    raw = tx_json()
    edit(raw)
    with pytest.raises(DecodeError, match=field):
        decode_tx(raw, SRC, NET, "tx")


def test_status_gives_the_confirming_block_or_none() -> None:
    """A confirmed status is (height, hash); an unconfirmed one None; no `confirmed`
    flag is a DecodeError."""
    assert decode_status(tx_json()["status"], SRC, "s") == (7, h(1007))
    assert decode_status({"confirmed": False}, SRC, "s") is None
    with pytest.raises(DecodeError, match=r"s\.confirmed"):
        decode_status({}, SRC, "s")
    with pytest.raises(DecodeError, match=r"s\.block_hash"):
        decode_status({"confirmed": True, "block_height": 1}, SRC, "s")


def test_a_history_page_splits_mempool_and_confirmed() -> None:
    """Unconfirmed transactions are the page's mempool, the rest confirmed with blocks."""
    page = decode_history_page([tx_json(h(5), confirmed_at=None), tx_json(h(6))], SRC, NET, "p")
    assert [tx.txid for tx in page.mempool] == [h(5)]
    assert [(c.tx.txid, c.height, c.block_hash) for c in page.confirmed] == [(h(6), 7, h(1007))]


def test_a_page_longer_than_esplora_pages_is_rejected() -> None:
    """More than 25 confirmed transactions on one page breaks paging: DecodeError."""
    raw = [tx_json(h(n)) for n in range(HISTORY_PAGE + 1)]
    with pytest.raises(DecodeError, match="26 confirmed transactions"):
        decode_history_page(raw, SRC, NET, "p")
    with pytest.raises(DecodeError, match="not a JSON array"):
        decode_history_page({"txs": []}, SRC, NET, "p")


def confirmed(txid: int, height: int, block: str | None = None) -> ConfirmedTx:
    return ConfirmedTx(UtxoTx(h(txid), (), ()), height, block or h(1000 + height))


def test_a_history_must_stay_newest_first_without_repeats() -> None:
    """Paging stops on the first old transaction, so each page must continue the history
    in order and repeat none of its transactions (also within the page)."""
    history = [confirmed(1, 9), confirmed(2, 9)]
    check_next_page(history, [confirmed(3, 9), confirmed(4, 4)], {h(1), h(2)}, SRC, "p")
    with pytest.raises(DecodeError, match="not newest first"):
        check_next_page(history, [confirmed(3, 10)], {h(1), h(2)}, SRC, "p")
    with pytest.raises(DecodeError, match="not newest first"):
        check_next_page([], [confirmed(3, 4), confirmed(4, 5)], set(), SRC, "p")
    with pytest.raises(DecodeError, match="twice"):
        check_next_page(history, [confirmed(2, 9)], {h(1), h(2)}, SRC, "p")
    with pytest.raises(DecodeError, match="twice"):
        check_next_page([], [confirmed(5, 9), confirmed(5, 9)], set(), SRC, "p")


def test_block_pages_decode_newest_first_and_must_link() -> None:
    """A `/blocks/:h` page starts at h and each block is the parent of the one above;
    genesis has no parent."""
    links = decode_block_page([block_json(n) for n in (2, 1, 0)], SRC, 2)
    assert links[0] == BlockLink(2, h(1002), h(1001), 102)
    assert links[-1].parent_hash == NO_PARENT
    with pytest.raises(DecodeError, match=r"blocks/3\[0\]\.height"):
        decode_block_page([block_json(2)], SRC, 3)
    broken = [block_json(5), {**block_json(4), "id": h(1)}]
    with pytest.raises(DecodeError, match=r"blocks/5\[1\]"):
        decode_block_page(broken, SRC, 5)
    with pytest.raises(DecodeError, match=r"previousblockhash"):
        decode_block_page([{**block_json(5), "previousblockhash": None}], SRC, 5)


def test_chain_links_cover_the_range_and_pages_must_link() -> None:
    """The range's links come oldest first; a missing height is a DecodeError, pages that
    do not link (read before and after a reorg) SourceUnavailable."""
    upper = decode_block_page([block_json(n) for n in range(14, 4, -1)], SRC, 14)
    lower = decode_block_page([block_json(n) for n in range(4, -1, -1)], SRC, 4)
    links = chain_links([upper, lower], 3, 12, SRC)
    assert [link.height for link in links] == list(range(3, 13))
    with pytest.raises(DecodeError, match="height 2"):
        chain_links([upper], 2, 12, SRC)
    moved = [BlockLink(4, h(1), h(2), 1)]
    with pytest.raises(SourceUnavailable, match="chain moved"):
        chain_links([upper, moved], 4, 6, SRC)


def test_range_transactions_are_deduplicated_ordered_and_checked_against_the_blocks() -> None:
    """Transactions in two histories count once, outside the range not at all, ordered by
    height then txid, with the block link's hash and time."""
    links = [BlockLink(n, h(1000 + n), h(999 + n), 100 + n) for n in range(5, 8)]
    one = AddressHistory(Address("a"), (), (confirmed(9, 7), confirmed(3, 6), confirmed(4, 4)))
    two = AddressHistory(Address("b"), (), (confirmed(9, 7), confirmed(2, 6)))
    found = range_txs([one, two], links, SRC)
    assert [(tx.txid, block) for tx, block in found] == [
        (h(2), ChainHead(6, h(1006), 106)), (h(3), ChainHead(6, h(1006), 106)),
        (h(9), ChainHead(7, h(1007), 107))]
    stale = AddressHistory(Address("c"), (), (confirmed(8, 6, block=h(1)),))
    with pytest.raises(SourceUnavailable, match="chain moved"):
        range_txs([stale], links, SRC)


def test_mempool_transactions_count_once_unless_seen_mined() -> None:
    """A mempool transaction listed by two addresses counts once; one that another
    history already shows confirmed is dropped."""
    pending, mined = UtxoTx(h(1), (), ()), UtxoTx(h(2), (), ())
    one = AddressHistory(Address("a"), (pending, mined), ())
    two = AddressHistory(Address("b"), (pending,), (ConfirmedTx(mined, 5, h(5)),))
    assert mempool_txs([one, two]) == [pending]


def test_tx_count_is_read_from_chain_stats() -> None:
    """`chain_stats.tx_count` must be a non-negative integer of the asked address."""
    stats = {"address": "x", "chain_stats": {"tx_count": 3}}
    assert decode_tx_count(stats, SRC, "x") == 3
    for bad in ({"address": "x", "chain_stats": {"tx_count": 2.0}},
                {"address": "y", "chain_stats": {"tx_count": 3}}, {"address": "x"}):
        with pytest.raises(DecodeError):
            decode_tx_count(copy.deepcopy(bad), SRC, "x")
