"""Business days for the cure clock: a maintained holiday calendar, a local timezone."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays


@lru_cache(maxsize=8)
def _calendar(name: str) -> holidays.HolidayBase:
    if name.upper() in ("NONE", "WEEKDAYS"):
        return holidays.HolidayBase()
    if name.upper() in holidays.list_supported_financial():
        return holidays.financial_holidays(name.upper())
    return holidays.country_holidays(name.upper())


def is_known_calendar(name: str) -> bool:
    """Return True when `name` is a calendar `holidays` knows (or "none"/"weekdays")."""
    upper = name.upper()
    return upper in ("NONE", "WEEKDAYS") or upper in holidays.list_supported_financial() \
        or upper in holidays.list_supported_countries()


def is_business_day(day: date, calendar: str) -> bool:
    """Return True when `day` is a weekday and not a holiday of `calendar`."""
    return day.weekday() < 5 and day not in _calendar(calendar)


def add_business_day(moment: datetime, timezone: str, calendar: str) -> datetime:
    """Return `moment` plus one business day: the same local wall time on the next
    business day in `timezone` (wall time kept across DST changes), in UTC's tzinfo
    of the input. `moment` must be aware.
    """
    zone = ZoneInfo(timezone)
    local = moment.astimezone(zone)
    day = local.date() + timedelta(days=1)
    while not is_business_day(day, calendar):
        day += timedelta(days=1)
    target = datetime.combine(day, local.time().replace(tzinfo=None), tzinfo=zone)
    return target.astimezone(moment.tzinfo)
