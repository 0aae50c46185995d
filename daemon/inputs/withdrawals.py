"""Approved-withdrawal import: read a CSV or JSON file, validate every line, all or nothing.

Pure: no database, no clock. `parse_withdrawals` either returns every instruction of
the file or raises one InputError listing every bad line (SPEC §2), in the same
format as the sub-ledger import. Rules:

- `chain` is configured; `from_address` and `to_address` are valid for its family
  and network (stored canonical) and differ;
- `asset` is a symbol or token contract *configured* on that chain: an unconfigured
  contract is refused, because its decimals (needed to read `amount`) are unknown;
- `amount` is a display-unit decimal (as in the ledger), exact, and greater than 0;
- `id` and `approved_by` are not blank and at most MAX_TEXT characters;
- `approved_at` is ISO-8601 *with* a UTC offset (a naive time is ambiguous across
  the firm's offices) and is stored in UTC;
- `tx_hash`, when given, is 0x + 64 hex digits on EVM chains and 64 hex digits on
  UTXO chains, stored lowercase. Several instructions may share one transaction
  (a batched payout), so it need not be unique;
- `id` (a string, or a JSON integer) is unique within the file, compared exactly.
  Whether it was imported before is for the caller to check against the store.

Whether `from_address` is a custodied wallet is for the caller to check against the
ledger; this module knows only the file and the configuration.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chains.types import Address, AssetRef, BaseUnits
from daemon.inputs import fields as parse
from daemon.inputs.chain_settings import ChainSettings
from daemon.inputs.config import Settings
from daemon.inputs.tabular import Record, read_records

COLUMNS = ("id", "chain", "from_address", "to_address", "asset", "amount", "approved_by",
           "approved_at", "tx_hash")
REQUIRED = COLUMNS[:8]
_TEXT_FIELDS = ("id", "chain", "from_address", "to_address", "asset", "approved_by",
                "approved_at")
MAX_TEXT = 200
"""The longest id or approved_by accepted (the store keeps up to this many characters)."""
_EVM_TX_HASH = re.compile(r"0x[0-9a-f]{64}", re.ASCII)
_UTXO_TX_HASH = re.compile(r"[0-9a-f]{64}", re.ASCII)


@dataclass(frozen=True, slots=True)
class ApprovedWithdrawal:
    """One validated instruction authorizing an outflow from a custodied wallet."""

    line: int
    id: str
    chain: str
    from_address: Address
    to_address: Address
    asset: AssetRef
    amount: BaseUnits
    approved_by: str
    approved_at: datetime
    """Timezone-aware, in UTC."""
    tx_hash: str | None


def parse_withdrawals(path: Path, settings: Settings,
                      approvers: frozenset[str] | None = None) -> list[ApprovedWithdrawal]:
    """Return every approved withdrawal in the file at `path`, in file order.

    JSON is an array of objects or {"withdrawals": [...]}. A file with a header and no
    lines (or `[]`) is an empty set of instructions: valid, nothing to import. Raises
    InputError when the
    file cannot be read or parsed (one line), or when any line breaks a rule: `lines`
    then holds every problem as "PATH:LINE: reason" (CSV, header = line 1) or
    "PATH: item N: reason" (JSON), in line order.
    """
    records = read_records(path, COLUMNS, REQUIRED, wrapper="withdrawals", allow_empty=True)
    allowed = checkers(settings) if approvers is None else approvers
    return parse.validate_all(path, records,
                              lambda record: _validate(record, settings, allowed),
                              _duplicate_ids)


def _validate(record: Record, settings: Settings, approvers: frozenset[str]
              ) -> tuple[ApprovedWithdrawal | None, list[str]]:
    """Return the record as a withdrawal and no problems, or None and every problem found."""
    problems = list(record.problems)
    if problems:
        return None, problems
    fields = _with_text_id(record.fields)
    problems += [f"missing {name}" for name in _TEXT_FIELDS if parse.blank(fields.get(name))]
    text = {name: parse.text(fields.get(name), name, problems)
            for name in (*_TEXT_FIELDS, "tx_hash")}
    problems += [f"{name} is longer than {MAX_TEXT} characters" for name in ("id", "approved_by")
                 if len(text[name]) > MAX_TEXT]
    if text["approved_by"] and text["approved_by"] not in approvers:
        problems.append(f"approved_by {text['approved_by']!r} is not a user with the "
                        "checker role")
    chain = parse.chain_named(settings, text["chain"], problems)
    sender = parse.address(chain, text["from_address"], "from_address", problems)
    recipient = parse.address(chain, text["to_address"], "to_address", problems)
    asset = parse.asset(chain, text["asset"], problems)
    amount = parse.amount(asset, fields.get("amount"), problems, positive=True)
    approved_at = _approved_at(text["approved_at"], problems)
    tx_hash = _tx_hash(chain, text["tx_hash"], problems)
    if sender is not None and sender == recipient:
        problems.append(f"from_address and to_address are the same address {sender}")
    if problems or not (chain and sender and recipient and asset and approved_at) \
            or amount is None:
        return None, problems
    return ApprovedWithdrawal(record.line, text["id"], chain.name, sender, recipient, asset,
                              amount, text["approved_by"], approved_at, tx_hash or None), []


def checkers(settings: Settings) -> frozenset[str]:
    """The configured users who may approve a withdrawal (the `checker` role)."""
    return frozenset(u.name for u in settings.users if "checker" in u.roles)


def _with_text_id(fields: Mapping[str, object]) -> Mapping[str, object]:
    """The fields with a JSON integer id written as text (ids are often numbers)."""
    value = fields.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return {**fields, "id": str(value)}
    return fields


def _approved_at(text: str, problems: list[str]) -> datetime | None:
    """The approval time in UTC; it must be ISO-8601 with a UTC offset or Z."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        problems.append(f"approved_at {text!r} is not an ISO-8601 time "
                        "(e.g. 2024-05-01T14:30:00Z)")
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        problems.append(f"approved_at {text!r} has no timezone; add Z or an offset "
                        "such as +00:00")
        return None
    return moment.astimezone(UTC)


