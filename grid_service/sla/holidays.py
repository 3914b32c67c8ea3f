"""China's default day data: official 调休 schedules from chinese_calendar, rule-based holidays beyond.

For the years chinese_calendar covers (it follows the State Council's yearly notice, so those
years are official) the holidays and make-up working days come from it. Any other year is the weekly
template plus that year's fixed-date holidays — 元旦, 劳动节 and 国庆节 on their Gregorian dates, as
many days as the law in force that year gives (the `holidays` package's CN rules track its
revisions: 劳动节 three days until 2007, one until 2024, two since 2025). Nothing is guessed: not the
lunar festivals' dates as the State Council will set them, not bridge days, not make-up working
days. The year is marked unofficial, so deadlines in it are provisional until an admin confirms the
year or sets its days.

`calendar_from_dict` rebuilds a calendar from its description, with these sources built in.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import date
from functools import lru_cache
from typing import Any

import chinese_calendar
import holidays as holidays_lib

from .calendar import DEFAULT_TZ, DayKind, HolidaySource, NaturalCalendar, WorkCalendar, YearDays

logger = logging.getLogger(__name__)

# The `holidays` package's (en_US) names of the festivals fixed to a Gregorian date; its other CN
# entries (lunar festivals, Qingming, "(observed)" bridge days, substituted days off) are not kept.
_FIXED_DATE_FESTIVALS = frozenset({"New Year's Day", "Labor Day", "National Day"})


def _library_covers(year: int) -> bool:
    try:
        chinese_calendar.is_workday(date(year, 6, 1))
    except NotImplementedError:
        return False
    return True


@lru_cache(maxsize=1)
def chinese_calendar_years() -> range:
    """The years chinese_calendar has official data for (it raises NotImplementedError outside)."""
    known = {d.year for d in chinese_calendar.holidays} | {d.year for d in chinese_calendar.workdays}
    # Probe outward from the years the data mentions rather than trusting the data's extent.
    first = last = max(y for y in known if _library_covers(y))
    while _library_covers(first - 1):
        first -= 1
    while _library_covers(last + 1):
        last += 1
    return range(first, last + 1)


@lru_cache(maxsize=256)
def china_year(year: int) -> YearDays:
    """China's holidays and make-up working days for one year, and whether they are official."""
    if year in chinese_calendar_years():
        return YearDays(
            holidays=frozenset(d for d in chinese_calendar.holidays if d.year == year),
            workdays=frozenset(d for d in chinese_calendar.workdays if d.year == year),
            official=True,
        )
    try:
        rules = holidays_lib.country_holidays("CN", years=year, language="en_US")
    except (NotImplementedError, ValueError):  # before the package's first year: template only
        logger.warning("no holiday rules for CN in %s; using the weekly template alone", year)
        return YearDays(official=False)
    days = frozenset(
        day
        for day, label in rules.items()
        if day.year == year and _FIXED_DATE_FESTIVALS.intersection(label.split("; "))
    )
    return YearDays(holidays=days, workdays=frozenset(), official=False)


class ChinaHolidaySource:
    """HolidaySource for mainland China (name 'cn')."""

    name = "cn"

    def year(self, year: int) -> YearDays:
        """China's day data for one year."""
        return china_year(year)


_CHINA = ChinaHolidaySource()


def china_source() -> HolidaySource:
    """The shared China holiday source."""
    return _CHINA


def china_calendar(
    tz: str = DEFAULT_TZ,
    weekly: Mapping[int | str, Iterable[tuple[str, str]]] | None = None,
    overrides: Mapping[date, DayKind] | None = None,
    confirmed_years: Iterable[int] | None = None,
    *,
    name: str = "default",
) -> WorkCalendar:
    """A working calendar on China's schedule; admin overrides win over library data, confirmed_years add to official ones."""
    calendar = WorkCalendar(
        tz=tz, weekly=weekly, confirmed_years=confirmed_years, source=_CHINA, name=name
    )
    return calendar.with_overrides(overrides) if overrides else calendar


def _builtin_source(name: str) -> HolidaySource:
    if name == "cn":
        return china_source()
    raise ValueError(f"unknown holiday source {name!r}")


def calendar_from_dict(
    data: Mapping[str, Any], sources: Mapping[str, HolidaySource] | None = None
) -> WorkCalendar | NaturalCalendar:
    """Rebuild a calendar from ``to_dict()`` output; sources are looked up by name ('cn' is built in)."""
    kind = data.get("kind", "working")
    if kind == "natural":
        return NaturalCalendar(data.get("tz", DEFAULT_TZ), name=data.get("name", "natural"))
    if kind != "working":
        raise ValueError(f"unknown calendar kind {kind!r}")
    source_name = data.get("source")
    source = None
    if source_name is not None:
        source = (sources or {}).get(source_name) or _builtin_source(source_name)
    weekly = data.get("weekly")
    return WorkCalendar(
        tz=data.get("tz", DEFAULT_TZ),
        weekly=None if weekly is None else {k: [tuple(p) for p in v] for k, v in weekly.items()},
        holidays=data.get("holidays", ()),
        workdays=data.get("workdays", ()),
        confirmed_years=data.get("confirmed_years"),
        source=source,
        makeup_weekday=data.get("makeup_weekday"),
        name=data.get("name", "default"),
    )
