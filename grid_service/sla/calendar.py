"""Working-time arithmetic: deadlines in working minutes on a calendar of hours, holidays and 调休.

Pure module: no Flask, no database, no wall clock. Instants go in and come out as aware UTC
datetimes; the calendar's zone only decides where local working hours fall.

Representation. Internally every instant is an integer number of microseconds since the Unix
epoch (UTC) and every duration an integer number of microseconds, so the arithmetic is exact:
``between(t, add(t, n)) == n`` and ``add(add(t, a), b) == add(t, a + b)`` hold to the microsecond.
Working intervals are built per *local* year (half-open ``[start, end)`` in UTC microseconds, with
the cumulative working time at each interval's end), so a deadline is a couple of ``bisect``
lookups. Year blocks are built on first use and kept in a small cache; only one integer per
year (its total working time) is remembered beyond that, so far-away years work without
unbounded memory.

Conventions (see the methods for details):

- A start outside working hours begins at the next working moment.
- ``add(t, n)`` for ``n > 0`` is the *earliest* instant at which ``n`` working minutes have
  elapsed since ``t``; it may be the end of a working interval (11:00 + 60 min → 12:00, not 13:30).
- ``add(t, 0)`` is ``next_working(t)``: the first working moment at or after ``t``.
- ``between(a, b)`` is the working time in ``[a, b)`` in minutes (a float, exact for whole
  minutes and any multiple of 2**-k minutes that fits); it is negative when ``b < a``:
  ``between(a, b) == -between(b, a)``. ``working_time`` gives the same as an exact timedelta.
- Local wall-clock boundaries are converted to instants with ``zoneinfo`` (``fold=0``): a
  boundary inside a DST gap moves forward by the gap, an ambiguous one takes its first
  occurrence. Working time is real elapsed time, so a shift spanning a DST change is an hour
  shorter or longer that day.
"""
from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from typing import Any, Literal, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TZ = "Asia/Shanghai"
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_HOURS = (("09:00", "12:00"), ("13:30", "17:30"))
DEFAULT_WEEKLY: dict[int, tuple[tuple[str, str], ...]] = {wd: DEFAULT_HOURS for wd in range(5)}

# Local years the calendar will build; beyond them datetime itself runs out of room in some zones.
MIN_YEAR = 1900
MAX_YEAR = 9998

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_US_PER_MINUTE = 60_000_000
_DAY_SECONDS = 86_400
_CACHE_YEARS = 24  # year blocks kept; a block is ~500 intervals, so this is a few hundred kB at most

Minutes = int | float | Fraction | timedelta
DayKind = Literal["holiday", "workday"]


def to_us(value: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    if value.tzinfo is not UTC and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"naive datetime {value!r}: working-time arithmetic needs aware instants")
    return (value - _EPOCH) // _US


def from_us(us: int) -> datetime:
    """The aware UTC datetime of a microsecond count since the Unix epoch."""
    return _EPOCH + timedelta(microseconds=us)


def minutes_to_us(minutes: Minutes) -> int:
    """Working minutes (int, float, Fraction or timedelta) as whole microseconds, rounded."""
    if isinstance(minutes, bool):
        raise TypeError("working minutes must be a number or a timedelta, not a bool")
    if isinstance(minutes, int):
        us = minutes * _US_PER_MINUTE
    elif isinstance(minutes, timedelta):
        us = minutes // _US
    elif isinstance(minutes, (float, Fraction)):
        # Fraction keeps the conversion exact before the one rounding to a microsecond.
        us = round(Fraction(minutes) * _US_PER_MINUTE)
    else:
        raise TypeError(f"working minutes must be a number or a timedelta, not {type(minutes).__name__}")
    if us < 0:
        raise ValueError("working minutes must not be negative")
    return us


def _parse_clock(value: time | str, *, is_end: bool) -> int:
    """Seconds after local midnight of 'HH:MM[:SS]' or a time; '24:00' is allowed as an end."""
    if isinstance(value, time):
        if value.tzinfo is not None or value.microsecond:
            raise ValueError(f"working-hour boundaries are naive local times to the second: {value!r}")
        return value.hour * 3600 + value.minute * 60 + value.second
    parts = value.split(":")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"bad local time {value!r}, expected HH:MM or HH:MM:SS")
    h, m, s = (int(p) for p in (parts + ["0"])[:3])
    seconds = h * 3600 + m * 60 + s
    if m > 59 or s > 59 or seconds > _DAY_SECONDS or (seconds == _DAY_SECONDS and not is_end):
        raise ValueError(f"bad local time {value!r}")
    return seconds


def _format_clock(seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}" + (f":{s:02d}" if s else "")


