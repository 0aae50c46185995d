"""Exact conversion between display amounts ("1.5") and integer base units.

Pure string and integer arithmetic: a float never touches an amount (SPEC §1).
"""

from __future__ import annotations

import re

MAX_BASE_UNITS = 2**256 - 1
"""The largest amount any supported chain can represent (an EVM uint256)."""

_MAX_TEXT = 200
_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?", re.ASCII)
_EXPONENT = re.compile(r"[0-9.]+[eE][+-]?[0-9]+", re.ASCII)
_NOT_A_NUMBER = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity",
                 "-infinity"}


def parse_amount(text: str, decimals: int, *, symbol: str | None = None) -> int:
    """Return the base units of the non-negative display amount `text`.

    Accepts plain decimals such as "1", "1.5" or "0.000001", with surrounding spaces.
    Raises ValueError with a short reason for an empty, negative, exponent, NaN or
    infinite amount, thousands separators, or more fractional digits than `decimals`
    (`symbol`, when given, names the asset in that message).
    """
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    value = text.strip()
    match = _DECIMAL.fullmatch(value) if len(value) <= _MAX_TEXT else None
    if match is None:
        raise ValueError(_why_not_decimal(value))
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > decimals:
        owner = symbol or "the asset"
        raise ValueError(f"{owner} has {decimals} decimals, got {len(fraction)}")
    units = int(whole + fraction.ljust(decimals, "0"))
    if units > MAX_BASE_UNITS:
        raise ValueError(f"amount {value} is too large")
    return units


def _why_not_decimal(value: str) -> str:
    """Return the reason `value` is not a plain non-negative decimal."""
    if not value:
        return "empty amount"
    if len(value) > _MAX_TEXT:
        return f"amount is too long ({len(value)} characters)"
    if value.lower() in _NOT_A_NUMBER:
        return f"not a number: {value!r}"
    if value.startswith("-"):
        return f"amount cannot be negative: {value!r}"
    if _EXPONENT.fullmatch(value.lstrip("+")):
        return f"exponent notation is not allowed: {value!r} (write the digits out)"
    if any(sep in value for sep in (",", "_", " ", "'")):
        return f"thousands separators are not allowed: {value!r}"
    return f"not a decimal amount: {value!r} (expected digits with an optional '.')"


def format_amount(base_units: int, decimals: int) -> str:
    """Return `base_units` as an exact display decimal without superfluous zeros.

    Zero is "0"; negative amounts (differences) keep their sign. Raises ValueError
    for negative `decimals`.
    """
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    sign = "-" if base_units < 0 else ""
    whole, fraction = divmod(abs(base_units), 10**decimals)
    if not fraction:
        return f"{sign}{whole}"
    digits = str(fraction).rjust(decimals, "0").rstrip("0")
    return f"{sign}{whole}.{digits}"
