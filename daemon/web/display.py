"""PURE presentation for the console: amounts in display units with their symbol, times
in the configured timezone (UTC on hover), durations, bounded untrusted text.

These are Jinja filters; the templates escape what they return (autoescape is on and
nothing here returns markup).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from daemon.inputs.config import Settings
from daemon.rules.amounts import format_amount

UNTRUSTED_CHARS = 300
"""Text from outside (node errors, notes, owner ids) is cut to this many characters."""


@dataclass(frozen=True, slots=True)
class Units:
    """The display units of every configured asset: (chain, symbol) → decimals."""

    decimals: Mapping[tuple[str, str], int]

    @classmethod
    def of(cls, settings: Settings) -> Units:
        return cls({(c.name, a.symbol): a.decimals for c in settings.chains
                    for a in c.assets})

    def amount(self, value: int | str | None, chain: str, symbol: str | None) -> str:
        """`value` base units as "1.5 ETH"; "—" when unknown. An asset the configuration
        does not know is shown in base units, named so."""
        if value is None or value == "":
            return "—"
        units = int(value)
        places = self.decimals.get((chain, symbol or ""))
        if places is None:
            return f"{units} base units{' of ' + symbol if symbol else ''}"
        return f"{format_amount(units, places)} {symbol}"


    def field(self, key: str, value: object, chain: str, symbol: str | None) -> str:
        """An audit entry's field as shown: amounts (by their key) in display units,
        anything else as bounded outside text."""
        if key in AMOUNT_FIELDS and isinstance(value, (int, str)) and \
                _INTEGER.fullmatch(str(value)):
            return self.amount(int(value), chain, symbol)
        return untrusted(value)


AMOUNT_FIELDS = frozenset({"onchain", "ledger", "difference", "in_transit", "expected",
                           "amount"})
"""Audit payload keys that hold base-unit amounts of the discrepancy's asset."""
_INTEGER = re.compile(r"-?[0-9]{1,80}")


@dataclass(frozen=True, slots=True)
class Clock:
    """Times in the operators' timezone."""

    zone: ZoneInfo

    def local(self, moment: datetime | str | None) -> str:
        """`moment` in the configured timezone, to the minute, with its zone's name."""
        at = _aware(moment)
        if at is None:
            return "—"
        return at.astimezone(self.zone).strftime("%Y-%m-%d %H:%M %Z")

    @staticmethod
    def utc(moment: datetime | str | None) -> str:
        """`moment` in UTC to the second (the hover text and the datetime attribute)."""
        at = _aware(moment)
        return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _aware(moment: datetime | str | None) -> datetime | None:
    if moment is None or moment == "":
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def duration(seconds: int | float | None) -> str:
    """A cure clock: "5h 03m" left, or "overdue 1d 2h"."""
    if seconds is None:
        return "—"
    late, left = seconds < 0, int(abs(seconds))
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{days}d {hours}h" if days else f"{hours}h {rest // 60:02d}m"
    return f"overdue {text}" if late else text


def untrusted(text: object, limit: int = UNTRUSTED_CHARS) -> str:
    """Outside text bounded to `limit` characters on one line (escaped by the template)."""
    if text is None:
        return ""
    value = str(text).replace("\r", " ").replace("\n", " ")
    return value if len(value) <= limit else value[:limit] + "…"


def short(value: str | None, keep: int = 10) -> str:
    """A long hash or address shortened for a table cell (the whole value on hover)."""
    if not value:
        return ""
    return value if len(value) <= 2 * keep + 1 else f"{value[:keep]}…{value[-keep // 2:]}"


def query(params: Mapping[str, object], **changes: object) -> str:
    """A URL query string of `params` with `changes` applied (None drops a key); the
    template escapes it into the attribute."""
    from urllib.parse import urlencode

    merged = {**params, **changes}
    return urlencode([(k, str(v)) for k, v in merged.items()
                      if v is not None and v != "" and v is not False])


def join(values: Iterable[object]) -> str:
    return ", ".join(str(v) for v in values)
