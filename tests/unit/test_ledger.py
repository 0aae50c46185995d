"""Sub-ledger import: parsing, per-line and cross-line validation, all or nothing."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.evm.address import canonical_evm_address
from chains.types import Address, AssetRef, BaseUnits
from daemon.errors import InputError
from daemon.inputs.config import Settings
from daemon.inputs.ledger import AllocationRow, parse_ledger, summarize

USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
HEADER = "chain,address,structure,owner,asset,amount,label,mpc_key_id\n"
ETH = AssetRef("ETH", 18)
USDC_REF = AssetRef("USDC", 6, Address(USDC))


def _evm(n: int) -> str:
    """A valid, checksummed EVM address derived from `n`."""
    return canonical_evm_address(f"0x{n:040x}")


def _btc(n: int, hrp: str = "bc") -> str:
    """A valid P2WPKH address for key hash bytes([n]) * 20, encoded by bitcoinlib."""
    from bitcoinlib.encoding import pubkeyhash_to_addr_bech32  # after chains.utxo's import

    return str(pubkeyhash_to_addr_bech32(bytes([n]) * 20, prefix=hrp))


A1, A2, A3 = _evm(0xA1), _evm(0xA2), _evm(0xA3)
EIP55 = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # a test vector from the EIP-55 text
BAD_CHECKSUM = "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # its second letter's case flipped


def _chain(name: str, **extra: Any) -> dict[str, Any]:
    if extra.get("family") == "utxo":
        return {"name": name, "sources": [{"kind": "core-rpc", "url": "http://127.0.0.1:8332"}],
                **extra}
    return {"name": name, "family": "evm", "chain_id": 1,
            "sources": [{"kind": "jsonrpc", "url": "http://127.0.0.1:8545"}],
            "tokens": [{"symbol": "USDC", "contract": USDC, "decimals": 6}], **extra}


def make_settings(*more: dict[str, Any]) -> Settings:
    """ethereum (ETH + USDC) and bitcoin chains, firm owner FIRM, plus `more` chains."""
    return Settings(daemon={"firm_owner": "FIRM"}, chains=[
        _chain("ethereum"), _chain("bitcoin", family="utxo", network="bitcoin"), *more])


def _write(directory: Path, text: str, name: str = "ledger.csv") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def _errors(path: Path, config: Settings | None = None) -> list[str]:
    with pytest.raises(InputError) as caught:
        parse_ledger(path, config or make_settings())
    return caught.value.lines


GOOD_CSV = HEADER + "\n".join([
    f"ethereum,{A1.lower()},segregated,alice,USDC,1250.5,alice-main,key-1",
    f"ethereum,{A1},segregated,alice,ETH,0.25,,",
    f"ethereum,{A2},omnibus,bob,usdc,10,omni,key-2",
    f"ethereum,{A2},omnibus,carol,{USDC.lower()},0.000001,,",
    f"bitcoin,{_btc(1).upper()},segregated,dave,BTC,0.5,,",
    f"bitcoin,{_btc(2)},house,FIRM,BTC,3,treasury,",
]) + "\n"


def test_good_csv_imports_every_line_canonically(tmp_path: Path) -> None:
    """A valid CSV yields one row per line with canonical addresses and base units."""
    rows = parse_ledger(_write(tmp_path, GOOD_CSV), make_settings())
    assert [r.line for r in rows] == [2, 3, 4, 5, 6, 7]
    assert rows[0] == AllocationRow(2, "ethereum", Address(A1), "segregated", "alice", USDC_REF,
                                    BaseUnits(1_250_500_000), "alice-main", "key-1")
    assert rows[1].asset == ETH and rows[1].amount == 25 * 10**16 and rows[1].label is None
    assert rows[2].asset == USDC_REF and rows[3].asset == USDC_REF and rows[3].amount == 1
    assert rows[4].address == _btc(1) and rows[4].amount == 50_000_000
    assert rows[5].structure == "house" and rows[5].owner == "FIRM"


def test_lowercase_evm_address_is_returned_checksummed(tmp_path: Path) -> None:
    """An all-lowercase EVM address is accepted and stored in EIP-55 form."""
    path = _write(tmp_path, HEADER + f"ethereum,{EIP55.lower()},segregated,a,ETH,1,,\n")
    assert parse_ledger(path, make_settings())[0].address == EIP55


def test_good_json_imports_array_and_wrapped_forms(tmp_path: Path) -> None:
    """A JSON array and {"allocations": [...]} give the same rows; integer amounts count."""
    items = [{"chain": "ethereum", "address": A1, "structure": "segregated", "owner": "alice",
              "asset": "USDC", "amount": "1.5", "label": None},
             {"chain": "bitcoin", "address": _btc(3), "structure": "omnibus", "owner": "bob",
              "asset": "BTC", "amount": 2, "mpc_key_id": "k9"}]
    plain = parse_ledger(_write(tmp_path, json.dumps(items), "a.json"), make_settings())
    wrapped = parse_ledger(_write(tmp_path, json.dumps({"allocations": items}), "b.json"),
                           make_settings())
    assert plain == wrapped
    assert [(r.line, r.amount, r.mpc_key_id) for r in plain] == [(1, 1_500_000, None),
                                                                 (2, 200_000_000, "k9")]


def test_format_is_sniffed_without_a_known_extension(tmp_path: Path) -> None:
    """A file without .csv/.json is read as JSON when it starts with '[' and CSV otherwise."""
    item = {"chain": "ethereum", "address": A1, "structure": "segregated", "owner": "a",
            "asset": "ETH", "amount": "1"}
    as_json = parse_ledger(_write(tmp_path, json.dumps([item]), "ledger.txt"), make_settings())
    as_csv = parse_ledger(_write(tmp_path, HEADER + f"ethereum,{A1},segregated,a,ETH,1,,\n",
                                 "ledger"), make_settings())
    assert as_json[0].amount == as_csv[0].amount == 10**18


def test_zero_amounts_are_allowed(tmp_path: Path) -> None:
    """A wallet listed with a zero allocation imports with amount 0."""
    path = _write(tmp_path, HEADER + f"bitcoin,{_btc(4)},segregated,erin,BTC,0,,\n")
    assert parse_ledger(path, make_settings())[0].amount == 0


BAD_LINES = [
    (f"solana,{A1},segregated,a,ETH,1,,", "unknown chain 'solana'"),
    ("ethereum,0x1234,segregated,a,ETH,1,,", "invalid address for chain ethereum"),
    (f"ethereum,{BAD_CHECKSUM},segregated,a,ETH,1,,", "bad EIP-55 checksum"),
    (f"bitcoin,{_btc(5, 'tb')},segregated,a,BTC,1,,", "testnet address on a bitcoin chain"),
    (f"bitcoin,{A1},segregated,a,BTC,1,,", "invalid address for chain bitcoin"),
    (f"ethereum,{A1},pooled,a,ETH,1,,", "unknown structure 'pooled'"),
    (f"ethereum,{A1},segregated,  ,ETH,1,,", "missing owner"),
    (f"ethereum,{A1},segregated,a,DAI,1,,", "unknown asset 'DAI' on chain ethereum"),
    (f"bitcoin,{_btc(6)},segregated,a,USDC,1,,", "unknown asset 'USDC' on chain bitcoin"),
    (f"ethereum,{A1},segregated,a,USDC,1.1234567,,", "USDC has 6 decimals, got 7"),
    (f"ethereum,{A1},segregated,a,ETH,-1,,", "negative"),
    (f"ethereum,{A1},segregated,a,ETH,1e3,,", "exponent"),
    (f"ethereum,{A1},segregated,a,ETH,\"1,000\",,", "thousands"),
    (f"ethereum,{A1},segregated,a,ETH,,,", "missing amount"),
    (f"ethereum,{A1},segregated,a,ETH,1", "6 fields, the header has 8"),
    (f"ethereum,{A1},segregated,FIRM,ETH,1,,", "firm owner 'FIRM' cannot hold"),
    (f"ethereum,{A1},omnibus,FIRM,ETH,1,,", "firm owner 'FIRM' cannot hold"),
    (f"ethereum,{A1},house,alice,ETH,1,,", "must be owned by the firm owner 'FIRM'"),
    # SPEC §12: owner ids land in CSV files auditors open in spreadsheets
    (f'ethereum,{A1},segregated,"=HYPERLINK(""http://x"",""y"")",ETH,1,,',
     "is not an owner id"),
    (f"ethereum,{A1},segregated,a|b,ETH,1,,", "owner 'a|b' is not an owner id"),
    (f"ethereum,{A1},segregated,-alice,ETH,1,,", "owner '-alice' is not an owner id"),
    (f"ethereum,{A1},segregated,{'x' * 129},ETH,1,,", "is not an owner id"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_each_per_line_rule_is_reported_with_its_line_number(tmp_path: Path, line: str,
                                                             reason: str) -> None:
    """A line breaking one rule is reported as PATH:LINE with the reason; nothing imports."""
    good = f"ethereum,{A3},segregated,zed,ETH,1,,\n"
    path = _write(tmp_path, HEADER + good + line + "\n")
    errors = _errors(path)
    assert errors and all(e.startswith(f"{path}:3: ") for e in errors)
    assert any(reason in e for e in errors), errors


CONFLICTS = [
    ([f"ethereum,{A1},segregated,a,ETH,1,,", f"ethereum,{A1},omnibus,a,USDC,1,,"],
     "has structure 'omnibus' here but 'segregated' on line 2"),
    ([f"ethereum,{A1},house,FIRM,ETH,1,,", f"ethereum,{A1},omnibus,a,USDC,1,,"],
     "has structure 'omnibus' here but 'house' on line 2"),
    ([f"ethereum,{A1},omnibus,a,ETH,1,x,", f"ethereum,{A1},omnibus,b,ETH,1,y,"],
     "has label 'y' here but 'x' on line 2"),
    ([f"ethereum,{A1},omnibus,a,ETH,1,,k1", f"ethereum,{A1},omnibus,b,ETH,1,,k2"],
     "has mpc_key_id 'k2' here but 'k1' on line 2"),
    ([f"ethereum,{A1},segregated,a,ETH,1,,", f"ethereum,{A1},segregated,b,USDC,1,,"],
     "already belongs to 'a' (line 2)"),
    ([f"ethereum,{A1},omnibus,a,ETH,1,,", f"ethereum,{A1.lower()},omnibus,a,eth,2,,"],
     "duplicate of line 2"),
]


@pytest.mark.parametrize(("lines", "reason"), CONFLICTS)
def test_cross_line_conflicts_name_both_lines(tmp_path: Path, lines: list[str],
                                              reason: str) -> None:
    """A wallet-level conflict is reported on the later line and names the earlier one."""
    path = _write(tmp_path, HEADER + "\n".join(lines) + "\n")
    errors = _errors(path)
    assert len(errors) == 1 and errors[0].startswith(f"{path}:3: ") and reason in errors[0]


def test_address_cannot_be_house_on_one_chain_and_client_on_another(tmp_path: Path) -> None:
    """One EVM address used as a house wallet and as a client wallet on two chains is refused."""
    config = make_settings(_chain("polygon", chain_id=137))
    path = _write(tmp_path, HEADER + f"ethereum,{A1},house,FIRM,ETH,1,,\n"
                                     f"polygon,{A1},segregated,alice,ETH,1,,\n")
    errors = _errors(path, config)
    assert len(errors) == 1 and errors[0].startswith(f"{path}:3: ")
    assert "house wallet on chain ethereum (line 2)" in errors[0]


def test_segregated_wallet_with_one_owner_and_several_assets_is_fine(tmp_path: Path) -> None:
    """A segregated wallet may hold several assets of its single owner."""
    path = _write(tmp_path, HEADER + f"ethereum,{A1},segregated,a,ETH,1,,\n"
                                     f"ethereum,{A1},segregated,a,USDC,1,,\n")
    assert len(parse_ledger(path, make_settings())) == 2


def test_every_bad_line_is_reported_and_nothing_imported(tmp_path: Path) -> None:
    """Several bad lines are all reported in line order under one 'nothing imported' error."""
    path = _write(tmp_path, HEADER + "\n".join([
        f"ethereum,{A1},segregated,a,ETH,1,,",
        "solana,x,segregated,a,ETH,1,,",
        f"ethereum,{A2},segregated,b,ETH,-5,,",
        f"ethereum,{A3},segregated,c,ETH,1,,",
        f"ethereum,{A1},segregated,d,ETH,1,,",
    ]) + "\n")
    with pytest.raises(InputError) as caught:
        parse_ledger(path, make_settings())
    assert caught.value.user_message == f"{path}: 3 bad lines; nothing imported"
    assert [e.split(": ", 1)[0] for e in caught.value.lines] == [f"{path}:3", f"{path}:4",
                                                                 f"{path}:6"]


def test_one_line_can_carry_several_problems(tmp_path: Path) -> None:
    """Independent problems on one line are each reported with that line's number."""
    path = _write(tmp_path, HEADER + "solana,x,pooled,,ETH,1,,\n")
    errors = _errors(path)
    assert len(errors) == 3 and all(e.startswith(f"{path}:2: ") for e in errors)