def _parse_weekday(key: int | str) -> int:
    if isinstance(key, str):
        if key.lower()[:3] in WEEKDAY_NAMES:
            return WEEKDAY_NAMES.index(key.lower()[:3])
        key = int(key)
    if not 0 <= key <= 6:
        raise ValueError(f"weekday must be 0 (Monday) … 6 (Sunday), got {key!r}")
    return key


def _parse_weekly(
    weekly: Mapping[int | str, Iterable[tuple[time | str, time | str]]],
) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Weekly hours as seven sorted tuples of (start, end) seconds after local midnight."""
    days: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    for key, spans in weekly.items():
        wd = _parse_weekday(key)
        for start, end in spans:
            s, e = _parse_clock(start, is_end=False), _parse_clock(end, is_end=True)
            if s >= e:
                raise ValueError(f"working hours must end after they start: {start!r}–{end!r}")
            days[wd].append((s, e))
    for wd, spans in enumerate(days):
        spans.sort()
        for (_, e1), (s2, _) in zip(spans, spans[1:]):
            if s2 < e1:
                raise ValueError(f"overlapping working hours on {WEEKDAY_NAMES[wd]}")
    return tuple(tuple(spans) for spans in days)


def _parse_date(value: date | str) -> date:
    if isinstance(value, datetime):
        raise TypeError(f"expected a date, got a datetime {value!r}")
    return value if isinstance(value, date) else date.fromisoformat(value)


@dataclass(frozen=True)
class YearDays:
    """One year's day data from a holiday source: days off, extra working days, and whether it is official."""

    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    official: bool = True


class HolidaySource(Protocol):
    """Per-year day data (e.g. a country's holidays), asked lazily so any year can be served."""

    name: str

    def year(self, year: int) -> YearDays:
        """The holidays and make-up working days of one calendar year."""
        ...


@runtime_checkable
class Calendar(Protocol):
    """What the SLA clocks need from a calendar; both WorkCalendar and NaturalCalendar provide it."""

    name: str
    tz: ZoneInfo

    def add(self, start: datetime, working_minutes: Minutes) -> datetime: ...
    def between(self, a: datetime, b: datetime) -> float: ...
    def working_us(self, a: datetime, b: datetime) -> int: ...
    def working_time(self, a: datetime, b: datetime) -> timedelta: ...
    def is_working(self, t: datetime) -> bool: ...
    def next_working(self, t: datetime) -> datetime: ...
    def is_provisional(self, start: datetime, end: datetime | None = None) -> bool: ...
    def provisional_years(self, years: Iterable[int]) -> list[int]: ...
    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class _Block:
    """Working intervals of one local year: starts, ends and cumulative working time at each end (µs)."""

    starts: list[int]
    ends: list[int]
    cum_end: list[int]
    total: int


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


