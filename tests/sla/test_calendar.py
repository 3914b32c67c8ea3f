"""Working calendar: hand-checked deadlines on China's 2026 schedule, DST, 24×7, overrides, and properties.

Default hours are Mon–Fri 09:00–12:00 and 13:30–17:30 (3 h + 4 h = 420 min a day). Expected instants
are written as local wall times with the arithmetic beside them.
"""
from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from grid_service.sla.calendar import Calendar, NaturalCalendar, WorkCalendar
from grid_service.sla.holidays import calendar_from_dict, china_calendar, china_year, chinese_calendar_years

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
US = timedelta(microseconds=1)
CN = china_calendar()
NY_WEEKLY = {wd: [("09:00", "17:00")] for wd in range(5)}
NY_CAL = WorkCalendar(tz="America/New_York", weekly=NY_WEEKLY, name="nyc")


def sh(*parts: int) -> datetime:
    """A Shanghai wall time as an aware datetime."""
    return datetime(*parts, tzinfo=SH)


def ny(*parts: int) -> datetime:
    """A New York wall time as an aware datetime (fold=0)."""
    return datetime(*parts, tzinfo=NY)


def check_add(cal: Calendar, start: datetime, minutes: int, expected: datetime) -> None:
    due = cal.add(start.astimezone(UTC), minutes)
    assert due.tzinfo is UTC
    assert due == expected, f"{start} + {minutes} → {due.astimezone(start.tzinfo)}, expected {expected}"
    assert cal.between(start, due) == minutes


# ------------------------------------------------------------------ China's 2026 day data


@pytest.mark.parametrize("day", [date(2026, 1, 4), date(2026, 2, 14), date(2026, 2, 28), date(2026, 9, 20), date(2026, 10, 10)])
def test_make_up_weekend_days_of_2026_are_working_days(day):
    assert day.weekday() >= 5
    assert CN.is_workday(day)
    assert CN.day_kind(day) == "workday"


def test_spring_festival_and_national_day_breaks_of_2026_are_not_worked():
    spring = [date(2026, 2, 15) + timedelta(days=i) for i in range(9)]  # Feb 15–23
    national = [date(2026, 10, 1) + timedelta(days=i) for i in range(7)]  # Oct 1–7
    assert not any(CN.is_workday(d) for d in spring + national)
    assert CN.is_workday(date(2026, 2, 24))
    # The library's 2026 data ends the National Day break on Wednesday Oct 7: Thursday Oct 8 is worked.
    assert CN.is_workday(date(2026, 10, 8))
    assert CN.is_workday(date(2026, 10, 9))


def test_a_year_without_official_data_is_the_template_plus_its_fixed_date_holidays():
    years = chinese_calendar_years()
    assert 2004 in years and 2026 in years and 2027 not in years
    assert china_year(2026).official
    y2027 = china_year(2027)
    assert not y2027.official
    # 元旦, 劳动节 (two days since the 2025 revision), 国庆节 (three): nothing lunar, no bridge days.
    assert sorted(y2027.holidays) == [date(2027, 1, 1), date(2027, 5, 1), date(2027, 5, 2),
                                      date(2027, 10, 1), date(2027, 10, 2), date(2027, 10, 3)]
    assert y2027.workdays == frozenset()  # no make-up days are guessed for an unpublished year


def test_a_deadline_across_the_unpublished_spring_festival_of_2027_is_on_the_template_and_provisional():
    # Lunar New Year 2027 is Saturday Feb 6; its break is not published, so Mon Feb 8 is a working day
    # until an admin sets the days: Friday 17:00 + 60 → 17:30 (30), then Monday 09:00 + 30.
    start = sh(2027, 2, 5, 17, 0)
    check_add(CN, start, 60, sh(2027, 2, 8, 9, 30))
    assert CN.is_provisional(start, sh(2027, 2, 8, 9, 30))


# ------------------------------------------------------------------ hand-checked deadlines


def test_lunch_break_is_skipped():
    # 11:30 → 12:00 is 30 min; the other 30 run from 13:30 → 14:00.
    check_add(CN, sh(2026, 3, 2, 11, 30), 60, sh(2026, 3, 2, 14, 0))


