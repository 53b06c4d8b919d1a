"""Business calendar: Europe/Paris business days and the deadline rules of docs/rules.md (section 5).

Pure and deterministic, so workflows may call it (holiday tables are computed, not fetched).
"""
from __future__ import annotations

from calendar import monthrange
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

PARIS = ZoneInfo("Europe/Paris")
END_OF_DAY = time(23, 59, 59)


# The 11 national days (holidays' France default; Alsace-Moselle extras excluded), computed once at
# import: the `holidays` package reads translation files when it builds a calendar, which workflow
# code must not do. 0.1 s for a century.
TABLE_YEARS = range(2000, 2101)
_TABLE = frozenset(holidays.France(years=TABLE_YEARS).keys())


@lru_cache(maxsize=16)
def _french_holidays_outside_table(year: int) -> frozenset[date]:
    return frozenset(holidays.France(years=year).keys())


def is_holiday(d: date) -> bool:
    if d.year in TABLE_YEARS:
        return d in _TABLE
    return d in _french_holidays_outside_table(d.year)


def is_business_day(d: date) -> bool:
    return d.weekday() < 5 and not is_holiday(d)


def paris_day(moment: datetime) -> date:
    """The Europe/Paris calendar day of an aware instant."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: pass an aware instant")
    return moment.astimezone(PARIS).date()


def end_of_paris_day(d: date) -> datetime:
    """23:59:59 Europe/Paris on day d, as an aware datetime in Paris time."""
    return datetime.combine(d, END_OF_DAY, tzinfo=PARIS)


def add_business_days(d: date, n: int) -> date:
    """The n-th business day after calendar day d (n >= 1)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    current = d
    while n:
        current += timedelta(days=1)
        if is_business_day(current):
            n -= 1
    return current


def next_business_day_on_or_after(d: date) -> date:
    while not is_business_day(d):
        d += timedelta(days=1)
    return d


def business_days_deadline(event: datetime, n: int) -> datetime:
    """'Within n business days after event': 23:59:59 Paris on the n-th business day after its day."""
    return end_of_paris_day(add_business_days(paris_day(event), n))


def calendar_days_deadline(event: datetime, days: int, *, roll_to_business_day: bool = False) -> datetime:
    """'Within N days': counted from the day after the event, ending 23:59:59 Paris on the last day.

    With roll_to_business_day (legal return windows), a last day that falls on a weekend or public
    holiday moves to the next business day.
    """
    last = paris_day(event) + timedelta(days=days)
    if roll_to_business_day:
        last = next_business_day_on_or_after(last)
    return end_of_paris_day(last)


def add_months(d: date, months: int) -> date:
    """Same day-of-month `months` later, clamped to the month's last day (31 Jan + 1 month = 28/29 Feb)."""
    month_index = d.month - 1 + months
    year, month = d.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(d.day, monthrange(year, month)[1]))


def months_deadline(event: datetime, months: int) -> datetime:
    """End of the Paris day `months` months after the event's day (warranty periods)."""
    return end_of_paris_day(add_months(paris_day(event), months))