class WorkCalendar:
    """Working hours per weekday in a time zone, with holidays, make-up working days and confirmed years.

    Day rules, strongest first: the calendar's own ``holidays`` / ``workdays`` (admin overrides),
    then the ``source``'s data for that year, then the weekly template. A working day whose
    weekday has no hours (a 调休 Saturday) uses the hours of ``makeup_weekday`` (by default
    Monday, or the first weekday with hours).

    Confirmed years: only outside data can be unconfirmed. Without a source every year is
    confirmed (the calendar is entirely the admin's own data); with one, a year is confirmed when
    the source calls it official or when an admin listed it in ``confirmed_years``.

    Instances are immutable values; ``with_overrides`` and ``with_confirmed_years`` return new
    calendars, so caches never need invalidating.
    """

    kind = "working"

    def __init__(
        self,
        tz: str | ZoneInfo = DEFAULT_TZ,
        weekly: Mapping[int | str, Iterable[tuple[time | str, time | str]]] | None = None,
        holidays: Iterable[date | str] = (),
        workdays: Iterable[date | str] = (),
        confirmed_years: Iterable[int] | None = None,
        *,
        source: HolidaySource | None = None,
        makeup_weekday: int | str | None = None,
        name: str = "default",
    ) -> None:
        self.name = name
        self.tz = _zone(tz)
        self._weekly = _parse_weekly(DEFAULT_WEEKLY if weekly is None else weekly)
        if not any(self._weekly):
            raise ValueError("a working calendar needs working hours on at least one weekday")
        if makeup_weekday is None:
            # Monday's hours, or the first weekday that has any (a Sunday-only rota has no Monday).
            makeup_weekday = next(wd for wd, spans in enumerate(self._weekly) if spans)
        self.makeup_weekday = _parse_weekday(makeup_weekday)
        if not self._weekly[self.makeup_weekday]:
            raise ValueError(f"make-up days use {WEEKDAY_NAMES[self.makeup_weekday]}'s hours, which are empty")
        self.holidays = frozenset(_parse_date(d) for d in holidays)
        self.workdays = frozenset(_parse_date(d) for d in workdays)
        clash = self.holidays & self.workdays
        if clash:
            raise ValueError(f"dates both holiday and workday: {sorted(clash)}")
        self.source = source
        self.confirmed_years = frozenset(int(y) for y in confirmed_years or ())
        self._blocks: dict[int, _Block] = {}
        self._totals: dict[int, int] = {}
        self._year_starts: dict[int, int] = {}
        self._confirmed: dict[int, bool] = {}  # the source's verdict per year, asked once
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- description

    @property
    def weekly(self) -> dict[int, list[tuple[str, str]]]:
        """Working hours per weekday (0 = Monday) as ('HH:MM', 'HH:MM') pairs; empty days left out."""
        return {
            wd: [(_format_clock(s), _format_clock(e)) for s, e in spans]
            for wd, spans in enumerate(self._weekly)
            if spans
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description; ``calendar_from_dict`` rebuilds an equal calendar."""
        return {
            "kind": self.kind,
            "name": self.name,
            "tz": self.tz.key,
            "weekly": {WEEKDAY_NAMES[wd]: [list(p) for p in spans] for wd, spans in self.weekly.items()},
            "makeup_weekday": WEEKDAY_NAMES[self.makeup_weekday],
            "source": None if self.source is None else self.source.name,
            "holidays": sorted(d.isoformat() for d in self.holidays),
            "workdays": sorted(d.isoformat() for d in self.workdays),
            "confirmed_years": sorted(self.confirmed_years),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WorkCalendar):
            return NotImplemented
        return self.to_dict() == other.to_dict() and self.source is other.source

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"WorkCalendar(name={self.name!r}, tz={self.tz.key!r}, source={self.to_dict()['source']!r})"

    def _replace(self, **changes: Any) -> WorkCalendar:
        args: dict[str, Any] = {
            "tz": self.tz,
            "weekly": {wd: [(s, e) for s, e in spans] for wd, spans in self.weekly.items()},
            "holidays": self.holidays,
            "workdays": self.workdays,
            "confirmed_years": self.confirmed_years,
            "source": self.source,
            "makeup_weekday": self.makeup_weekday,
            "name": self.name,
        }
        args.update(changes)
        return WorkCalendar(**args)

    def with_overrides(self, overrides: Mapping[date | str, DayKind]) -> WorkCalendar:
        """A copy where each given date is forced to a holiday or a working day (later calls win)."""
        holidays, workdays = set(self.holidays), set(self.workdays)
        for key, kind in overrides.items():
            day = _parse_date(key)
            holidays.discard(day)
            workdays.discard(day)
            if kind == "holiday":
                holidays.add(day)
            elif kind == "workday":
                workdays.add(day)
            else:
                raise ValueError(f"override for {day} must be 'holiday' or 'workday', not {kind!r}")
        return self._replace(holidays=holidays, workdays=workdays)

    def with_confirmed_years(self, years: Iterable[int]) -> WorkCalendar:
        """A copy where the given years are also confirmed (an admin checked the official schedule)."""
        return self._replace(confirmed_years=self.confirmed_years | frozenset(years))

    # ----------------------------------------------------------------- days and years

    def is_confirmed(self, year: int) -> bool:
        """Whether the day data of a local year is official (or confirmed by an admin)."""
        if self.source is None or year in self.confirmed_years:
            return True
        confirmed = self._confirmed.get(year)
        if confirmed is None:
            confirmed = self._confirmed[year] = self.source.year(year).official
        return confirmed

    def provisional_years(self, years: Iterable[int]) -> list[int]:
        """The given years whose day data is not confirmed, sorted (e.g. for the health check)."""
        return sorted({y for y in years if not self.is_confirmed(y)})

    def is_provisional(self, start: datetime, end: datetime | None = None) -> bool:
        """Whether the span from start to end (local years, inclusive) touches an unconfirmed year."""
        to_us(start)  # reject naive datetimes rather than reading them in the host's zone
        if end is not None:
            to_us(end)
        first = start.astimezone(self.tz).year
        last = first if end is None else end.astimezone(self.tz).year
        if last < first:
            first, last = last, first
        return any(not self.is_confirmed(y) for y in range(first, last + 1))

    def day_kind(self, day: date) -> DayKind | None:
        """'holiday' or 'workday' when a rule overrides the weekly template on this local date, else None."""
        if day in self.holidays:
            return "holiday"
        if day in self.workdays:
            return "workday"
        if self.source is not None:
            data = self.source.year(day.year)
            if day in data.holidays:
                return "holiday"
            if day in data.workdays:
                return "workday"
        return None

    def is_workday(self, day: date) -> bool:
        """Whether a local date has working hours."""
        return bool(self._day_spans(day, self.day_kind(day)))

    def _day_spans(self, day: date, kind: DayKind | None) -> tuple[tuple[int, int], ...]:
        if kind == "holiday":
            return ()
        spans = self._weekly[day.weekday()]
        if kind == "workday" and not spans:
            return self._weekly[self.makeup_weekday]
        return spans

    def day_hours(self, day: date) -> list[tuple[datetime, datetime]]:
        """The working intervals of a local date as (start, end) aware UTC datetimes."""
        return [(from_us(s), from_us(e)) for s, e in self._day_intervals(day, self.day_kind(day))]

    def _day_intervals(self, day: date, kind: DayKind | None) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for s, e in self._day_spans(day, kind):
            us_s, us_e = self._local_us(day, s), self._local_us(day, e)
            if us_e > us_s:  # a span wholly inside a DST gap collapses; nothing to work
                out.append((us_s, us_e))
        return out

    def _local_us(self, day: date, seconds: int) -> int:
        if seconds == _DAY_SECONDS:
            day, seconds = day + timedelta(days=1), 0
        h, rest = divmod(seconds, 3600)
        m, s = divmod(rest, 60)
        return to_us(datetime(day.year, day.month, day.day, h, m, s, tzinfo=self.tz))

    # ----------------------------------------------------------------- year blocks

    def _year_start(self, year: int) -> int:
        us = self._year_starts.get(year)
        if us is None:
            us = self._local_us(date(year, 1, 1), 0)
            self._year_starts[year] = us
        return us

    def _year_of(self, us: int, hint: int) -> int:
        """The local year containing an instant; ``hint`` (its UTC year) is off by at most one."""
        if not MIN_YEAR <= hint <= MAX_YEAR:
            raise ValueError(f"year {hint} is outside the calendar's range {MIN_YEAR}–{MAX_YEAR}")
        year = hint
        if us < self._year_start(year):
            year -= 1
        elif us >= self._year_start(year + 1):
            year += 1
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise ValueError(f"year {year} is outside the calendar's range {MIN_YEAR}–{MAX_YEAR}")
        return year

    def _block(self, year: int) -> _Block:
        block = self._blocks.get(year)
        if block is not None:
            return block
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise OverflowError(f"working time runs past the calendar's range {MIN_YEAR}–{MAX_YEAR}")
        block = self._build_block(year)
        with self._lock:
            # FIFO eviction keeps memory bounded; a rebuilt year costs about a millisecond.
            while len(self._blocks) >= _CACHE_YEARS:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[year] = block
            self._totals[year] = block.total
        return block

    def _build_block(self, year: int) -> _Block:
        starts: list[int] = []
        ends: list[int] = []
        cum_end: list[int] = []
        total = 0
        day = date(year, 1, 1)
        one_day = timedelta(days=1)
        while day.year == year:
            for s, e in self._day_intervals(day, self.day_kind(day)):
                if ends and s <= ends[-1]:
                    # Touching intervals (e.g. 00:00–24:00 on consecutive days) merge into one.
                    total += e - ends[-1]
                    ends[-1] = e
                    cum_end[-1] = total
                    continue
                starts.append(s)
                ends.append(e)
                total += e - s
                cum_end.append(total)
            day += one_day
        return _Block(starts, ends, cum_end, total)

    def _total(self, year: int) -> int:
        total = self._totals.get(year)
        return self._block(year).total if total is None else total

    def _locate(self, t: datetime) -> tuple[int, int, int]:
        """(local year, instant in µs, working µs from the start of that year to the instant)."""
        us = to_us(t)
        year = self._year_of(us, t.astimezone(UTC).year)
        block = self._block(year)
        i = bisect_right(block.starts, us) - 1
        if i < 0:
            return year, us, 0
        end = block.ends[i]
        return year, us, block.cum_end[i] - (end - us if us < end else 0)

    # ----------------------------------------------------------------- arithmetic

    def is_working(self, t: datetime) -> bool:
        """Whether t lies inside working hours (intervals are half-open: 12:00 itself is not working)."""
        us = to_us(t)
        block = self._block(self._year_of(us, t.astimezone(UTC).year))
        i = bisect_right(block.starts, us) - 1
        return i >= 0 and us < block.ends[i]

    def next_working(self, t: datetime) -> datetime:
        """The first working moment at or after t (t itself when it is working), in UTC."""
        us = to_us(t)
        year = self._year_of(us, t.astimezone(UTC).year)
        block = self._block(year)
        i = bisect_right(block.starts, us) - 1
        if i >= 0 and us < block.ends[i]:
            return from_us(us)
        if i + 1 < len(block.starts):
            return from_us(block.starts[i + 1])
        while True:
            year += 1
            block = self._block(year)
            if block.starts:
                return from_us(block.starts[0])

    def add(self, start: datetime, working_minutes: Minutes) -> datetime:
        """The instant when the given working time has elapsed from start, in UTC.

        ``working_minutes`` is an int, float or Fraction of minutes (rounded to the microsecond)
        or a timedelta; it must not be negative. For a positive amount the result is the earliest
        instant at which that much working time has passed, so it can be the end of a working
        interval (Friday 17:30, not Monday 09:00). ``add(t, 0)`` is ``next_working(t)``.
        """
        need = minutes_to_us(working_minutes)
        if need == 0:
            return self.next_working(start)
        year, _, offset = self._locate(start)
        target = offset + need
        total = self._total(year)
        while target > total:
            target -= total
            year += 1
            total = self._total(year)
        block = self._block(year)
        i = bisect_left(block.cum_end, target)
        return from_us(block.ends[i] - (block.cum_end[i] - target))

    def working_us(self, a: datetime, b: datetime) -> int:
        """Working microseconds in [a, b); negative when b is before a."""
        year_a, us_a, off_a = self._locate(a)
        year_b, us_b, off_b = self._locate(b)
        if us_b < us_a:
            return -self.working_us(b, a)
        if year_a == year_b:
            return off_b - off_a
        span = self._total(year_a) - off_a + off_b
        for year in range(year_a + 1, year_b):
            span += self._total(year)
        return span

    def working_time(self, a: datetime, b: datetime) -> timedelta:
        """Working time in [a, b) as an exact timedelta; negative when b is before a."""
        return timedelta(microseconds=self.working_us(a, b))

    def between(self, a: datetime, b: datetime) -> float:
        """Working minutes in [a, b); negative when b is before a, so between(a, b) == -between(b, a).

        A float: exact for every whole number of minutes (true division of exact integers is
        correctly rounded), so ``between(t, add(t, n)) == n`` holds for integer n. Use
        ``working_time`` when sub-minute sums must stay exact.
        """
        return self.working_us(a, b) / _US_PER_MINUTE


class NaturalCalendar:
    """Natural time (24×7) with the calendar interface: every moment works, nothing is provisional."""

    kind = "natural"

    def __init__(self, tz: str | ZoneInfo = DEFAULT_TZ, *, name: str = "natural") -> None:
        self.name = name
        self.tz = _zone(tz)  # only for showing instants; arithmetic is zone-free

    def add(self, start: datetime, working_minutes: Minutes) -> datetime:
        """start plus the given minutes, in UTC (``add(t, 0)`` is t)."""
        return from_us(to_us(start) + minutes_to_us(working_minutes))

    def working_us(self, a: datetime, b: datetime) -> int:
        """Elapsed microseconds from a to b; negative when b is before a."""
        return to_us(b) - to_us(a)

    def working_time(self, a: datetime, b: datetime) -> timedelta:
        """Elapsed time from a to b; negative when b is before a."""
        return timedelta(microseconds=self.working_us(a, b))

    def between(self, a: datetime, b: datetime) -> float:
        """Elapsed minutes from a to b; negative when b is before a."""
        return self.working_us(a, b) / _US_PER_MINUTE

    def is_working(self, t: datetime) -> bool:
        """Always true."""
        to_us(t)  # still reject naive datetimes
        return True

    def next_working(self, t: datetime) -> datetime:
        """t itself, in UTC."""
        return from_us(to_us(t))

    def is_confirmed(self, year: int) -> bool:
        """Always true: natural time needs no holiday data."""
        return True

    def is_provisional(self, start: datetime, end: datetime | None = None) -> bool:
        """Always false."""
        return False

    def provisional_years(self, years: Iterable[int]) -> list[int]:
        """Always empty."""
        return []

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {"kind": self.kind, "name": self.name, "tz": self.tz.key}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NaturalCalendar):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"NaturalCalendar(name={self.name!r}, tz={self.tz.key!r})"


__all__: Sequence[str] = (
    "DEFAULT_TZ",
    "DEFAULT_WEEKLY",
    "Calendar",
    "HolidaySource",
    "NaturalCalendar",
    "WorkCalendar",
    "YearDays",
    "from_us",
    "minutes_to_us",
    "to_us",
)