def test_csv_line_numbers_are_physical_lines(tmp_path: Path) -> None:
    """Blank lines and quoted multi-line fields keep CSV line numbers physical."""
    path = _write(tmp_path, HEADER + f"\nethereum,{A1},segregated,a,ETH,1,\"two\nlines\",\n"
                                     f"ethereum,{A2},segregated,b,ETH,x,,\n")
    assert _errors(path) == [f"{path}:5: bad amount: not a decimal amount: 'x' "
                             "(expected digits with an optional '.')"]


@pytest.mark.parametrize(("item", "reason"), [
    ({"amount": 1.5}, "amount 1.5 is a JSON float"),
    ({"amount": True}, "amount must be a string, got a boolean"),
    ({"owner": 7}, "owner must be a string, got a number"),
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"chain": None}, "missing chain"),
])
def test_json_items_are_reported_by_item_number(tmp_path: Path, item: dict[str, Any],
                                                reason: str) -> None:
    """A bad JSON item is reported as 'item N' with the reason."""
    good = {"chain": "ethereum", "address": A1, "structure": "segregated", "owner": "a",
            "asset": "ETH", "amount": "1"}
    path = _write(tmp_path, json.dumps([good, {**good, "address": A2, **item}]), "l.json")
    errors = _errors(path)
    assert any(e.startswith(f"{path}: item 2: ") and reason in e for e in errors), errors
    assert not any("missing owner" in e for e in errors), "a wrong type is not also 'missing'"


