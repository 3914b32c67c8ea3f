"""Listing events: the filters of GET /api/v1/events, always inside the caller's scope."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..auth.models import User
from ..sla.models import Clock
from ..territory.models import Unit, subtree_unit_ids
from .models import Category, Event
from .scope import visible_events


@dataclass
class EventFilter:
    states: list[str] | None = None
    levels: list[str] | None = None
    owner_code: str | None = None
    category_code: str | None = None
    sources: list[str] | None = None
    received_from: datetime | None = None
    received_to: datetime | None = None
    needs_triage: bool | None = None
    number: str | None = None
    handler_id: int | None = None
    # SLA filters on the live resolve clock (处置时限); `now` is the instant "overdue" is judged at.
    overdue: bool | None = None
    due_before: datetime | None = None
    now: datetime | None = None


def resolve_overdue(now: datetime) -> sa.Exists:
    """EXISTS: the event's live resolve clock is past due at `now`.

    Past due: running with due_at <= now, or marked breached by the sweeper, or paused after
    using up its limit — and not stopped (met/breached/cancelled clocks are not live). One
    correlated probe per event on sla_clocks' event_id index (at most one live clock per metric).
    """
    return sa.exists().where(
        Clock.event_id == Event.id, Clock.metric == "resolve", Clock.state.in_(("running", "paused")),
        sa.or_(
            sa.and_(Clock.state == "running", Clock.due_at <= now),
            Clock.breached_at.is_not(None),
            Clock.used_minutes >= Clock.limit_minutes,
        ),
    )


def resolve_due_before(instant: datetime) -> sa.Exists:
    """EXISTS: the event's running resolve clock is due before `instant` (a paused clock has no due time)."""
    return sa.exists().where(
        Clock.event_id == Event.id, Clock.metric == "resolve", Clock.state == "running", Clock.due_at < instant,
    )


def parse_number(number: str, zone: ZoneInfo) -> tuple[int, datetime, datetime] | None:
    """(id, start, end of the local creation day) from an event number, or None if malformed."""
    if len(number) <= 8 or not number.isdigit():
        return None
    try:
        day = datetime.strptime(number[:8], "%Y%m%d").replace(tzinfo=zone)
    except ValueError:
        return None
    return int(number[8:]), day.astimezone(UTC), (day + timedelta(days=1)).astimezone(UTC)


def event_number(event: Event, zone) -> str:
    """A human-readable number: local creation date (YYYYMMDD) then the id, zero-padded to 6."""
    return f"{event.created_at.astimezone(zone):%Y%m%d}{event.id:06d}"


def filtered_events(session: Session, user: User, f: EventFilter, zone: ZoneInfo) -> sa.Select:
    """SELECT of the events `user` may read that match `f` (unordered)."""
    query = sa.select(Event).where(visible_events(user))
    if f.states:
        query = query.where(Event.state.in_(f.states))
    if f.levels:
        query = query.where(Event.level.in_(f.levels))
    if f.sources:
        query = query.where(Event.source.in_(f.sources))
    if f.owner_code is not None:
        # An unknown code matches nothing, like any other filter value.
        owner_path = session.scalar(sa.select(Unit.path).where(Unit.code == f.owner_code))
        if owner_path is None:
            return query.where(sa.false())
        query = query.where(Event.owner_id.in_(subtree_unit_ids(owner_path)))
    if f.category_code is not None:
        category = session.scalar(sa.select(Category).where(Category.code == f.category_code))
        if category is None:
            return query.where(sa.false())
        if category.level == "major":
            query = query.where(Event.category_id.in_(sa.select(Category.id).where(Category.parent_id == category.id)))
        else:
            query = query.where(Event.category_id == category.id)
    if f.received_from is not None:
        query = query.where(Event.received_at >= f.received_from)
    if f.received_to is not None:
        query = query.where(Event.received_at < f.received_to)
    if f.needs_triage is not None:
        query = query.where(Event.needs_triage.is_(f.needs_triage))
    if f.handler_id is not None:
        query = query.where(Event.handler_id == f.handler_id)
    if f.overdue is not None:
        if f.now is None:
            raise ValueError("the overdue filter needs the instant to judge at (EventFilter.now)")
        query = query.where(resolve_overdue(f.now) if f.overdue else ~resolve_overdue(f.now))
    if f.due_before is not None:
        query = query.where(resolve_due_before(f.due_before))
    if f.number is not None:
        parsed = parse_number(f.number, zone)
        if parsed is None:
            return query.where(sa.false())
        event_id, day_start, day_end = parsed
        query = query.where(Event.id == event_id, Event.created_at >= day_start, Event.created_at < day_end)
    return query


def page_of_events(session: Session, user: User, f: EventFilter, zone: ZoneInfo, *, limit: int, offset: int) -> tuple[list[Event], int]:
    """One page, newest first, and the total count matching the filters."""
    query = filtered_events(session, user, f, zone)
    total = session.scalar(sa.select(sa.func.count()).select_from(query.with_only_columns(Event.id).subquery()))
    rows = session.scalars(query.order_by(Event.received_at.desc(), Event.id.desc()).limit(limit).offset(offset))
    return list(rows.unique()), int(total or 0)