def _tx_hash(chain: ChainSettings | None, text: str, problems: list[str]) -> str | None:
    """The lowercase transaction hash in the chain family's form, or None when blank."""
    if chain is None or not text:
        return None
    value = text.lower()
    pattern, form = ((_EVM_TX_HASH, "0x and 64 hex digits") if chain.family == "evm"
                     else (_UTXO_TX_HASH, "64 hex digits without 0x"))
    if not pattern.fullmatch(value):
        problems.append(f"bad tx_hash {text!r} for chain {chain.name} (expected {form})")
        return None
    return value


def _duplicate_ids(rows: list[tuple[Record, ApprovedWithdrawal]]) -> list[tuple[Record, str]]:
    """Each id appears once; a repeat is reported on the later line."""
    first: dict[str, Record] = {}
    problems: list[tuple[Record, str]] = []
    for record, row in rows:
        seen = first.setdefault(row.id, record)
        if seen is not record:
            problems.append((record, f"duplicate id {row.id!r}: already used on {seen.where}"))
    return problems


def summarize_withdrawals(rows: Iterable[ApprovedWithdrawal]) -> dict[str, Any]:
    """Return counts for a dry run: instructions, approvers, those with a tx hash, the
    first and last approval times (ISO-8601 UTC, or None), and per chain the count, the
    source wallets and per asset the count and the total in base units (an int).
    """
    rows = list(rows)
    times = sorted(row.approved_at for row in rows)
    return {"withdrawals": len(rows), "approvers": len({row.approved_by for row in rows}),
            "with_tx_hash": sum(1 for row in rows if row.tx_hash),
            "first_approved_at": times[0].isoformat() if times else None,
            "last_approved_at": times[-1].isoformat() if times else None,
            "chains": {chain: _chain_summary([row for row in rows if row.chain == chain])
                       for chain in sorted({row.chain for row in rows})}}


def _chain_summary(rows: list[ApprovedWithdrawal]) -> dict[str, Any]:
    by_asset: dict[AssetRef, list[ApprovedWithdrawal]] = defaultdict(list)
    for row in rows:
        by_asset[row.asset].append(row)
    return {"withdrawals": len(rows), "from_wallets": len({row.from_address for row in rows}),
            "assets": {asset.symbol: {"contract": asset.contract, "decimals": asset.decimals,
                                      "withdrawals": len(mine),
                                      "total": sum(row.amount for row in mine)}
                       for asset, mine in by_asset.items()}}
