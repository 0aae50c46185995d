"""Unit tests of the hand-written Multicall3 aggregate3 encoding, with eth_abi as the oracle."""

from __future__ import annotations

import contextlib
import re

import pytest
from eth_abi.abi import encode
from hypothesis import given
from hypothesis import strategies as st

from chains.evm.multicall import (
    BALANCE_OF_SELECTOR,
    BalanceReadError,
    Call,
    CallResult,
    MulticallDecodeError,
    address_word,
    balance_of_call,
    decode_aggregate3,
    decode_balance,
    encode_aggregate3,
    get_eth_balance_call,
    selector,
)

MULTICALL = "0xcA11bde05977b3631167028862bE2a173976CA11"
WALLET = "0x00000000000000000000000000000000DeaDBeef"

addresses = st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex())
calls = st.builds(
    Call, target=addresses, call_data=st.binary(max_size=100), allow_failure=st.booleans()
)
results = st.lists(st.tuples(st.booleans(), st.binary(max_size=80)), max_size=20)


def reference_results(items: list[tuple[bool, bytes]]) -> bytes:
    return encode(["(bool,bytes)[]"], [items])


def test_selectors_come_from_the_shipped_abi() -> None:
    """The selectors read from Multicall3.json are the canonical Multicall3 ones."""
    assert selector("aggregate3").hex() == "82ad56cb"
    assert selector("getEthBalance").hex() == "4d2301cc"
    assert BALANCE_OF_SELECTOR.hex() == "70a08231"


def test_balance_calls_encode_the_wallet_as_one_word() -> None:
    """getEthBalance targets Multicall3 and balanceOf the token, each with the wallet as a word."""
    native = get_eth_balance_call(MULTICALL, WALLET)
    token = balance_of_call("0x" + "11" * 20, WALLET)
    assert native.target == MULTICALL
    assert native.call_data == bytes.fromhex("4d2301cc") + bytes(28) + bytes.fromhex("deadbeef")
    assert token.call_data == bytes.fromhex("70a08231") + bytes(28) + bytes.fromhex("deadbeef")


def test_address_word_rejects_wrong_length() -> None:
    """An address that is not 20 bytes of hex raises ValueError."""
    with pytest.raises(ValueError, match="20-byte"):
        address_word("0x1234")


@given(st.lists(calls, max_size=20))
def test_encode_matches_eth_abi(items: list[Call]) -> None:
    """encode_aggregate3 produces exactly the calldata eth_abi produces."""
    expected = selector("aggregate3") + encode(
        ["(address,bool,bytes)[]"], [[(c.target, c.allow_failure, c.call_data) for c in items]]
    )
    assert encode_aggregate3(items) == expected


@given(results)
def test_decode_matches_eth_abi(items: list[tuple[bool, bytes]]) -> None:
    """decode_aggregate3 reads back what eth_abi encoded, in order."""
    decoded = decode_aggregate3(reference_results(items), len(items))
    assert [(r.success, r.return_data) for r in decoded] == items


@given(results.filter(bool), st.data())
def test_truncated_data_raises_decode_error(
    items: list[tuple[bool, bytes]], data: st.DataObject
) -> None:
    """Any truncation of a valid result raises MulticallDecodeError, never another error."""
    full = reference_results(items)
    cut = data.draw(st.integers(min_value=0, max_value=len(full) - 1))
    truncated = full[:cut]
    try:
        decoded = decode_aggregate3(truncated, len(items))
    except MulticallDecodeError:
        return
    # Trailing padding can be cut without losing information: then decoding must agree.
    assert [(r.success, r.return_data) for r in decoded] == items


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=5))
def test_arbitrary_bytes_never_crash(data: bytes, expected: int) -> None:
    """Decoding arbitrary bytes returns results or raises MulticallDecodeError only."""
    with contextlib.suppress(MulticallDecodeError):
        decode_aggregate3(data, expected)


def test_count_mismatch_raises() -> None:
    """A result with a different number of items than calls raises MulticallDecodeError."""
    with pytest.raises(MulticallDecodeError, match="2 results for 3 calls"):
        decode_aggregate3(reference_results([(True, b""), (True, b"")]), 3)


def test_non_bool_success_flag_raises() -> None:
    """A success flag other than 0 or 1 raises MulticallDecodeError."""
    data = bytearray(reference_results([(True, bytes(32))]))
    data[32 * 4 - 1] = 2  # head, length, one offset, then the tuple's flag word
    with pytest.raises(MulticallDecodeError, match="not a bool"):
        decode_aggregate3(bytes(data), 1)


def test_decode_balance_reads_one_word() -> None:
    """A successful call returning one 32-byte word gives that uint256."""
    big = 2**256 - 1
    assert decode_balance(CallResult(True, big.to_bytes(32, "big"))) == big
    assert isinstance(decode_balance(CallResult(True, (5).to_bytes(32, "big"))), int)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "0 bytes, expected 32 (no contract code?)"),
        (bytes(16), "16 bytes, expected 32"),
        (bytes(64), "64 bytes, expected 32"),
    ],
)
def test_decode_balance_rejects_malformed_data(data: bytes, reason: str) -> None:
    """Return data that is not exactly one word raises BalanceReadError naming its size."""
    with pytest.raises(BalanceReadError, match=re.escape(reason)):
        decode_balance(CallResult(True, data))


def test_decode_balance_reports_revert_reason() -> None:
    """A failed call raises BalanceReadError carrying the Error(string) revert reason."""
    revert = bytes.fromhex("08c379a0") + encode(["string"], ["paused"])
    with pytest.raises(BalanceReadError, match="call reverted: paused"):
        decode_balance(CallResult(False, revert))
    with pytest.raises(BalanceReadError, match="4 bytes of revert data"):
        decode_balance(CallResult(False, b"\x01\x02\x03\x04"))
