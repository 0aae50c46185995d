"""Approved-withdrawal import: parsing, per-line and cross-line validation, all or nothing."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.evm.address import canonical_evm_address
from chains.types import Address, AssetRef, BaseUnits
from daemon.errors import InputError
from daemon.inputs.config import Settings
from daemon.inputs.withdrawals import ApprovedWithdrawal, parse_withdrawals, summarize_withdrawals
from daemon.rules.amounts import format_amount

USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
UNCONFIGURED_TOKEN = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
HEADER = "id,chain,from_address,to_address,asset,amount,approved_by,approved_at,tx_hash\n"
ETH = AssetRef("ETH", 18)
USDC_REF = AssetRef("USDC", 6, Address(USDC))
EVM_TX = "0x" + "ab" * 32
BTC_TX = "cd" * 32
WHEN = "2024-05-01T14:30:00Z"
WHEN_UTC = datetime(2024, 5, 1, 14, 30, tzinfo=UTC)


def _evm(n: int) -> str:
    """A valid, checksummed EVM address derived from `n`."""
    return canonical_evm_address(f"0x{n:040x}")


def _btc(n: int, hrp: str = "bc") -> str:
    """A valid P2WPKH address for key hash bytes([n]) * 20, encoded by bitcoinlib."""
    from bitcoinlib.encoding import pubkeyhash_to_addr_bech32  # after chains.utxo's import

    return str(pubkeyhash_to_addr_bech32(bytes([n]) * 20, prefix=hrp))


A1, A2, A3 = _evm(0xA1), _evm(0xA2), _evm(0xA3)
BAD_CHECKSUM = "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def make_settings() -> Settings:
    """An ethereum chain (ETH + USDC) and a bitcoin chain; carol and dave are checkers,
    mallory only a maker."""
    return Settings(users=[{"name": "carol", "roles": ["checker"]},  # type: ignore[list-item]
                           {"name": "dave", "roles": ["checker"]},
                           {"name": "mallory", "roles": ["maker"]}], chains=[
        {"name": "ethereum", "family": "evm", "chain_id": 1,
         "sources": [{"kind": "jsonrpc", "url": "http://127.0.0.1:8545"}],
         "tokens": [{"symbol": "USDC", "contract": USDC, "decimals": 6}]},
        {"name": "bitcoin", "family": "utxo", "network": "bitcoin",
         "sources": [{"kind": "core-rpc", "url": "http://127.0.0.1:8332"}]},
    ])


def _write(directory: Path, text: str, name: str = "withdrawals.csv") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def _errors(path: Path) -> list[str]:
    with pytest.raises(InputError) as caught:
        parse_withdrawals(path, make_settings())
    return caught.value.lines


GOOD_CSV = HEADER + "\n".join([
    f"W-1,ethereum,{A1.lower()},{A2},USDC,1250.5,carol,{WHEN},{EVM_TX.upper().replace('0X', '0x')}",
    f"W-2,Ethereum,{A1},{A3},eth,0.25,carol,2024-05-01T10:30:00-04:00,",
    f"W-3,ethereum,{A2},{A3},{USDC.lower()},0.000001,dave,2024-05-02 09:00:00+02:00,",
    f"W-4,bitcoin,{_btc(1).upper()},{_btc(2)},BTC,0.5,dave,2024-05-03T00:00:00+00:00,{BTC_TX}",
]) + "\n"


def test_good_csv_imports_every_line_canonically(tmp_path: Path) -> None:
    """A valid CSV yields one withdrawal per line: canonical addresses, base units, UTC times."""
    rows = parse_withdrawals(_write(tmp_path, GOOD_CSV), make_settings())
    assert [r.line for r in rows] == [2, 3, 4, 5]
    assert rows[0] == ApprovedWithdrawal(2, "W-1", "ethereum", Address(A1), Address(A2), USDC_REF,
                                         BaseUnits(1_250_500_000), "carol", WHEN_UTC, EVM_TX)
    assert rows[1].chain == "ethereum" and rows[1].asset == ETH
    assert rows[1].amount == 25 * 10**16 and rows[1].tx_hash is None
    assert rows[1].approved_at == WHEN_UTC and rows[1].approved_at.tzinfo is UTC
    assert rows[2].asset == USDC_REF and rows[2].amount == 1
    assert rows[2].approved_at == datetime(2024, 5, 2, 7, 0, tzinfo=UTC)
    assert rows[3].from_address == _btc(1) and rows[3].amount == 50_000_000
    assert rows[3].tx_hash == BTC_TX


def test_good_json_imports_array_and_wrapped_forms(tmp_path: Path) -> None:
    """A JSON array and {"withdrawals": [...]} give the same rows; integer ids and amounts count."""
    items = [{"id": 17, "chain": "ethereum", "from_address": A1, "to_address": A2,
              "asset": "USDC", "amount": "1.5", "approved_by": "carol", "approved_at": WHEN,
              "tx_hash": None},
             {"id": "W-18", "chain": "bitcoin", "from_address": _btc(3), "to_address": _btc(4),
              "asset": "BTC", "amount": 2, "approved_by": "dave", "approved_at": WHEN,
              "tx_hash": BTC_TX.upper()}]
    plain = parse_withdrawals(_write(tmp_path, json.dumps(items), "a.json"), make_settings())
    wrapped = parse_withdrawals(_write(tmp_path, json.dumps({"withdrawals": items}), "b.json"),
                                make_settings())
    assert plain == wrapped
    assert [(r.line, r.id, r.amount, r.tx_hash) for r in plain] == [
        (1, "17", 1_500_000, None), (2, "W-18", 200_000_000, BTC_TX)]


def _line(**changes: str) -> str:
    """A valid ethereum CSV line (id W-9) with some fields replaced."""
    fields = {"id": "W-9", "chain": "ethereum", "from_address": A1, "to_address": A2,
              "asset": "ETH", "amount": "1", "approved_by": "carol", "approved_at": WHEN,
              "tx_hash": "", **changes}
    return ",".join(fields.values())


BAD_LINES = [
    (_line(id=" "), "missing id"),
    (_line(chain="solana"), "unknown chain 'solana' (known: ethereum, bitcoin)"),
    (_line(chain=""), "missing chain"),
    (_line(from_address="0x1234"), "invalid from_address for chain ethereum"),
    (_line(to_address=BAD_CHECKSUM), "invalid to_address for chain ethereum: bad EIP-55"),
    (_line(chain="bitcoin", asset="BTC", from_address=_btc(5, "tb"), to_address=_btc(6)),
     "invalid from_address for chain bitcoin"),
    (_line(chain="bitcoin", asset="BTC", from_address=_btc(5), to_address=A2),
     "invalid to_address for chain bitcoin"),
    (_line(to_address=A1.lower()), f"from_address and to_address are the same address {A1}"),
    (_line(asset="DAI"), "unknown asset 'DAI' on chain ethereum (configured: ETH, USDC)"),
    (_line(asset=UNCONFIGURED_TOKEN), f"token contract {UNCONFIGURED_TOKEN} is not configured"),
    (_line(chain="bitcoin", asset="USDC", from_address=_btc(5), to_address=_btc(6)),
     "unknown asset 'USDC' on chain bitcoin"),
    (_line(asset="USDC", amount="1.1234567"), "USDC has 6 decimals, got 7"),
    (_line(amount="0"), "amount must be greater than 0"),
    (_line(amount="0.000"), "amount must be greater than 0"),
    (_line(amount="-1"), "negative"),
    (_line(amount="1e3"), "exponent"),
    (_line(amount=""), "missing amount"),
    (_line(approved_by="  "), "missing approved_by"),
    (_line(approved_by="x" * 201), "approved_by is longer than 200 characters"),
    (_line(approved_by="mallory"),
     "approved_by 'mallory' is not a user with the checker role"),
    (_line(approved_by="eve"), "approved_by 'eve' is not a user with the checker"),
    (_line(id="W" * 201), "id is longer than 200 characters"),
    (_line(approved_at=""), "missing approved_at"),
    (_line(approved_at="2024-05-01T14:30:00"), "has no timezone"),
    (_line(approved_at="2024-05-01"), "has no timezone"),
    (_line(approved_at="yesterday"), "is not an ISO-8601 time"),
    (_line(approved_at="2024-13-01T00:00:00Z"), "is not an ISO-8601 time"),
    (_line(tx_hash="0x1234"), "bad tx_hash '0x1234' for chain ethereum (expected 0x and 64"),
    (_line(tx_hash="ab" * 32), "expected 0x and 64 hex digits"),
    (_line(tx_hash="0x" + "zz" * 32), "bad tx_hash"),
    (_line(chain="bitcoin", asset="BTC", from_address=_btc(5), to_address=_btc(6),
           tx_hash="0x" + BTC_TX), "expected 64 hex digits without 0x"),
    (_line()[: -len(",")], "8 fields, the header has 9"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_each_rule_is_reported_with_its_line_number(tmp_path: Path, line: str,
                                                    reason: str) -> None:
    """A line breaking one rule is reported as PATH:LINE with the reason; nothing imports."""
    path = _write(tmp_path, HEADER + _line(id="W-0", to_address=A3) + "\n" + line + "\n")
    errors = _errors(path)
    assert errors and all(e.startswith(f"{path}:3: ") for e in errors), errors
    assert any(reason in e for e in errors), errors


def test_duplicate_id_is_reported_on_the_later_line(tmp_path: Path) -> None:
    """An id used twice is reported on its second line, naming the first."""
    path = _write(tmp_path, HEADER + _line() + "\n" + _line(amount="2") + "\n")
    assert _errors(path) == [f"{path}:3: duplicate id 'W-9': already used on line 2"]


def test_ids_are_compared_exactly(tmp_path: Path) -> None:
    """Ids differing only in case are distinct instructions."""
    path = _write(tmp_path, HEADER + _line(id="w-9") + "\n" + _line(id="W-9") + "\n")
    assert [row.id for row in parse_withdrawals(path, make_settings())] == ["w-9", "W-9"]


def test_one_tx_hash_may_pay_several_instructions(tmp_path: Path) -> None:
    """Two instructions naming the same transaction (a batched payout) both import."""
    path = _write(tmp_path, HEADER + _line(id="W-1", tx_hash=EVM_TX) + "\n"
                  + _line(id="W-2", to_address=A3, tx_hash=EVM_TX) + "\n")
    assert [row.tx_hash for row in parse_withdrawals(path, make_settings())] == [EVM_TX] * 2


def test_every_bad_line_is_reported_and_nothing_imported(tmp_path: Path) -> None:
    """Several bad lines are all reported in line order under one 'nothing imported' error."""
    path = _write(tmp_path, HEADER + "\n".join([
        _line(id="W-1"),
        _line(id="W-2", chain="solana"),
        _line(id="W-3", amount="0"),
        _line(id="W-4"),
        _line(id="W-1", approved_at="2024-05-01T14:30:00"),
    ]) + "\n")
    with pytest.raises(InputError) as caught:
        parse_withdrawals(path, make_settings())
    assert caught.value.user_message == f"{path}: 3 bad lines; nothing imported"
    assert [e.split(": ", 1)[0] for e in caught.value.lines] == [f"{path}:3", f"{path}:4",
                                                                 f"{path}:6"]


def test_one_line_can_carry_several_problems(tmp_path: Path) -> None:
    """Independent problems on one line are each reported with that line's number."""
    path = _write(tmp_path, HEADER + _line(from_address="0x12", amount="-1",
                                           approved_at="noon", approved_by="") + "\n")
    errors = _errors(path)
    assert len(errors) == 4 and all(e.startswith(f"{path}:2: ") for e in errors)