def test_json_nan_and_non_object_items_are_rejected(tmp_path: Path) -> None:
    """NaN amounts and items that are not objects are refused by item number."""
    item = json.dumps({"chain": "ethereum", "address": A1, "structure": "segregated",
                       "owner": "a", "asset": "ETH", "amount": "NAN_HERE"})
    text = "[" + item.replace('"NAN_HERE"', "NaN") + ', "oops"]'
    errors = _errors(_write(tmp_path, text, "l.json"))
    assert "JSON float" in errors[0] and "item 1" in errors[0]
    assert errors[1].endswith("item 2: expected an object, got a string")


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("l.csv", "", "empty file"),
    ("l.csv", "  \n\n", "empty file"),
    ("l.csv", HEADER, "no lines to import"),
    ("l.json", "[]", "no lines to import"),
    ("l.json", "[{", "not valid JSON"),
    ("l.json", '{"rows": []}', 'expected a JSON array of objects or {"allocations": [...]}'),
    ("l.csv", "hello world\nfoo\n", "not a CSV file with a header row"),
    ("l.csv", "chain,address,structure,owner,asset\n", "missing column 'amount'"),
    ("l.csv", "chain,address,structure,owner,asset,amount,color\n", "unknown column 'color'"),
    ("l.csv", HEADER + 'ethereum,"unterminated\n', "malformed CSV"),
])
def test_unparseable_files_give_one_clear_line(tmp_path: Path, name: str, content: str,
                                               reason: str) -> None:
    """A file that is empty or does not parse is refused with one line naming the problem."""
    errors = _errors(_write(tmp_path, content, name))
    assert len(errors) == 1 and reason in errors[0] and errors[0].startswith(str(tmp_path))


