"""Exact display ↔ base-unit conversion (daemon.rules.amounts)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.rules.amounts import MAX_BASE_UNITS, format_amount, parse_amount


@given(st.integers(min_value=0, max_value=MAX_BASE_UNITS), st.integers(min_value=0, max_value=30))
def test_round_trip_is_exact(units: int, decimals: int) -> None:
    """Formatting any base-unit amount and parsing it back gives the same integer."""
    assert parse_amount(format_amount(units, decimals), decimals) == units


@given(st.integers(min_value=-(10**40), max_value=-1), st.integers(min_value=0, max_value=30))
def test_negative_differences_format_with_a_sign(units: int, decimals: int) -> None:
    """A negative difference formats as '-' followed by the magnitude's display form."""
    assert format_amount(units, decimals) == "-" + format_amount(-units, decimals)


@pytest.mark.parametrize(("text", "decimals", "units"), [
    ("1", 6, 1_000_000),
    ("1.5", 6, 1_500_000),
    ("0.000001", 6, 1),
    ("  42.10 ", 2, 4210),
    ("0", 18, 0),
    ("007", 0, 7),
    ("1.23456789", 8, 123_456_789),
])
def test_parses_plain_decimals(text: str, decimals: int, units: int) -> None:
    """Plain decimals with surrounding spaces parse to exact base units."""
    assert parse_amount(text, decimals) == units


@pytest.mark.parametrize(("units", "decimals", "text"), [
    (0, 6, "0"), (1, 6, "0.000001"), (1_500_000, 6, "1.5"), (10**18, 18, "1"),
    (-250, 2, "-2.5"), (12345, 0, "12345"),
])
def test_formats_without_superfluous_zeros(units: int, decimals: int, text: str) -> None:
    """Display form carries no trailing zeros and no decimal point for whole amounts."""
    assert format_amount(units, decimals) == text


def test_rejects_more_fraction_digits_than_decimals_naming_the_asset() -> None:
    """Seven fractional digits for a six-decimal asset are refused with both counts."""
    with pytest.raises(ValueError, match="USDC has 6 decimals, got 7"):
        parse_amount("1.0000001", 6, symbol="USDC")


def test_rejects_trailing_zeros_beyond_decimals() -> None:
    """More fractional digits than decimals is an error even when they are zeros (SPEC §2)."""
    with pytest.raises(ValueError, match="has 6 decimals, got 8"):
        parse_amount("1.00000000", 6)


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"), ("   ", "empty"), ("1e5", "exponent"), ("1.5E-3", "exponent"),
    ("NaN", "not a number"), ("inf", "not a number"), ("-Infinity", "not a number"),
    ("-1", "negative"), ("-0.5", "negative"), ("1,000", "thousands"), ("1_000", "thousands"),
    ("1 000", "thousands"), ("0x10", "not a decimal"), ("1.", "not a decimal"),
    (".5", "not a decimal"), ("+1", "not a decimal"), ("١٢", "not a decimal"),
    ("1" * 500, "too long"),
])
def test_rejects_float_like_and_malformed_input(text: str, reason: str) -> None:
    """Exponents, NaN, infinities, negatives, separators and odd shapes are refused."""
    with pytest.raises(ValueError, match=reason):
        parse_amount(text, 6)


@given(st.floats(allow_nan=True, allow_infinity=True).map(repr).filter(lambda s: "e" in s
                                                                        or s[-1] in "nf"))
def test_rejects_python_float_reprs_with_exponent_or_specials(text: str) -> None:
    """Float reprs with an exponent, nan or inf never parse as amounts."""
    with pytest.raises(ValueError):
        parse_amount(text, 30)


def test_rejects_amounts_beyond_uint256() -> None:
    """An amount larger than 2**256 - 1 base units is refused."""
    with pytest.raises(ValueError, match="too large"):
        parse_amount(str(MAX_BASE_UNITS + 1), 0)