def test_deadline_can_end_exactly_at_the_lunch_break():
    # 11:00 + 60 = 12:00 exactly: the earliest instant with 60 min used, not 13:30.
    due = CN.add(sh(2026, 3, 2, 11, 0), 60)
    assert due == sh(2026, 3, 2, 12, 0)
    assert not CN.is_working(due) and CN.is_working(due - US)
    # add(t, 0) is the next working moment, documented: 12:00 → 13:30.
    assert CN.add(due, 0) == sh(2026, 3, 2, 13, 30)


def test_end_of_day_rolls_to_next_morning():
    # Mon 17:00 → 17:30 is 30 min; Tue 09:00 + 30 = 09:30.
    check_add(CN, sh(2026, 3, 2, 17, 0), 60, sh(2026, 3, 3, 9, 30))


def test_weekend_is_skipped():
    # Fri 2026-03-06 17:00 → 17:30 = 30; Sat/Sun off; Mon 03-09 09:00 + 30 = 09:30.
    check_add(CN, sh(2026, 3, 6, 17, 0), 60, sh(2026, 3, 9, 9, 30))


def test_start_at_night_and_before_opening():
    # 22:00 is after hours: the clock starts Tue 09:00; + 30 = 09:30.
    check_add(CN, sh(2026, 3, 2, 22, 0), 30, sh(2026, 3, 3, 9, 30))
    # 03:00 is before hours: starts 09:00 the same day; + 30 = 09:30.
    check_add(CN, sh(2026, 3, 3, 3, 0), 30, sh(2026, 3, 3, 9, 30))
    assert CN.next_working(sh(2026, 3, 2, 22, 0)) == sh(2026, 3, 3, 9, 0)


def test_spring_festival_make_up_saturday_and_break():
    # Fri 02-13 17:00 → 17:30 = 30; Sat 02-14 is a make-up day: 09:00 + 90 = 10:30.
    check_add(CN, sh(2026, 2, 13, 17, 0), 120, sh(2026, 2, 14, 10, 30))
    # Sat 02-14 17:00 → 17:30 = 30; Feb 15–23 off; Tue 02-24 09:00 + 90 = 10:30.
    check_add(CN, sh(2026, 2, 14, 17, 0), 120, sh(2026, 2, 24, 10, 30))
    # Fri 02-27 17:00 → 17:30 = 30; Sat 02-28 is a make-up day: 09:00 + 30 = 09:30.
    check_add(CN, sh(2026, 2, 27, 17, 0), 60, sh(2026, 2, 28, 9, 30))


def test_start_on_a_holiday():
    # Wed 02-18 is inside the break: the clock starts Tue 02-24 09:00; + 60 = 10:00.
    check_add(CN, sh(2026, 2, 18, 10, 0), 60, sh(2026, 2, 24, 10, 0))
    assert not CN.is_working(sh(2026, 2, 18, 10, 0))


def test_new_year_make_up_sunday():
    # Wed 2025-12-31 17:00 → 17:30 = 30; Jan 1–3 off; Sun 2026-01-04 is worked: 09:00 + 30 = 09:30.
    check_add(CN, sh(2025, 12, 31, 17, 0), 60, sh(2026, 1, 4, 9, 30))


def test_mid_autumn_and_national_day_with_make_up_days():
    # Fri 09-18 17:00 → 17:30 = 30; Sun 09-20 is worked: 09:00 + 30 = 09:30.
    check_add(CN, sh(2026, 9, 18, 17, 0), 60, sh(2026, 9, 20, 9, 30))
    # Thu 09-24 17:00 → 17:30 = 30; Fri 09-25 (Mid-Autumn) and the weekend off; Mon 09-28 09:30.
    check_add(CN, sh(2026, 9, 24, 17, 0), 60, sh(2026, 9, 28, 9, 30))
    # Wed 09-30 17:00 → 17:30 = 30; Oct 1–7 off; Thu 10-08 09:00 + 30 = 09:30.
    check_add(CN, sh(2026, 9, 30, 17, 0), 60, sh(2026, 10, 8, 9, 30))
    # Fri 10-09 17:00 → 17:30 = 30; Sat 10-10 is worked: 09:00 + 30 = 09:30.
    check_add(CN, sh(2026, 10, 9, 17, 0), 60, sh(2026, 10, 10, 9, 30))


