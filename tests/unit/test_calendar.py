"""The cure clock's business-day arithmetic (daemon/rules/calendar.py), by example and by
property over many instants, timezones with DST changes, and holiday calendars."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.rules.calendar import add_business_day, is_business_day

NEW_YORK = "America/New_York"


@pytest.mark.parametrize(("detected", "due"), [
    (datetime(2026, 11, 20, 15, 0, tzinfo=UTC), datetime(2026, 11, 23, 15, 0, tzinfo=UTC)),
    # Wednesday before Thanksgiving (NYSE closed Thursday 26th): due Friday
    (datetime(2026, 11, 25, 15, 0, tzinfo=UTC), datetime(2026, 11, 27, 15, 0, tzinfo=UTC)),
    # Christmas Eve (Thursday): Christmas is a holiday, weekend follows → Monday 28th
    (datetime(2026, 12, 24, 15, 0, tzinfo=UTC), datetime(2026, 12, 28, 15, 0, tzinfo=UTC)),
    # Friday before the DST change (8 March 2026): 10:00 EST → Monday 10:00 EDT = 14:00 UTC
    (datetime(2026, 3, 6, 15, 0, tzinfo=UTC), datetime(2026, 3, 9, 14, 0, tzinfo=UTC)),
    # Friday before DST ends (1 November 2026): 10:00 EDT → Monday 10:00 EST = 15:00 UTC
    (datetime(2026, 10, 30, 14, 0, tzinfo=UTC), datetime(2026, 11, 2, 15, 0, tzinfo=UTC)),
    # Saturday evening in New York: due on the next business day, Monday, same wall time
    (datetime(2026, 11, 21, 23, 0, tzinfo=UTC), datetime(2026, 11, 23, 23, 0, tzinfo=UTC)),
])
def test_examples_across_weekends_holidays_and_dst(detected: datetime, due: datetime) -> None:
    """One business day later, same New York wall time, NYSE holidays skipped."""
    assert add_business_day(detected, NEW_YORK, "NYSE") == due


instants = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31),
                        timezones=st.just(UTC))
zones = st.sampled_from([NEW_YORK, "Europe/London", "Asia/Tokyo", "UTC"])
calendars = st.sampled_from(["NYSE", "none", "GB"])


@settings(max_examples=400)
@given(instants, zones, calendars)
def test_the_deadline_is_the_next_business_day_at_the_same_wall_time(
        moment: datetime, zone: str, calendar: str) -> None:
    """For any instant: the deadline is later, falls on a business day, every day strictly
    between the two local dates is not a business day, and the local wall time is kept
    (unless that time does not exist on the deadline's day, a DST gap)."""
    due = add_business_day(moment, zone, calendar)
    tz = ZoneInfo(zone)
    start, end = moment.astimezone(tz), due.astimezone(tz)
    assert due > moment
    assert is_business_day(end.date(), calendar)
    day: date = start.date() + timedelta(days=1)
    while day < end.date():
        assert not is_business_day(day, calendar)
        day += timedelta(days=1)
    wall = datetime.combine(end.date(), start.time()).replace(tzinfo=tz)
    exists = wall.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall.replace(
        tzinfo=None)
    if exists:
        assert end.time() == start.time()
    assert (due - moment) <= timedelta(days=12)  # no calendar has a longer closure