@pytest.mark.parametrize(("item", "reason"), [
    ({"amount": 1.5}, "amount 1.5 is a JSON float"),
    ({"amount": True}, "amount must be a string, got a boolean"),
    ({"id": True}, "id must be a string, got a boolean"),
    ({"id": 1.0}, "id must be a string, got a number"),
    ({"approved_at": 1714573800}, "approved_at must be a string, got a number"),
    ({"approved_by": ["carol"]}, "approved_by must be a string, got an array"),
    ({"memo": "x"}, "unknown key 'memo'"),
    ({"chain": None}, "missing chain"),
])
def test_json_items_are_reported_by_item_number(tmp_path: Path, item: dict[str, Any],
                                                reason: str) -> None:
    """A bad JSON item is reported as 'item N' with the reason."""
    good = {"id": "W-1", "chain": "ethereum", "from_address": A1, "to_address": A2,
            "asset": "ETH", "amount": "1", "approved_by": "carol", "approved_at": WHEN}
    path = _write(tmp_path, json.dumps([good, {**good, "id": "W-2", **item}]), "w.json")
    errors = _errors(path)
    assert any(e.startswith(f"{path}: item 2: ") and reason in e for e in errors), errors


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("w.csv", "", "empty file"),
    ("w.json", '{"allocations": []}', 'expected a JSON array of objects or {"withdrawals": [...]}'),
    ("w.csv", HEADER.replace(",approved_at", ""), "missing column 'approved_at'"),
])
def test_unparseable_files_give_one_clear_line(tmp_path: Path, name: str, content: str,
                                               reason: str) -> None:
    """A file that is empty, malformed or misses a required column is refused with one line."""
    errors = _errors(_write(tmp_path, content, name))
    assert len(errors) == 1 and reason in errors[0], errors