def test_undecodable_and_missing_files_are_refused(tmp_path: Path) -> None:
    """Non-UTF-8 bytes and a missing file give one InputError line each."""
    binary = tmp_path / "l.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8" in _errors(binary)[0]
    assert "cannot read" in _errors(tmp_path / "missing.csv")[0]


def test_summarize_counts_wallets_owners_and_totals(tmp_path: Path) -> None:
    """summarize gives allocation, wallet and owner counts and base-unit totals per asset."""
    summary = summarize(parse_ledger(_write(tmp_path, GOOD_CSV), make_settings()))
    assert (summary["allocations"], summary["wallets"], summary["owners"]) == (6, 4, 5)
    eth = summary["chains"]["ethereum"]
    assert eth["wallets"] == 2 and eth["structures"] == {"segregated": 1, "omnibus": 1,
                                                          "house": 0}
    assert eth["assets"]["USDC"] == {"contract": USDC, "decimals": 6, "allocations": 3,
                                     "owners": 3, "total": 1_260_500_001}
    assert summary["chains"]["bitcoin"]["assets"]["BTC"]["total"] == 350_000_000


@settings(max_examples=30, deadline=None)
@given(st.permutations(GOOD_CSV.splitlines()[1:]))
def test_row_order_does_not_change_the_parsed_set(lines: list[str]) -> None:
    """Shuffling the data lines of a valid file yields the same set of allocations."""
    def unnumbered(rows: list[AllocationRow]) -> set[AllocationRow]:
        return {row._replace(line=0) for row in rows}

    with tempfile.TemporaryDirectory() as directory:
        original = parse_ledger(_write(Path(directory), GOOD_CSV), make_settings())
        shuffled = parse_ledger(_write(Path(directory), HEADER + "\n".join(lines) + "\n"),
                                make_settings())
    assert unnumbered(shuffled) == unnumbered(original)