def test_year_end_into_a_provisional_year():
    start = sh(2026, 12, 31, 17, 0)
    # Thu 12-31 17:00 → 17:30 = 30; Fri 2027-01-01 (元旦, a fixed-date holiday) and the weekend off;
    # Mon 2027-01-04 09:00 + 30 = 09:30.
    check_add(CN, start, 60, sh(2027, 1, 4, 9, 30))
    due = CN.add(start, 60)
    assert CN.is_provisional(start, due)
    assert not CN.is_provisional(start, sh(2026, 12, 31, 17, 30))
    assert not CN.is_provisional(start)
    assert CN.provisional_years(range(2025, 2029)) == [2027, 2028]


def test_between_across_a_weekend_and_a_holiday_break():
    # Fri 03-06 16:00 → 17:30 = 90; Mon 03-09 09:00 → 10:00 = 60: 150.
    assert CN.between(sh(2026, 3, 6, 16, 0), sh(2026, 3, 9, 10, 0)) == 150
    # Fri 02-13 16:00 → 17:30 = 90; Sat 02-14 full day = 180 + 240 = 420; Feb 15–23 off;
    # Tue 02-24 09:00 → 10:00 = 60: 570.
    a, b = sh(2026, 2, 13, 16, 0), sh(2026, 2, 24, 10, 0)
    assert CN.between(a, b) == 570
    assert CN.between(b, a) == -570
    assert CN.working_time(a, b) == timedelta(minutes=570)
    assert CN.between(a, a) == 0


def test_sub_minute_inputs_are_exact():
    # 1 µs left before noon, then 59.999999 s from 13:30.
    start = sh(2026, 3, 2, 11, 59, 59, 999999)
    assert CN.add(start, 1) == sh(2026, 3, 2, 13, 30, 59, 999999)
    # Half a minute and a timedelta are accepted too.
    assert CN.add(sh(2026, 3, 2, 10, 0), 0.5) == sh(2026, 3, 2, 10, 0, 30)
    assert CN.add(sh(2026, 3, 2, 10, 0), Fraction(1, 3)) == sh(2026, 3, 2, 10, 0, 20)
    assert CN.add(sh(2026, 3, 2, 10, 0), timedelta(hours=2)) == sh(2026, 3, 2, 12, 0)


def test_multi_year_span_and_far_years_with_bounded_cache():
    cal = china_calendar()
    # 2400 is far beyond any data: weekly template plus fixed-date holidays, provisional.
    start = sh(2400, 3, 1, 10, 0)  # a Wednesday
    assert cal.add(start, 60) == sh(2400, 3, 1, 11, 0)
    assert cal.is_provisional(start)
    assert cal.add(sh(1950, 3, 1, 10, 0), 60) == sh(1950, 3, 1, 11, 0)  # Wednesday too
    for year in range(2030, 2090):
        cal.next_working(sh(year, 6, 1))
    assert len(cal._blocks) <= 24
    # Ten years of working time round-trips across year blocks.
    t = sh(2026, 5, 6, 10, 0)
    n = 10 * 250 * 420
    assert cal.between(t, cal.add(t, n)) == n


# ------------------------------------------------------------------ DST, custom hours, 24×7


def test_dst_zone_across_spring_forward():
    # Fri 2026-03-06 16:00 EST → 17:00 = 60; Mon 03-09 (now EDT) 09:00 + 120 = 11:00 EDT.
    due = NY_CAL.add(ny(2026, 3, 6, 16, 0), 180)
    assert due == ny(2026, 3, 9, 11, 0)
    assert due == datetime(2026, 3, 9, 15, 0, tzinfo=UTC)  # EDT is UTC-4
    assert NY_CAL.between(ny(2026, 3, 6, 16, 0), ny(2026, 3, 9, 11, 0)) == 180
    assert not NY_CAL.is_provisional(ny(2026, 3, 6), ny(2027, 3, 6))


