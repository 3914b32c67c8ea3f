"""Calendars as data: day overrides and confirmed years, and what a change does to running clocks."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..auth.models import User
from ..infra.cache import bump_version
from ..infra.errors import Invalid, NotFound
from .defaults import ensure_calendars
from .engine import CALENDAR_VERSION_KEY, AnyCalendar, SlaEngine
from .models import LIVE_STATES, CalendarDay, CalendarRow, CalendarYear, Clock


def get_calendar_row(session: Session, name: str, now: datetime) -> CalendarRow:
    row = session.scalar(sa.select(CalendarRow).where(CalendarRow.name == name))
    if row is None:
        ensure_calendars(session, now)
        row = session.scalar(sa.select(CalendarRow).where(CalendarRow.name == name))
    if row is None:
        raise NotFound(f"未找到工作日历 {name}")
    return row


def calendar_by_name(session: Session, sla: SlaEngine, name: str, now: datetime) -> tuple[CalendarRow, AnyCalendar]:
    row = get_calendar_row(session, name, now)
    return row, sla.calendar(session, row.id)


def recompute_clocks(session: Session, sla: SlaEngine, calendar_id: int, start: datetime, end: datetime) -> int:
    """Recompute the live clocks on this calendar whose remaining span overlaps [start, end)."""
    sla.invalidate()
    clocks = session.scalars(sa.select(Clock).where(
        Clock.calendar_id == calendar_id, Clock.state.in_(LIVE_STATES),
        sa.or_(Clock.state == "paused", sa.and_(Clock.segment_started_at < end, Clock.due_at >= start)),
    )).all()
    for clock in clocks:
        if clock.state == "running":
            sla.recompute(session, clock)
        else:
            calendar = sla.calendar(session, calendar_id)
            clock.provisional = calendar.is_provisional(clock.started_at, clock.due_at)
    session.flush()
    return len(clocks)


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    # Generous by a day on each side so every time zone's local day is covered.
    return datetime.combine(day - timedelta(days=1), datetime.min.time(), UTC), datetime.combine(day + timedelta(days=2), datetime.min.time(), UTC)


def set_day(session: Session, sla: SlaEngine, name: str, day: date, kind: str, *, note: str,
            actor: User | None, now: datetime) -> int:
    """Make one day a holiday or a working day (or clear the override); returns clocks recomputed."""
    if kind not in ("holiday", "workday", "clear"):
        raise Invalid("kind 应为 holiday、workday 或 clear", {"kind": ["应为 holiday、workday 或 clear"]})
    row = get_calendar_row(session, name, now)
    if row.kind != "working":
        raise Invalid("自然日（24×7）日历没有工作日，不能设置", {"calendar": [name]})
    existing = session.scalar(sa.select(CalendarDay).where(CalendarDay.calendar_id == row.id, CalendarDay.day == day))
    if kind == "clear":
        if existing is not None:
            session.delete(existing)
    elif existing is None:
        session.add(CalendarDay(calendar_id=row.id, day=day, kind=kind, note=note, set_by_id=actor.id if actor else None, set_at=now))
    else:
        existing.kind, existing.note, existing.set_at = kind, note, now
        existing.set_by_id = actor.id if actor else None
    session.flush()
    bump_version(session, CALENDAR_VERSION_KEY, now)
    return recompute_clocks(session, sla, row.id, *_day_bounds(day))


def confirm_year(session: Session, sla: SlaEngine, name: str, year: int, *, actor: User | None, now: datetime) -> int:
    """Mark a year's schedule as official; returns the clocks recomputed."""
    if not 2000 <= year <= 2200:
        raise Invalid("年份超出范围", {"year": ["应在 2000 到 2200 之间"]})
    row = get_calendar_row(session, name, now)
    if session.scalar(sa.select(CalendarYear.id).where(CalendarYear.calendar_id == row.id, CalendarYear.year == year)) is None:
        session.add(CalendarYear(calendar_id=row.id, year=year, confirmed_by_id=actor.id if actor else None, confirmed_at=now))
        session.flush()
    bump_version(session, CALENDAR_VERSION_KEY, now)
    return recompute_clocks(session, sla, row.id, *_day_bounds(date(year, 1, 1))[:1], _day_bounds(date(year, 12, 31))[1])


def calendar_status(session: Session, sla: SlaEngine, name: str, now: datetime) -> dict[str, Any]:
    """The calendar's description, its overrides, and which of the coming years are provisional."""
    row, calendar = calendar_by_name(session, sla, name, now)
    years = list(range(now.year - 1, now.year + 3))
    days = session.scalars(sa.select(CalendarDay).where(CalendarDay.calendar_id == row.id).order_by(CalendarDay.day)).all()
    return {
        "name": row.name, "kind": row.kind, "timezone": row.timezone, "weekly": row.weekly, "source": row.source,
        "provisional_years": calendar.provisional_years(years),
        "confirmed_years": [y for y in years if y not in calendar.provisional_years(years)],
        "overrides": [{"day": d.day.isoformat(), "kind": d.kind, "note": d.note} for d in days],
    }


def unconfirmed_years(session: Session, sla: SlaEngine, now: datetime) -> dict[str, list[int]]:
    """Per working calendar, the years from now to next year whose schedule is not confirmed."""
    out: dict[str, list[int]] = {}
    for row in session.scalars(sa.select(CalendarRow).where(CalendarRow.kind == "working")):
        years = sla.calendar(session, row.id).provisional_years([now.year, now.year + 1])
        if years:
            out[row.name] = years
    return out