def test_a_bad_value_repeated_on_many_lines_is_reported_on_each(tmp_path: Path) -> None:
    """Addresses, assets and chains are resolved once per distinct text (issue 18: the
    import's speed), yet a bad one repeated on several lines is reported on every line,
    as before."""
    bad = "0x" + "Ab" * 20  # mixed case with a wrong checksum
    text = HEADER + "\n".join([
        f"ethereum,{bad},omnibus,alice,ETH,1,,",
        f"ethereum,{A1},segregated,bob,DOGE,1,,",
        f"ethereum,{bad},omnibus,carol,ETH,1,,",
        f"ethereum,{A1},segregated,bob,DOGE,2,,",
        f"nochain,{A1},segregated,bob,ETH,1,,",
        f"nochain,{A1},segregated,bob,ETH,1,,",
    ]) + "\n"
    errors = _errors(_write(tmp_path, text))
    lines = [e.split(":")[1] for e in errors]
    assert [line for line, e in zip(lines, errors, strict=True) if "checksum" in e] == ["2", "4"]
    assert [line for line, e in zip(lines, errors, strict=True) if "DOGE" in e] == ["3", "5"]
    assert [line for line, e in zip(lines, errors, strict=True)
            if "unknown chain" in e] == ["6", "7"]


def test_lines_are_taken_one_at_a_time_and_kept_without_their_fields(tmp_path: Path) -> None:
    """A file of millions of lines is never held as millions of raw records (issue 18):
    the header is checked before any line is split, a line that cannot be split fails
    only when it is reached, and the rules across lines see each valid record without its
    raw fields (they live on in its row)."""
    from daemon.inputs import fields
    from daemon.inputs.ledger import COLUMNS, REQUIRED
    from daemon.inputs.tabular import read_records

    path = tmp_path / "ledger.csv"
    path.write_text(HEADER + f"ethereum,{A1},segregated,alice,ETH,1,,\n"
                    + 'ethereum,"unterminated\n')
    records = read_records(path, COLUMNS, REQUIRED, wrapper="allocations")
    first = next(records)
    assert first.line == 2 and first.fields["owner"] == "alice"
    with pytest.raises(InputError, match=r"ledger.csv:3: malformed CSV"):
        next(records)

    path.write_text(HEADER + f"ethereum,{A1},segregated,alice,ETH,1,,\n"
                    f"ethereum,{A2},segregated,bob,ETH,2,,\n")
    seen: list[tuple[int, int]] = []

    def across(rows: list[tuple[Any, Any]]) -> list[tuple[Any, str]]:
        seen.extend((record.line, len(record.fields)) for record, _ in rows)
        return []
    rows = fields.validate_all(path, read_records(path, COLUMNS, REQUIRED, wrapper="allocations"),
                               lambda record: (record.fields["owner"], []), across)
    assert rows == ["alice", "bob"] and seen == [(2, 0), (3, 0)]