def test_dst_change_inside_working_hours_counts_real_elapsed_time():
    cal = WorkCalendar(tz="America/New_York", weekly={"sun": [("00:00", "06:00")]})
    # Sun 2026-03-08: 00:00 EST → 06:00 EDT is 5 real hours (02:00–03:00 never happens).
    assert cal.between(ny(2026, 3, 8, 0, 0), ny(2026, 3, 8, 6, 0)) == 300
    # Sun 2026-11-01: 00:00 EDT → 06:00 EST is 7 real hours (01:00–02:00 happens twice).
    assert cal.between(ny(2026, 11, 1, 0, 0), ny(2026, 11, 1, 6, 0)) == 420
    # A boundary inside the gap moves forward by the gap: 02:30 → 03:30 EDT, so 30 minutes remain.
    gap = WorkCalendar(tz="America/New_York", weekly={"sun": [("02:30", "04:00")]})
    assert gap.day_hours(date(2026, 3, 8)) == [
        (datetime(2026, 3, 8, 7, 30, tzinfo=UTC), datetime(2026, 3, 8, 8, 0, tzinfo=UTC))
    ]


def test_natural_calendar_is_24x7_and_never_provisional():
    cal = NaturalCalendar()
    start = sh(2026, 2, 17, 23, 0)  # a holiday night
    assert cal.add(start, 90) == sh(2026, 2, 18, 0, 30)  # 23:00 + 1 h 30
    assert cal.add(start, 0) == start
    assert cal.between(start, sh(2026, 2, 18, 0, 30)) == 90
    assert cal.between(sh(2026, 2, 18, 0, 30), start) == -90
    assert cal.is_working(start)
    assert not cal.is_provisional(start, sh(2030, 1, 1))
    assert cal.provisional_years(range(2026, 2030)) == []
    assert isinstance(cal, Calendar) and isinstance(CN, Calendar)


# ------------------------------------------------------------------ overrides, confirmation, storage


def test_admin_overrides_win_over_library_data():
    cal = china_calendar(
        overrides={date(2026, 3, 2): "holiday", date(2026, 3, 7): "workday", date(2026, 2, 23): "workday"}
    )
    # Mon 03-02 made a holiday: the clock starts Tue 03-03 09:00; + 60 = 10:00.
    check_add(cal, sh(2026, 3, 2, 10, 0), 60, sh(2026, 3, 3, 10, 0))
    # Sat 03-07 made a workday (Monday's hours): Fri 17:00 → 17:30 = 30; Sat 09:00 + 30 = 09:30.
    check_add(cal, sh(2026, 3, 6, 17, 0), 60, sh(2026, 3, 7, 9, 30))
    # Mon 02-23, a library holiday, made a workday: Sat 02-14 17:00 → 17:30 = 30; Mon 02-23 09:00 + 90 = 10:30.
    check_add(cal, sh(2026, 2, 14, 17, 0), 120, sh(2026, 2, 23, 10, 30))
    # The library calendar is untouched.
    check_add(CN, sh(2026, 3, 2, 10, 0), 60, sh(2026, 3, 2, 11, 0))
    # A later override replaces an earlier one.
    assert cal.with_overrides({date(2026, 3, 2): "workday"}).is_workday(date(2026, 3, 2))


def test_confirming_a_year_clears_its_provisional_flag():
    start, due = sh(2026, 12, 31, 17, 0), sh(2027, 1, 4, 9, 30)
    assert CN.is_provisional(start, due)
    assert not china_calendar(confirmed_years={2027}).is_provisional(start, due)
    confirmed = CN.with_confirmed_years([2027])
    assert not confirmed.is_provisional(start, due)
    assert confirmed.provisional_years(range(2026, 2029)) == [2028]
    # A calendar with no outside data has nothing to wait for, even with no confirmed years listed.
    assert NY_CAL.provisional_years(range(2000, 2100)) == []
    assert WorkCalendar(confirmed_years=[]).provisional_years(range(2000, 2100)) == []


def test_description_round_trips_through_json():
    cal = china_calendar(
        weekly={"mon": [("08:30", "12:00")], "tue": [("08:30", "17:00")], "sat": [("09:00", "24:00")]},
        overrides={date(2026, 3, 2): "holiday", date(2026, 3, 8): "workday"},
        confirmed_years={2027},
        name="street-east",
    )
    data = json.loads(json.dumps(cal.to_dict()))
    assert data["source"] == "cn" and data["holidays"] == ["2026-03-02"] and data["confirmed_years"] == [2027]
    again = calendar_from_dict(data)
    assert again == cal
    t = sh(2026, 3, 6, 12, 0)
    assert again.add(t, 1000) == cal.add(t, 1000)
    natural = NaturalCalendar(tz="Europe/Berlin")
    assert calendar_from_dict(json.loads(json.dumps(natural.to_dict()))) == natural


