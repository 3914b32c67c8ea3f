"""Working-calendar benchmark: µs per `add` of 40 working hours, interval bisection vs a day-by-day walk.

Run from the repository root:  .venv/bin/python bench/calendar.py [--quick] [--seed N]
Prints one JSON line per measurement and a last line with the speed ratio and the agreement check.
"""
from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the stdlib `calendar` module, which `holidays` imports: drop this
# directory from the import path before anything else is imported, and put the repo root on it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import time as _time  # noqa: E402
from datetime import UTC, date, datetime, time, timedelta  # noqa: E402

from grid_service.sla.calendar import WorkCalendar  # noqa: E402
from grid_service.sla.holidays import china_calendar  # noqa: E402

MINUTES = 2400  # 40 working hours


def _clock(text: str) -> tuple[int, time]:
    """('HH:MM' → (day offset, local time)); '24:00' is midnight of the next day."""
    h, m = (int(p) for p in text.split(":")[:2])
    return (1, time(0, 0)) if h == 24 else (0, time(h, m))


def naive_add(cal: WorkCalendar, start: datetime, minutes: int) -> datetime:
    """Reference in the style of businesstimedelta: walk local days, converting each day's hours to UTC."""
    weekly = {wd: [(_clock(s), _clock(e)) for s, e in spans] for wd, spans in cal.weekly.items()}
    remaining = timedelta(minutes=minutes)
    start = start.astimezone(UTC)
    day = start.astimezone(cal.tz).date()
    while True:
        if cal.is_workday(day):
            spans = weekly.get(day.weekday()) or weekly[cal.makeup_weekday]
            for (ds, ts), (de, te) in spans:
                begin = datetime.combine(day + timedelta(days=ds), ts, cal.tz).astimezone(UTC)
                end = datetime.combine(day + timedelta(days=de), te, cal.tz).astimezone(UTC)
                if end <= start:
                    continue
                begin = max(begin, start)
                if remaining == timedelta(0):
                    return begin
                if remaining <= end - begin:
                    return begin + remaining
                remaining -= end - begin
        day += timedelta(days=1)


def _emit(**fields: object) -> None:
    print(json.dumps({"bench": "calendar", **fields}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 starts instead of 20,000")
    parser.add_argument("--seed", type=int, default=20261101)
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000
    repeats = 1 if args.quick else 3

    rnd = random.Random(args.seed)
    base = datetime(2025, 1, 1, tzinfo=UTC)
    span_us = int((datetime(2026, 12, 31, tzinfo=UTC) - base) / timedelta(microseconds=1))
    starts = [base + timedelta(microseconds=rnd.randrange(span_us)) for _ in range(n)]

    cold = china_calendar()
    t0 = _time.perf_counter()
    cold.add(datetime(2026, 3, 2, 1, 0, tzinfo=UTC), MINUTES)  # builds the 2026 block
    _emit(impl="bisect", op="first_add_builds_year", ms=round((_time.perf_counter() - t0) * 1e3, 3))

    cal = china_calendar()
    for year in (2025, 2026, 2027):  # warm the year blocks the starts and deadlines fall in
        cal.next_working(datetime(year, 6, 1, tzinfo=UTC))

    def run(fn) -> tuple[float, list[datetime]]:
        best, out = float("inf"), []
        for _ in range(repeats):
            t = _time.perf_counter()
            out = [fn(cal, s, MINUTES) for s in starts]
            best = min(best, _time.perf_counter() - t)
        return best / n * 1e6, out

    fast_us, fast = run(WorkCalendar.add)
    _emit(impl="bisect", op="add", minutes=MINUTES, n=n, repeats=repeats, us_per_op=round(fast_us, 3))
    slow_us, slow = run(naive_add)
    _emit(impl="naive_day_walk", op="add", minutes=MINUTES, n=n, repeats=repeats, us_per_op=round(slow_us, 3))

    between_us = float("inf")
    for _ in range(repeats):
        t = _time.perf_counter()
        for s, d in zip(starts, fast):
            cal.between(s, d)
        between_us = min(between_us, (_time.perf_counter() - t) / n * 1e6)
    _emit(impl="bisect", op="between", n=n, us_per_op=round(between_us, 3))

    mismatches = sum(1 for a, b in zip(fast, slow) if a != b)
    provisional = sum(1 for s, d in zip(starts, fast) if cal.is_provisional(s, d))
    _emit(
        op="summary",
        speedup=round(slow_us / fast_us, 1),
        agree=mismatches == 0,
        mismatches=mismatches,
        checked=n,
        provisional_deadlines=provisional,
        first_start=starts[0].isoformat(),
        first_due=fast[0].isoformat(),
        span=f"{date(2025, 1, 1)}..{date(2026, 12, 31)} random UTC starts, {MINUTES} working minutes",
    )
    if mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
