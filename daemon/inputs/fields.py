"""Field parsers shared by the import files (sub-ledger, approved withdrawals).

Each takes the raw field and a `problems` list; it returns the parsed value, or None
after appending one reason, so an import can report every bad field of every line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from chains.addresses import canonical_address
from chains.errors import InvalidAddress
from chains.types import Address, AssetRef, BaseUnits
from daemon.errors import InputError
from daemon.inputs.chain_settings import ChainSettings
from daemon.inputs.config import Settings
from daemon.inputs.tabular import JsonFloat, Record, json_type
from daemon.rules.amounts import parse_amount

Row = TypeVar("Row")
T = TypeVar("T")


def validate_all(path: Path, records: Iterable[Record],
                 validate: Callable[[Record], tuple[Row | None, list[str]]],
                 across: Callable[[list[tuple[Record, Row]]], list[tuple[Record, str]]]
                 ) -> list[Row]:
    """Validate every record, then the rules across lines; return the rows in file order.

    All or nothing: raises InputError("PATH: N bad lines; nothing imported") whose `lines`
    hold every problem as "PATH:LINE: reason", in line order. A valid record is kept for
    the rules across lines without its fields (they are in its row): a file of millions
    of lines is not held twice.
    """
    errors: list[tuple[int, str]] = []
    rows: list[tuple[Record, Row]] = []
    for record in records:
        row, problems = validate(record)
        if problems:
            errors += [(record.line, f"{record.locate(path)}: {reason}") for reason in problems]
        if row is not None:
            rows.append((Record(record.line, record.is_item, _NO_FIELDS), row))
    errors += [(record.line, f"{record.locate(path)}: {reason}") for record, reason in
               across(rows)]
    if errors:
        bad = len({line for line, _ in errors})
        raise InputError(f"{path}: {bad} bad line{'s' if bad != 1 else ''}; nothing imported",
                         lines=[message for _, message in sorted(errors, key=lambda e: e[0])])
    return [row for _, row in rows]


_NO_FIELDS: Mapping[str, object] = MappingProxyType({})


def blank(value: object) -> bool:
    """True for a missing, null or whitespace-only field."""
    return value is None or (isinstance(value, str) and not value.strip())


def text(value: object, name: str, problems: list[str]) -> str:
    """The stripped text of a field; "" for a missing, null or blank one."""
    if value is None:
        return ""
    if not isinstance(value, str) or isinstance(value, JsonFloat):
        problems.append(f"{name} must be a string, got {json_type(value)}")
        return ""
    return value.strip()


def texts(fields: Mapping[str, object], names: Sequence[str], required: Sequence[str],
          problems: list[str]) -> dict[str, str]:
    """`text` of each field in `names`, after a "missing NAME" for each blank one of
    `required` (then each non-string field's problem, in `names` order)."""
    found: dict[str, str] = {}
    odd: list[str] = []
    for name in names:
        value = fields.get(name)
        if type(value) is str:  # the common case, checked without a call per field
            found[name] = value.strip()
        elif value is None:
            found[name] = ""
        else:
            odd.append(name)
    problems += [f"missing {name}" for name in required
                 if name not in odd and not found[name]]
    for name in odd:  # a number, a JSON float's literal, an array...
        found[name] = text(fields.get(name), name, problems)
    return found


def chain_named(settings: Settings, name: str, problems: list[str]) -> ChainSettings | None:
    """The configured chain called `name` (any case), or None (with the problem noted)."""
    chain = settings.chain(name.lower()) if name else None
    if name and chain is None:
        known = ", ".join(c.name for c in settings.chains) or "none configured"
        problems.append(f"unknown chain {name!r} (known: {known})")
    return chain


def address(chain: ChainSettings | None, text: str, name: str,
            problems: list[str]) -> Address | None:
    """The canonical address in field `name`, or None (with the problem noted)."""
    if chain is None or not text:
        return None
    try:
        return canonical_address(chain.family, chain.network, text)
    except InvalidAddress as exc:
        problems.append(f"invalid {name} for chain {chain.name}: {exc.user_message}")
        return None


def asset(chain: ChainSettings | None, text: str, problems: list[str]) -> AssetRef | None:
    """The chain's configured asset named by symbol (any case) or token contract address."""
    if chain is None or not text:
        return None
    wanted = text.lower()
    exact = [asset for asset in chain.assets if asset.symbol == text]
    loose = [asset for asset in chain.assets
             if wanted in (asset.symbol.lower(), (asset.contract or "").lower())]
    for found in (exact, loose):
        if len(found) == 1:
            return found[0]
    if chain.family == "evm" and _looks_like_contract(chain, text):
        problems.append(f"token contract {text} is not configured on chain {chain.name}; "
                        "add it to the chain's tokens so its decimals are known")
        return None
    symbols = ", ".join(asset.symbol for asset in chain.assets)
    problems.append(f"unknown asset {text!r} on chain {chain.name} (configured: {symbols})")
    return None


class Resolver:
    """`chain_named`, `address` and `asset` for one file of many lines: each distinct
    chain name, (chain, address text) and (chain, asset text) is resolved once and its
    answer reused (a sub-ledger names each wallet on several lines, and the EIP-55
    checksum of a million distinct wallets is most of an import's time otherwise).
    Problems are noted on every line that has them, as the plain functions do."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._chains: dict[str, tuple[ChainSettings | None, list[str]]] = {}
        self._addresses: dict[tuple[str, str, str], tuple[Address | None, list[str]]] = {}
        self._assets: dict[tuple[str, str], tuple[AssetRef | None, list[str]]] = {}

    def chain_named(self, name: str, problems: list[str]) -> ChainSettings | None:
        found = self._chains.get(name)
        if found is None:
            noted: list[str] = []
            found = self._chains[name] = (chain_named(self._settings, name, noted), noted)
        return _noted(found, problems)

    def address(self, chain: ChainSettings | None, text: str, name: str,
                problems: list[str]) -> Address | None:
        if chain is None or not text:
            return None
        key = (chain.name, name, text)
        found = self._addresses.get(key)
        if found is None:
            noted: list[str] = []
            found = self._addresses[key] = (address(chain, text, name, noted), noted)
        return _noted(found, problems)

    def asset(self, chain: ChainSettings | None, text: str,
              problems: list[str]) -> AssetRef | None:
        if chain is None or not text:
            return None
        key = (chain.name, text)
        found = self._assets.get(key)
        if found is None:
            noted: list[str] = []
            found = self._assets[key] = (asset(chain, text, noted), noted)
        return _noted(found, problems)


def _noted(found: tuple[T, list[str]], problems: list[str]) -> T:
    """A remembered answer; its problems are noted again on this line."""
    if found[1]:
        problems += found[1]
    return found[0]


def _looks_like_contract(chain: ChainSettings, text: str) -> bool:
    try:
        canonical_address(chain.family, chain.network, text)
    except InvalidAddress:
        return False
    return True


def amount(asset: AssetRef | None, value: object, problems: list[str], *,
           positive: bool = False) -> BaseUnits | None:
    """Base units of the amount (above 0 when `positive`); JSON integers count, floats don't."""
    if type(value) is not str:
        value = _amount_text(value, problems)
    elif not value.strip():
        problems.append("missing amount")
        return None
    if value is None or asset is None:
        return None
    try:
        units = parse_amount(value, asset.decimals, symbol=asset.symbol)
    except ValueError as exc:
        problems.append(f"bad amount: {exc}")
        return None
    if positive and units == 0:
        problems.append("amount must be greater than 0")
        return None
    return BaseUnits(units)


def _amount_text(value: object, problems: list[str]) -> str | None:
    """The text of an amount given other than as a string (a JSON integer), or None with
    the problem noted."""
    if isinstance(value, JsonFloat):
        problems.append(f"amount {value} is a JSON float; write it as a string: \"{value}\"")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if blank(value):
        problems.append("missing amount")
        return None
    if not isinstance(value, str):
        problems.append(f"amount must be a string, got {json_type(value)}")
        return None
    return value
