"""Business calendar rules of docs/rules.md (sections 5 and 6) on fixed real dates.

Pure rules: fixed dates are right here. Every expected deadline is written with an explicit UTC
offset (+01:00 CET in winter, +02:00 CEST in summer) so a wrong zone or a wrong DST rule fails too.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import pytest

from domain.calendar import (
    PARIS,
    add_business_days,
    add_months,
    business_days_deadline,
    calendar_days_deadline,
    is_business_day,
    is_holiday,
    months_deadline,
    next_business_day_on_or_after,
    paris_day,
)

UTC = timezone.utc
CET = timezone(timedelta(hours=1))   # Paris in winter
CEST = timezone(timedelta(hours=2))  # Paris in summer


def paris(y, m, d, hh=12, mm=0, ss=0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=PARIS)


def utc(y, m, d, hh=12, mm=0, ss=0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=UTC)


def assert_end_of_paris_day(deadline: datetime, day: date, offset: timezone) -> None:
    """deadline is the instant 23:59:59 Paris wall clock on `day`, at the given UTC offset."""
    assert deadline.tzinfo is not None
    expected = datetime.combine(day, time(23, 59, 59), tzinfo=offset)
    assert deadline == expected  # different tzinfo objects: compares instants
    assert deadline.astimezone(UTC) == expected.astimezone(UTC)
    in_paris = deadline.astimezone(PARIS)
    assert in_paris.utcoffset() == offset.utcoffset(None)
    assert (in_paris.date(), in_paris.time()) == (day, time(23, 59, 59))


# ----------------------------------------------------------------------------- business days
NATIONAL_HOLIDAYS = {
    2026: [
        date(2026, 1, 1),    # Jour de l'an (Thu)
        date(2026, 4, 6),    # Lundi de Pâques (Easter 5 April)
        date(2026, 5, 1),    # Fête du travail (Fri)
        date(2026, 5, 8),    # Victoire 1945 (Fri)
        date(2026, 5, 14),   # Ascension (Thu)
        date(2026, 5, 25),   # Lundi de Pentecôte
        date(2026, 7, 14),   # Fête nationale (Tue)
        date(2026, 8, 15),   # Assomption (Sat)
        date(2026, 11, 1),   # Toussaint (Sun)
        date(2026, 11, 11),  # Armistice (Wed)
        date(2026, 12, 25),  # Noël (Fri)
    ],
    2027: [
        date(2027, 1, 1),    # Fri
        date(2027, 3, 29),   # Easter Monday (Easter 28 March)
        date(2027, 5, 1),    # Sat
        date(2027, 5, 8),    # Sat
        date(2027, 5, 6),    # Ascension (Thu)
        date(2027, 5, 17),   # Whit Monday
        date(2027, 7, 14),   # Wed
        date(2027, 8, 15),   # Sun
        date(2027, 11, 1),   # Mon
        date(2027, 11, 11),  # Thu
        date(2027, 12, 25),  # Sat
    ],
}
ALL_HOLIDAYS = [d for days in NATIONAL_HOLIDAYS.values() for d in days]


@pytest.mark.parametrize("day", ALL_HOLIDAYS, ids=str)
def test_each_national_holiday_is_a_holiday_and_not_a_business_day(day):
    assert is_holiday(day)
    assert not is_business_day(day)


@pytest.mark.parametrize("year", [2026, 2027])
def test_exactly_the_eleven_national_days_are_holidays(year):
    every_day = [date(year, 1, 1) + timedelta(days=i) for i in range(365)]
    assert sorted(d for d in every_day if is_holiday(d)) == sorted(NATIONAL_HOLIDAYS[year])


@pytest.mark.parametrize("day", [
    date(2026, 4, 3),    # Good Friday 2026 (Alsace-Moselle only), a Friday
    date(2027, 3, 26),   # Good Friday 2027, a Friday
    date(2025, 12, 26),  # Saint-Étienne (Alsace-Moselle only), a Friday
    date(2028, 12, 26),  # Saint-Étienne, a Tuesday
], ids=str)
def test_alsace_moselle_days_are_ordinary_business_days(day):
    assert day.weekday() < 5
    assert not is_holiday(day)
    assert is_business_day(day)


@pytest.mark.parametrize("day", [date(2026, 12, 26), date(2027, 12, 26)], ids=str)
def test_26_december_is_not_a_holiday_in_2026_and_2027(day):
    assert not is_holiday(day)


def test_weekdays_are_business_days_and_weekends_are_not():
    week = [date(2026, 6, 1) + timedelta(days=i) for i in range(7)]  # Mon 1 .. Sun 7 June 2026
    assert [is_business_day(d) for d in week] == [True] * 5 + [False, False]
    assert not is_holiday(date(2026, 6, 6))  # a weekend day is not a holiday, just not worked


@pytest.mark.parametrize("holiday, following_monday", [
    (date(2026, 8, 15), date(2026, 8, 17)),   # Sat
    (date(2026, 11, 1), date(2026, 11, 2)),   # Sun
    (date(2027, 5, 1), date(2027, 5, 3)),     # Sat
    (date(2027, 5, 8), date(2027, 5, 10)),    # Sat
    (date(2027, 8, 15), date(2027, 8, 16)),   # Sun
    (date(2027, 12, 25), date(2027, 12, 27)), # Sat
], ids=str)
def test_a_holiday_on_a_weekend_is_not_carried_over_to_monday(holiday, following_monday):
    assert holiday.weekday() >= 5 and is_holiday(holiday)
    assert following_monday.weekday() == 0
    assert is_business_day(following_monday)
    assert next_business_day_on_or_after(holiday) == following_monday


def test_add_business_days_counts_from_the_day_after():
    assert add_business_days(date(2026, 6, 1), 1) == date(2026, 6, 2)  # Mon → Tue
    assert add_business_days(date(2026, 6, 5), 1) == date(2026, 6, 8)  # Fri → Mon
    assert add_business_days(date(2026, 6, 6), 1) == date(2026, 6, 8)  # Sat → Mon
    assert add_business_days(date(2026, 6, 1), 5) == date(2026, 6, 8)  # Mon → next Mon
    # Through Easter Monday 2027 and the week after.
    assert add_business_days(date(2027, 3, 25), 3) == date(2027, 3, 31)
    with pytest.raises(ValueError):
        add_business_days(date(2026, 6, 1), 0)


def test_paris_day_of_an_instant_and_naive_datetimes_are_refused():
    assert paris_day(utc(2026, 3, 5, 23, 30)) == date(2026, 3, 6)   # 00:30 in Paris (CET)
    assert paris_day(utc(2026, 3, 5, 22, 59)) == date(2026, 3, 5)   # 23:59 in Paris
    assert paris_day(utc(2026, 7, 9, 22, 0)) == date(2026, 7, 10)   # 00:00 in Paris (CEST)
    assert paris_day(utc(2026, 7, 9, 21, 59)) == date(2026, 7, 9)
    with pytest.raises(ValueError):
        paris_day(datetime(2026, 3, 5, 12, 0))
    with pytest.raises(ValueError):
        business_days_deadline(datetime(2026, 3, 5, 12, 0), 1)


# ------------------------------------------------------ "within N business days after D"
def test_friday_event_one_business_day_ends_monday():
    deadline = business_days_deadline(paris(2026, 6, 5, 10), 1)  # Fri 5 June 2026
    assert_end_of_paris_day(deadline, date(2026, 6, 8), CEST)
    assert deadline == utc(2026, 6, 8, 21, 59, 59)


def test_weekday_event_one_business_day_ends_next_day_at_end_of_paris_day():
    deadline = business_days_deadline(paris(2026, 11, 17, 0, 0, 1), 1)  # Tue 17 Nov 2026
    assert_end_of_paris_day(deadline, date(2026, 11, 18), CET)
    assert deadline == utc(2026, 11, 18, 22, 59, 59)


def test_the_time_of_day_of_the_event_does_not_matter_only_its_paris_day():
    early = business_days_deadline(paris(2026, 6, 2, 0, 0, 0), 3)
    late = business_days_deadline(paris(2026, 6, 2, 23, 59, 59), 3)
    assert early == late
    assert_end_of_paris_day(early, date(2026, 6, 5), CEST)


def test_thursday_before_easter_monday_three_business_days():
    # Delivered Thu 25 March 2027: Fri 26 (Good Friday is worked), [Sat, Sun 28 Easter, Mon 29
    # Easter Monday], Tue 30, Wed 31. Also crosses the switch to summer time on Sun 28 March.
    deadline = business_days_deadline(paris(2027, 3, 25, 15), 3)
    assert_end_of_paris_day(deadline, date(2027, 3, 31), CEST)
    assert deadline == utc(2027, 3, 31, 21, 59, 59)


def test_thursday_before_easter_monday_2026_one_business_day_is_good_friday():
    deadline = business_days_deadline(paris(2026, 4, 2, 9), 1)  # Thu 2 April 2026
    assert_end_of_paris_day(deadline, date(2026, 4, 3), CEST)   # Good Friday is a business day
    deadline = business_days_deadline(paris(2026, 4, 3, 9), 1)  # Good Friday → Easter Monday skipped
    assert_end_of_paris_day(deadline, date(2026, 4, 7), CEST)


@pytest.mark.parametrize("event, n, last_day", [
    # Ascension Thu 14 May 2026: the Friday "bridge" is still a business day.
    (paris(2026, 5, 13, 16), 1, date(2026, 5, 15)),
    (paris(2026, 5, 13, 16), 3, date(2026, 5, 19)),  # Fri 15, Mon 18, Tue 19
    (paris(2026, 5, 14, 10), 1, date(2026, 5, 15)),  # event on Ascension itself
    # Ascension Thu 6 May 2027 (8 May is a Saturday): Fri 7, Mon 10.
    (paris(2027, 5, 5, 16), 2, date(2027, 5, 10)),
    # Whit Monday 25 May 2026 after a Friday event: Tue 26.
    (paris(2026, 5, 22, 11), 1, date(2026, 5, 26)),
    # 1 May and 8 May 2026 are Fridays: Thu 30 April + 1 → Mon 4 May; Thu 7 May + 1 → Mon 11 May.
    (paris(2026, 4, 30, 11), 1, date(2026, 5, 4)),
    (paris(2026, 5, 7, 11), 1, date(2026, 5, 11)),
    # 14 July 2026 (Tue) and 11 Nov 2026 (Wed).
    (paris(2026, 7, 13, 11), 1, date(2026, 7, 15)),
    (paris(2026, 11, 10, 11), 1, date(2026, 11, 12)),
    # Toussaint 2027 on a Monday.
    (paris(2027, 10, 29, 11), 1, date(2027, 11, 2)),
], ids=lambda v: str(v))
def test_business_days_skip_holidays(event, n, last_day):
    offset = CEST if date(2026, 3, 29) <= last_day < date(2026, 10, 25) or \
        date(2027, 3, 28) <= last_day < date(2027, 10, 31) else CET
    assert_end_of_paris_day(business_days_deadline(event, n), last_day, offset)


def test_ascension_bridge_five_business_days():
    # Wed 13 May 2026 + 5: Fri 15, Mon 18, Tue 19, Wed 20, Thu 21.
    assert_end_of_paris_day(business_days_deadline(paris(2026, 5, 13, 9), 5), date(2026, 5, 21), CEST)


def test_christmas_eve_across_christmas():
    # Thu 24 Dec 2026 → [Fri 25 Noël, Sat 26, Sun 27] → Mon 28.
    deadline = business_days_deadline(paris(2026, 12, 24, 18), 1)
    assert_end_of_paris_day(deadline, date(2026, 12, 28), CET)
    assert deadline == utc(2026, 12, 28, 22, 59, 59)
    # Fri 24 Dec 2027 → [Sat 25, Sun 26] → Mon 27 (no substitute holiday).
    assert_end_of_paris_day(business_days_deadline(paris(2027, 12, 24, 18), 1), date(2027, 12, 27), CET)
    # Wed 24 Dec 2025 → [Thu 25] → Fri 26 (Saint-Étienne is worked outside Alsace-Moselle).
    assert_end_of_paris_day(business_days_deadline(paris(2025, 12, 24, 18), 1), date(2025, 12, 26), CET)


def test_new_years_eve_across_the_year_end():
    # Thu 31 Dec 2026 → [Fri 1 Jan 2027, Sat 2, Sun 3] → Mon 4 Jan 2027.
    deadline = business_days_deadline(paris(2026, 12, 31, 20), 1)
    assert_end_of_paris_day(deadline, date(2027, 1, 4), CET)
    assert deadline == utc(2027, 1, 4, 22, 59, 59)
    # Three business days: Mon 4, Tue 5, Wed 6.
    assert_end_of_paris_day(business_days_deadline(paris(2026, 12, 31, 20), 3), date(2027, 1, 6), CET)
    # Fri 31 Dec 2027 → [Sat 1 Jan 2028, Sun 2] → Mon 3 Jan 2028.
    assert_end_of_paris_day(business_days_deadline(paris(2027, 12, 31, 20), 1), date(2028, 1, 3), CET)


def test_event_at_2330_utc_is_already_the_next_day_in_paris_winter():
    # Thu 5 March 2026 23:30 UTC = Fri 6 March 00:30 Paris → +1 business day = Mon 9 March.
    deadline = business_days_deadline(utc(2026, 3, 5, 23, 30), 1)
    assert_end_of_paris_day(deadline, date(2026, 3, 9), CET)
    assert deadline == utc(2026, 3, 9, 22, 59, 59)
    # One hour earlier it is still Thursday in Paris → Friday.
    assert_end_of_paris_day(business_days_deadline(utc(2026, 3, 5, 22, 30), 1), date(2026, 3, 6), CET)


def test_event_late_utc_evening_is_already_the_next_day_in_paris_summer():
    # Thu 9 July 2026 22:30 UTC = Fri 10 July 00:30 Paris → +1 = Mon 13 (Tue 14 is a holiday, not reached).
    assert_end_of_paris_day(business_days_deadline(utc(2026, 7, 9, 22, 30), 1), date(2026, 7, 13), CEST)
    # … and +2 skips 14 July: Mon 13, Wed 15.
    assert_end_of_paris_day(business_days_deadline(utc(2026, 7, 9, 22, 30), 2), date(2026, 7, 15), CEST)
    # 21:30 UTC = 23:30 Thursday in Paris → Fri 10.
    assert_end_of_paris_day(business_days_deadline(utc(2026, 7, 9, 21, 30), 1), date(2026, 7, 10), CEST)


def test_dst_spring_forward_deadline_has_summer_offset():
    # Clocks go forward on Sun 29 March 2026. Fri 27 March (CET) + 1 → Mon 30 March (CEST).
    event = paris(2026, 3, 27, 10)
    assert event.utcoffset() == timedelta(hours=1)
    deadline = business_days_deadline(event, 1)
    assert_end_of_paris_day(deadline, date(2026, 3, 30), CEST)
    assert deadline == utc(2026, 3, 30, 21, 59, 59)
    assert deadline.utcoffset() == timedelta(hours=2)


def test_dst_fall_back_deadline_has_winter_offset():
    # Clocks go back on Sun 25 October 2026. Fri 23 Oct (CEST) + 1 → Mon 26 Oct (CET).
    event = paris(2026, 10, 23, 10)
    assert event.utcoffset() == timedelta(hours=2)
    deadline = business_days_deadline(event, 1)
    assert_end_of_paris_day(deadline, date(2026, 10, 26), CET)
    assert deadline == utc(2026, 10, 26, 22, 59, 59)
    assert deadline.utcoffset() == timedelta(hours=1)


def test_dst_fall_back_2027_and_toussaint():
    # Clocks go back on Sun 31 October 2027; Mon 1 Nov 2027 is Toussaint. Fri 29 Oct + 1 → Tue 2 Nov.
    deadline = business_days_deadline(paris(2027, 10, 29, 10), 1)
    assert_end_of_paris_day(deadline, date(2027, 11, 2), CET)
    assert deadline == utc(2027, 11, 2, 22, 59, 59)


def test_event_during_the_repeated_autumn_hour_and_in_the_night_of_the_change():
    # 25 Oct 2026 00:30 UTC = 02:30 CEST, 01:30 UTC = 02:30 CET: both are Sunday 25 Oct in Paris.
    for instant in (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)):
        assert paris_day(instant) == date(2026, 10, 25)
        assert_end_of_paris_day(business_days_deadline(instant, 1), date(2026, 10, 26), CET)
    # Sat 28 March 2026 23:30 UTC = Sun 29 March 00:30 CET → +1 = Mon 30 (CEST).
    assert_end_of_paris_day(business_days_deadline(utc(2026, 3, 28, 23, 30), 1), date(2026, 3, 30), CEST)


def test_deadline_of_the_dst_day_itself_is_at_2359_59_local():
    # A deadline that falls on the day clocks change: still 23:59:59 local, with that evening's offset.
    assert_end_of_paris_day(calendar_days_deadline(paris(2026, 3, 28, 12), 1), date(2026, 3, 29), CEST)
    assert_end_of_paris_day(calendar_days_deadline(paris(2026, 10, 24, 12), 1), date(2026, 10, 25), CET)


# ----------------------------------------------------------------------------- calendar days
def test_calendar_days_count_from_the_day_after_the_event():
    # Mon 1 June 2026 + 3 days: Tue 2, Wed 3, Thu 4 → Thu 4 June 23:59:59 Paris.
    for hh, mm in ((0, 0), (10, 0), (23, 30)):
        deadline = calendar_days_deadline(paris(2026, 6, 1, hh, mm), 3)
        assert_end_of_paris_day(deadline, date(2026, 6, 4), CEST)
        assert deadline == utc(2026, 6, 4, 21, 59, 59)


def test_calendar_days_use_the_paris_day_of_the_event():
    # 1 June 2026 22:30 UTC is already 2 June in Paris → Fri 5 June.
    assert_end_of_paris_day(calendar_days_deadline(utc(2026, 6, 1, 22, 30), 3), date(2026, 6, 5), CEST)
    # 31 Dec 2026 23:30 UTC is 1 Jan 2027 in Paris → + 3 = 4 Jan 2027.
    assert_end_of_paris_day(calendar_days_deadline(utc(2026, 12, 31, 23, 30), 3), date(2027, 1, 4), CET)


def test_calendar_days_do_not_roll_by_default_even_onto_a_weekend_or_holiday():
    # Thu 24 Dec 2026 + 3 → Sun 27 Dec; Wed 22 Dec 2027 + 3 → Sat 25 Dec (Christmas).
    assert_end_of_paris_day(calendar_days_deadline(paris(2026, 12, 24), 3), date(2026, 12, 27), CET)
    assert_end_of_paris_day(calendar_days_deadline(paris(2027, 12, 22), 3), date(2027, 12, 25), CET)


@pytest.mark.parametrize("delivered, last_day, rolled_to, offset", [
    # Last day a business day: unchanged. Mon 1 June 2026 + 30 = Wed 1 July.
    (paris(2026, 6, 1, 15), date(2026, 7, 1), date(2026, 7, 1), CEST),
    # Last day Sunday → Monday. Fri 29 May 2026 + 30 = Sun 28 June → Mon 29 June.
    (paris(2026, 5, 29, 15), date(2026, 6, 28), date(2026, 6, 29), CEST),
    # Last day Saturday → Monday. Thu 28 May 2026 + 30 = Sat 27 June → Mon 29 June.
    (paris(2026, 5, 28, 15), date(2026, 6, 27), date(2026, 6, 29), CEST),
    # Last day Sunday, Monday is Easter Monday → Tuesday. Fri 6 March 2026 + 30 = Sun 5 April → Tue 7 April.
    (paris(2026, 3, 6, 15), date(2026, 4, 5), date(2026, 4, 7), CEST),
    # Same with Whit Monday: Fri 24 April 2026 + 30 = Sun 24 May → Tue 26 May.
    (paris(2026, 4, 24, 15), date(2026, 5, 24), date(2026, 5, 26), CEST),
    # Easter 2027 is also the DST Sunday: Fri 26 Feb 2027 (CET) + 30 = Sun 28 March → Tue 30 March (CEST).
    (paris(2027, 2, 26, 15), date(2027, 3, 28), date(2027, 3, 30), CEST),
    # Last day a weekday holiday: Sun 14 June 2026 + 30 = Tue 14 July → Wed 15 July.
    (paris(2026, 6, 14, 15), date(2026, 7, 14), date(2026, 7, 15), CEST),
    # Christmas 2026 (Fri) then the weekend: Wed 25 Nov 2026 + 30 = Fri 25 Dec → Mon 28 Dec.
    (paris(2026, 11, 25, 15), date(2026, 12, 25), date(2026, 12, 28), CET),
    # Saturday 1 May 2027, Sunday, then Monday 3 May (worked) : Thu 1 April 2027 + 30 = Sat 1 May → Mon 3 May.
    (paris(2027, 4, 1, 15), date(2027, 5, 1), date(2027, 5, 3), CEST),
    # Year end: Wed 2 Dec 2026 + 30 = Fri 1 Jan 2027 → Mon 4 Jan 2027.
    (paris(2026, 12, 2, 15), date(2027, 1, 1), date(2027, 1, 4), CET),
], ids=lambda v: str(v))
def test_withdrawal_window_of_30_days_rolls_to_the_next_business_day(delivered, last_day, rolled_to, offset):
    assert paris_day(delivered) + timedelta(days=30) == last_day  # the scenario is what it says
    deadline = calendar_days_deadline(delivered, 30, roll_to_business_day=True)
    assert_end_of_paris_day(deadline, rolled_to, offset)


def test_fourteen_day_shipment_window_does_not_roll():
    # Sun 14 June 2026 + 14 = Sun 28 June: stays Sunday.
    assert_end_of_paris_day(calendar_days_deadline(paris(2026, 6, 14, 9), 14), date(2026, 6, 28), CEST)
    # Mon 23 March 2026 + 14 = Easter Monday 6 April: stays on the holiday (and crosses DST).
    deadline = calendar_days_deadline(paris(2026, 3, 23, 9), 14)
    assert_end_of_paris_day(deadline, date(2026, 4, 6), CEST)
    assert deadline == utc(2026, 4, 6, 21, 59, 59)


# ----------------------------------------------------------------------------- months
@pytest.mark.parametrize("start, months, expected", [
    (date(2026, 1, 31), 12, date(2027, 1, 31)),
    (date(2026, 1, 31), 1, date(2026, 2, 28)),   # clamped (2026 is not a leap year)
    (date(2027, 1, 31), 1, date(2027, 2, 28)),
    (date(2028, 1, 31), 1, date(2028, 2, 29)),   # leap year
    (date(2026, 3, 31), 11, date(2027, 2, 28)),
    (date(2024, 2, 29), 12, date(2025, 2, 28)),  # 29 Feb + 12 months → 28 Feb
    (date(2028, 2, 29), 12, date(2029, 2, 28)),
    (date(2028, 2, 29), 48, date(2032, 2, 29)),
    (date(2026, 12, 15), 1, date(2027, 1, 15)),  # across the year end
    (date(2026, 11, 30), 3, date(2027, 2, 28)),
    (date(2026, 2, 28), 24, date(2028, 2, 28)),
], ids=str)
def test_add_months_clamps_to_the_end_of_the_month(start, months, expected):
    assert add_months(start, months) == expected


def test_warranty_twelve_months_after_31_january():
    deadline = months_deadline(paris(2026, 1, 31, 14), 12)
    assert_end_of_paris_day(deadline, date(2027, 1, 31), CET)
    assert deadline == utc(2027, 1, 31, 22, 59, 59)


def test_warranty_twelve_months_after_29_february_is_28_february():
    assert_end_of_paris_day(months_deadline(paris(2028, 2, 29, 14), 12), date(2029, 2, 28), CET)
    assert_end_of_paris_day(months_deadline(paris(2024, 2, 29, 14), 12), date(2025, 2, 28), CET)


def test_months_use_the_paris_day_and_end_of_day():
    # 31 Jan 2026 23:30 UTC is 1 Feb 2026 in Paris → 12 months = 1 Feb 2027.
    assert_end_of_paris_day(months_deadline(utc(2026, 1, 31, 23, 30), 12), date(2027, 2, 1), CET)
    # Summer delivery: 24-month legal guarantee from 15 July 2026 → 15 July 2028 (CEST).
    deadline = months_deadline(paris(2026, 7, 15, 9), 24)
    assert_end_of_paris_day(deadline, date(2028, 7, 15), CEST)
    assert deadline == utc(2028, 7, 15, 21, 59, 59)