def test_bad_input_is_rejected():
    with pytest.raises(ValueError):
        CN.add(datetime(2026, 3, 2, 10, 0), 60)  # naive
    with pytest.raises(ValueError):
        CN.add(sh(2026, 3, 2, 10, 0), -1)
    with pytest.raises(ValueError):
        WorkCalendar(weekly={0: [("09:00", "12:00"), ("11:00", "13:00")]})
    with pytest.raises(ValueError):
        WorkCalendar(weekly={0: [("12:00", "09:00")]})
    with pytest.raises(ValueError):
        WorkCalendar(weekly={})
    with pytest.raises(ValueError):
        WorkCalendar(holidays=[date(2026, 3, 2)], workdays=[date(2026, 3, 2)])
    with pytest.raises(ValueError):
        WorkCalendar(tz="Mars/Olympus_Mons")
    with pytest.raises(ValueError):
        china_calendar(overrides={date(2026, 3, 2): "maybe"})  # type: ignore[dict-item]


# ------------------------------------------------------------------ properties

CALENDARS = {"china": CN, "new_york": NY_CAL, "natural": NaturalCalendar()}
instants = st.datetimes(
    min_value=datetime(2025, 10, 1), max_value=datetime(2027, 3, 1), timezones=st.just(UTC)
)
minutes = st.integers(min_value=0, max_value=12_000)
calendars = st.sampled_from(sorted(CALENDARS))
PROPS = settings(max_examples=150, deadline=None)


def walk_add(cal: WorkCalendar, start: datetime, n: int) -> datetime:
    """Reference: walk local days one by one, spending each day's intervals."""
    need = n * 60_000_000
    day = start.astimezone(cal.tz).date() - timedelta(days=1)
    while True:
        for s, e in cal.day_hours(day):
            if e <= start:
                continue
            s = max(s, start)
            if need == 0:
                return s
            avail = (e - s) // US
            if need <= avail:
                return s + need * US
            need -= avail
        day += timedelta(days=1)


@PROPS
@given(calendars, instants, minutes)
def test_between_inverts_add(name, t, n):
    cal = CALENDARS[name]
    assert cal.between(t, cal.add(t, n)) == n
    assert cal.between(cal.next_working(t), cal.add(t, n)) == n


@PROPS
@given(calendars, instants, minutes, st.integers(min_value=1, max_value=6_000))
def test_add_is_additive(name, t, a, b):
    cal = CALENDARS[name]
    assert cal.add(cal.add(t, a), b) == cal.add(t, a + b)
    # b = 0 normalises to the next working moment (documented), which has the same position.
    assert cal.add(cal.add(t, a), 0) == cal.next_working(cal.add(t, a))


@PROPS
@given(calendars, instants, instants, minutes, minutes)
def test_add_is_monotonic_in_both_arguments(name, t1, t2, n1, n2):
    cal = CALENDARS[name]
    t1, t2 = min(t1, t2), max(t1, t2)
    n1, n2 = min(n1, n2), max(n1, n2)
    assert cal.add(t1, n1) <= cal.add(t1, n2)
    assert cal.add(t1, n1) <= cal.add(t2, n1)
    assert cal.between(t1, t1) <= cal.between(t1, t2)


@PROPS
@given(calendars, instants, minutes)
def test_deadline_ends_working_time(name, t, n):
    cal = CALENDARS[name]
    due = cal.add(t, n)
    assert due >= t
    if n > 0:
        assert cal.is_working(due - US)
    else:
        assert cal.is_working(due) and due == cal.next_working(t)


@PROPS
@given(calendars, instants, instants, instants)
def test_between_is_antisymmetric_and_chains(name, a, b, c):
    cal = CALENDARS[name]
    assert cal.between(a, b) == -cal.between(b, a)
    assert cal.working_us(a, b) + cal.working_us(b, c) == cal.working_us(a, c)


@PROPS
@given(st.sampled_from(["china", "new_york"]), instants, minutes)
def test_add_matches_a_day_by_day_walk(name, t, n):
    cal = CALENDARS[name]
    assert cal.add(t, n) == walk_add(cal, t, n)