def test_tx_hash_column_is_optional(tmp_path: Path) -> None:
    """A CSV without the tx_hash column imports with tx_hash None."""
    header = HEADER.replace(",tx_hash", "")
    path = _write(tmp_path, header + _line().rsplit(",", 1)[0] + "\n")
    assert parse_withdrawals(path, make_settings())[0].tx_hash is None


def test_summarize_counts_and_totals(tmp_path: Path) -> None:
    """summarize_withdrawals gives counts, approvers, time span and base-unit totals per asset."""
    summary = summarize_withdrawals(parse_withdrawals(_write(tmp_path, GOOD_CSV),
                                                      make_settings()))
    assert (summary["withdrawals"], summary["approvers"], summary["with_tx_hash"]) == (4, 2, 2)
    assert summary["first_approved_at"] == "2024-05-01T14:30:00+00:00"
    assert summary["last_approved_at"] == "2024-05-03T00:00:00+00:00"
    eth = summary["chains"]["ethereum"]
    assert eth["withdrawals"] == 3 and eth["from_wallets"] == 2
    assert eth["assets"]["USDC"] == {"contract": USDC, "decimals": 6, "withdrawals": 2,
                                     "total": 1_250_500_001}
    assert summary["chains"]["bitcoin"]["assets"]["BTC"]["total"] == 50_000_000
    json.dumps(summary)  # JSON-ready for --dry-run --json
    assert summarize_withdrawals([])["first_approved_at"] is None


_OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes)))
_INSTANTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                         timezones=_OFFSETS)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=1, max_value=10**30), st.booleans(), _INSTANTS),
                min_size=1, max_size=8))
def test_valid_rows_round_trip_exactly(specs: list[tuple[int, bool, datetime]]) -> None:
    """Any positive amount written in display units and any offset time parse back exactly."""
    lines = []
    for n, (units, is_usdc, moment) in enumerate(specs):
        decimals = 6 if is_usdc else 18
        lines.append(_line(id=f"W-{n}", asset="USDC" if is_usdc else "ETH",
                           amount=format_amount(units, decimals), approved_at=moment.isoformat()))
    with tempfile.TemporaryDirectory() as directory:
        rows = parse_withdrawals(_write(Path(directory), HEADER + "\n".join(lines) + "\n"),
                                 make_settings())
    assert [(r.amount, r.approved_at) for r in rows] == [(u, m) for u, _, m in specs]
    assert all(r.approved_at.utcoffset() == timedelta(0) for r in rows)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=12))
def test_exactly_the_bad_lines_are_reported(bad: list[bool]) -> None:
    """Whatever mix of good and bad lines a file has, the error names exactly the bad ones."""
    lines = [_line(id=f"W-{n}", amount="0" if is_bad else "1") for n, is_bad in enumerate(bad)]
    with tempfile.TemporaryDirectory() as directory:
        path = _write(Path(directory), HEADER + "\n".join(lines) + "\n")
        if not any(bad):
            assert len(parse_withdrawals(path, make_settings())) == len(bad)
            return
        with pytest.raises(InputError) as caught:
            parse_withdrawals(path, make_settings())
    reported = [int(e.split(": ", 1)[0].rsplit(":", 1)[1]) for e in caught.value.lines]
    assert reported == [n + 2 for n, is_bad in enumerate(bad) if is_bad]


@settings(max_examples=30, deadline=None)
@given(st.permutations(GOOD_CSV.splitlines()[1:]))
def test_row_order_does_not_change_the_parsed_set(lines: list[str]) -> None:
    """Shuffling the data lines of a valid file yields the same set of withdrawals."""
    def unnumbered(rows: list[ApprovedWithdrawal]) -> set[ApprovedWithdrawal]:
        return {dataclasses.replace(row, line=0) for row in rows}

    with tempfile.TemporaryDirectory() as directory:
        original = parse_withdrawals(_write(Path(directory), GOOD_CSV), make_settings())
        shuffled = parse_withdrawals(_write(Path(directory), HEADER + "\n".join(lines) + "\n"),
                                     make_settings())
    assert unnumbered(shuffled) == unnumbered(original)


@pytest.mark.parametrize(("name", "content"), [("w.csv", HEADER), ("w.json", "[]"),
                                               ("w.json", '{"withdrawals": []}')])
def test_an_empty_set_of_instructions_is_valid(tmp_path: Path, name: str,
                                               content: str) -> None:
    """A header alone, `[]` or an empty wrapper: no approved withdrawals (issue 17)."""
    path = tmp_path / name
    path.write_text(content)
    assert parse_withdrawals(path, make_settings()) == []
