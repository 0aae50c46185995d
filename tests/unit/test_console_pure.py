"""The console's pure parts: amounts in display units, times in the configured timezone,
cure clocks, bounded outside text, local-only redirect targets, form times and upload
names, and which workflow actions a role is offered."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from daemon.auth.policy import Principal
from daemon.errors import InputError
from daemon.store import models as m
from daemon.web.display import Clock, Units, duration, query, short, untrusted
from daemon.web.manage import _cut_off, _file_name
from daemon.web.session import Viewer, local_target
from daemon.web.views import _actions

UNITS = Units({("ethereum", "ETH"): 18, ("ethereum", "USDC"): 6, ("bitcoin", "BTC"): 8})


@pytest.mark.parametrize(("value", "chain", "symbol", "shown"), [
    (10**17, "ethereum", "ETH", "0.1 ETH"),
    ("-1800000000000000000", "ethereum", "ETH", "-1.8 ETH"),
    (2_500_000_000, "ethereum", "USDC", "2500 USDC"),
    (1, "bitcoin", "BTC", "0.00000001 BTC"),
    (None, "ethereum", "ETH", "—"),
    (5, "ethereum", "DOGE", "5 base units of DOGE"),  # unknown asset: said so, not scaled
])
def test_amounts_are_display_units_with_their_symbol(value: object, chain: str,
                                                    symbol: str, shown: str) -> None:
    assert UNITS.amount(value, chain, symbol) == shown  # type: ignore[arg-type]


def test_audit_fields_show_amounts_in_display_units_and_bound_the_rest() -> None:
    assert UNITS.field("difference", "-900000000000000000", "ethereum", "ETH") == "-0.9 ETH"
    assert UNITS.field("amount", 2_500_000, "ethereum", "USDC") == "2.5 USDC"
    assert UNITS.field("block_number", 100, "ethereum", "ETH") == "100"
    assert UNITS.field("ledger", "1e18", "ethereum", "ETH") == "1e18"  # not an amount
    assert UNITS.field("note", "a\nb", "ethereum", "ETH") == "a b"


def test_times_are_local_with_utc_for_the_hover() -> None:
    clock = Clock(ZoneInfo("America/New_York"))
    moment = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    assert clock.local(moment) == "2026-11-20 10:00 EST"
    assert clock.local("2026-07-01T12:00:00Z") == "2026-07-01 08:00 EDT"
    assert clock.utc(moment) == "2026-11-20T15:00:00Z"
    assert clock.local(None) == "—" and clock.utc(None) == ""


def test_cure_clocks_read_as_time_left_or_overdue() -> None:
    assert duration(5 * 3600 + 3 * 60) == "5h 03m"
    assert duration(-(26 * 3600)) == "overdue 1d 2h"
    assert duration(None) == "—"


def test_outside_text_is_bounded_to_one_line() -> None:
    assert untrusted("a\r\nb") == "a  b"
    assert untrusted("x" * 500) == "x" * 300 + "…"
    assert untrusted(None) == ""
    assert short("0x" + "ab" * 32) == "0xabababab…babab"
    assert query({"a": "1", "b": "x y"}, b=None, c=2) == "a=1&c=2"


@pytest.mark.parametrize(("target", "safe"), [
    ("/exceptions?status=open", "/exceptions?status=open"),
    ("//evil.example/", "/"), ("https://evil.example/", "/"), ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"), ("", "/"), (None, "/"), ("/" + "a" * 600, "/"),
])
def test_sign_in_only_returns_to_this_site(target: str | None, safe: str) -> None:
    assert local_target(target) == safe


def test_form_times_need_a_zone_or_take_the_configured_one() -> None:
    assert _cut_off("2026-12-04T17:00", "America/New_York") == \
        datetime(2026, 12, 4, 22, 0, tzinfo=UTC)
    assert _cut_off("2026-12-04T17:00:00Z", "America/New_York") == \
        datetime(2026, 12, 4, 17, 0, tzinfo=UTC)
    assert _cut_off("  ", "UTC") is None
    with pytest.raises(InputError, match="not a time"):
        _cut_off("yesterday", "UTC")


def test_upload_names_keep_the_format_and_lose_paths() -> None:
    assert _file_name("books 2026-12-04.csv", "ledger") == "books_2026-12-04.csv"
    assert _file_name("../../etc/passwd", "ledger") == "passwd.csv"
    assert _file_name("C:\\books\\w.JSON", "withdrawals") == "w.json"
    assert _file_name(".csv", "ledger") == "ledger.csv"


def _row(status: str, proposed_by: str | None = None) -> m.Discrepancy:
    return m.Discrepancy(status=status, proposed_by=proposed_by)


def _viewer(name: str, *roles: str) -> Viewer:
    return Viewer(Principal(name, frozenset(roles), "password"), "csrf")


@pytest.mark.parametrize(("viewer", "row", "dual", "offered"), [
    (_viewer("mia", "maker"), _row("open"), False, {"propose"}),
    (_viewer("mia", "maker"), _row("proposed", "mia"), False, set()),
    (_viewer("carl", "checker"), _row("proposed", "mia"), False, {"approve", "reject"}),
    (_viewer("carl", "checker"), _row("proposed", "carl"), True, set()),  # own proposal
    (_viewer("carl", "checker"), _row("open"), False, set()),
    (_viewer("val", "viewer", "auditor"), _row("proposed", "mia"), False, set()),
    (_viewer("cora", "maker", "checker"), _row("open"), False, set()),  # dual role off
    (_viewer("cora", "maker", "checker"), _row("open"), True, {"propose"}),
    (_viewer("root", "admin"), _row("resolved"), False, set()),
])
def test_only_the_actions_a_role_may_take_are_offered(viewer: Viewer, row: m.Discrepancy,
                                                       dual: bool, offered: set[str]) -> None:
    assert _actions(viewer, row, dual) == offered
