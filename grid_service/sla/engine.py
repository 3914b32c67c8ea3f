"""The SLA engine: which policy and calendar apply, and what each workflow step does to the clocks.

Clock arithmetic lives here; the events service calls `on_report` / `on_action` in the same
transaction as the change, and the sweeper (escalation/) calls the same recompute helpers.
Functions take the session and `now`, flush at most, and never commit.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..cache import VersionedCache, bump_version
from ..errors import Invalid, InvalidTransition
from ..prepared import PreparedInsert
from ..events.models import Category, Event
from .calendar import NaturalCalendar, WorkCalendar, calendar_from_dict
from .defaults import ensure_default_policies
from .models import LIVE_STATES, CalendarDay, CalendarRow, CalendarYear, Clock, Escalation, Notification, Policy

logger = logging.getLogger(__name__)

POLICY_VERSION_KEY = "policy_version"
CALENDAR_VERSION_KEY = "calendar_version"
INSERT_CLOCKS = PreparedInsert(Clock.__table__)  # new clocks go in on the session's connection
AnyCalendar = WorkCalendar | NaturalCalendar


@dataclass(frozen=True)
class PolicyInfo:
    """The figures of one policy version, detached from any session."""

    id: int
    scope: str
    version: int
    accept_minutes: int
    level_minutes: dict[str, int]
    resolve_minutes: int
    warn_ratio: float
    calendar_id: int

    def limit(self, metric: str, level: str | None) -> int | None:
        if metric == "accept":
            return self.accept_minutes
        if metric == "resolve":
            return self.resolve_minutes
        value = self.level_minutes.get(level or "")
        return int(value) if value else None


def scope_key(category_code: str | None, priority: str | None) -> str:
    return f"{category_code or '*'}|{priority or '*'}"


def candidate_scopes(category: Category, priority: str) -> list[str]:
    """Most specific first: the 小类, its 大类, then everything; each with the priority, then any."""
    codes = [category.code] + ([category.parent.code] if category.parent is not None else []) + [None]
    return [scope_key(code, p) for code in codes for p in (priority, None)]


def _load_policies(session: Session) -> dict[str, PolicyInfo]:
    rows = session.scalars(sa.select(Policy).where(Policy.is_current.is_(True))).all()
    return {
        row.scope: PolicyInfo(row.id, row.scope, row.version, row.accept_minutes, dict(row.level_minutes),
                              row.resolve_minutes, row.warn_ratio, row.calendar_id)
        for row in rows
    }


def build_calendar(row: CalendarRow, days: list[CalendarDay], years: list[int]) -> AnyCalendar:
    """A calendar object from its row, the admin's day overrides and the confirmed years."""
    return calendar_from_dict({
        "kind": row.kind, "name": row.name, "tz": row.timezone, "weekly": row.weekly, "source": row.source,
        "holidays": [d.day for d in days if d.kind == "holiday"],
        "workdays": [d.day for d in days if d.kind == "workday"],
        "confirmed_years": years,
    })


def _load_calendars(session: Session) -> dict[int, AnyCalendar]:
    days: dict[int, list[CalendarDay]] = {}
    for day in session.scalars(sa.select(CalendarDay)):
        days.setdefault(day.calendar_id, []).append(day)
    years: dict[int, list[int]] = {}
    for calendar_id, year in session.execute(sa.select(CalendarYear.calendar_id, CalendarYear.year)):
        years.setdefault(calendar_id, []).append(year)
    return {row.id: build_calendar(row, days.get(row.id, []), years.get(row.id, []))
            for row in session.scalars(sa.select(CalendarRow))}


class SlaEngine:
    """Per-process caches of policies and calendars, plus the clock operations that use them."""

    def __init__(self, refresh_seconds: float) -> None:
        self._policies = VersionedCache(POLICY_VERSION_KEY, _load_policies, refresh_seconds, 60.0)
        self._calendars = VersionedCache(CALENDAR_VERSION_KEY, _load_calendars, refresh_seconds, 300.0)

    # -- lookups ---------------------------------------------------------------------------

    def policy_for(self, session: Session, category: Category, priority: str, now: datetime) -> PolicyInfo:
        policies = self._policies.get(session)
        for scope in candidate_scopes(category, priority):
            if scope in policies:
                return policies[scope]
        # A fresh installation without any policy: create the defaults once, then use them.
        ensure_default_policies(session, now)
        bump_version(session, POLICY_VERSION_KEY, now)
        self._policies.invalidate()
        return self.policy_for(session, category, priority, now)

    def calendar(self, session: Session, calendar_id: int) -> AnyCalendar:
        calendars = self._calendars.get(session)
        if calendar_id not in calendars:
            self._calendars.invalidate()
            calendars = self._calendars.get(session)
        return calendars[calendar_id]

    def invalidate(self) -> None:
        self._policies.invalidate()
        self._calendars.invalidate()

    # -- clock arithmetic ------------------------------------------------------------------

    def new_clock(self, session: Session, event_id: int, policy: PolicyInfo, metric: str, *, start: datetime,
                  seq: int = 1, level: str | None = None, owner_id: int | None = None) -> dict[str, Any] | None:
        """Column values of a new running clock, or None when the policy sets no limit for it."""
        limit = policy.limit(metric, level)
        if limit is None:
            return None
        calendar = self.calendar(session, policy.calendar_id)
        warn_minutes = max(1, min(limit - 1, math.floor(limit * policy.warn_ratio))) if limit > 1 else limit
        due_at = calendar.add(start, limit)
        warn_at = calendar.add(start, warn_minutes)
        return {
            "event_id": event_id, "metric": metric, "seq": seq, "level": level, "owner_id": owner_id,
            "policy_id": policy.id, "calendar_id": policy.calendar_id, "limit_minutes": limit, "extended_minutes": 0,
            "warn_minutes": warn_minutes, "state": "running", "started_at": start, "used_minutes": 0.0,
            "segment_started_at": start, "due_at": due_at, "warn_at": warn_at,
            "next_check_at": warn_at if warn_at < due_at else due_at, "warned_at": None, "breached_at": None,
            "stopped_at": None, "provisional": calendar.is_provisional(start, due_at),
        }

    def recompute(self, session: Session, clock: Clock) -> None:
        """Due and warning instants of a running clock from its segment start and the time used."""
        calendar = self.calendar(session, clock.calendar_id)
        start = clock.segment_started_at
        if start is None:
            return
        clock.due_at = calendar.add(start, max(0.0, clock.limit_minutes - clock.used_minutes))
        clock.warn_at = calendar.add(start, max(0.0, clock.warn_minutes - clock.used_minutes))
        clock.provisional = calendar.is_provisional(clock.started_at, clock.due_at)
        clock.next_check_at = self._next_check(clock)

    @staticmethod
    def _next_check(clock: Clock) -> datetime | None:
        if clock.state != "running" or (clock.breached_at is not None and clock.metric != "level"):
            return None
        if clock.warned_at is None and clock.warn_at < clock.due_at:
            return clock.warn_at
        return clock.due_at

    def used_now(self, session: Session, clock: Clock, now: datetime) -> float:
        """Working minutes used so far, counting the running segment up to `now`."""
        if clock.state == "running" and clock.segment_started_at is not None and now > clock.segment_started_at:
            return clock.used_minutes + self.calendar(session, clock.calendar_id).between(clock.segment_started_at, now)
        return clock.used_minutes

    def _close_segment(self, session: Session, clock: Clock, now: datetime) -> None:
        clock.used_minutes = self.used_now(session, clock, now)
        clock.segment_started_at = None
        clock.next_check_at = None

    def pause(self, session: Session, clock: Clock, now: datetime) -> None:
        if clock.state == "running":
            self._close_segment(session, clock, now)
            clock.state = "paused"

    def resume(self, session: Session, clock: Clock, now: datetime) -> None:
        if clock.state == "paused":
            clock.state, clock.segment_started_at = "running", now
            self.recompute(session, clock)

    def stop(self, session: Session, clock: Clock, now: datetime, *, cancel: bool = False) -> None:
        """End a live clock: met if within its limit, breached if not, or cancelled."""
        if clock.state not in LIVE_STATES:
            return
        self._close_segment(session, clock, now)
        clock.stopped_at = now
        if cancel:
            clock.state = "cancelled"
        elif clock.breached_at is not None or now > clock.due_at:
            clock.state = "breached"
            clock.breached_at = clock.breached_at or now
        else:
            clock.state = "met"

    def reopen(self, session: Session, clock: Clock) -> None:
        """Undo a stop as if it never happened (a failed verification does not reset the clock)."""
        if clock.state not in ("met", "breached") or clock.stopped_at is None:
            return
        # The segment restarts at the stop: the time since the false resolution counts.
        clock.state, clock.segment_started_at, clock.stopped_at = "running", clock.stopped_at, None
        self.recompute(session, clock)

    def extend(self, session: Session, clock: Clock, minutes: int, now: datetime) -> None:
        """An approved extension (延期): more minutes on one live clock, before it is breached."""
        if clock.state not in LIVE_STATES:
            raise InvalidTransition("只有计时中或已暂停的时限可以延期", errors={"clock": [clock.state]})
        if clock.breached_at is not None or (clock.state == "running" and now >= clock.due_at):
            raise InvalidTransition("时限已到期，延期须在到期前申请", errors={"clock": ["已超期"]})
        clock.limit_minutes += minutes
        clock.extended_minutes += minutes
        self.recompute(session, clock)

    def apply_policy(self, session: Session, clock: Clock, policy: PolicyInfo) -> None:
        """New limits from `policy` on a live clock, measured from its original start."""
        limit = policy.limit(clock.metric, clock.level)
        if limit is None or clock.state not in LIVE_STATES:
            return
        clock.policy_id, clock.calendar_id = policy.id, policy.calendar_id
        clock.limit_minutes = limit + clock.extended_minutes
        clock.warn_minutes = max(1, min(clock.limit_minutes - 1, math.floor(clock.limit_minutes * policy.warn_ratio)))
        self.recompute(session, clock)

    # -- workflow hooks --------------------------------------------------------------------

    def on_report(self, session: Session, event: Event, now: datetime) -> None:
        """Start the accept, level and resolve clocks of a new event, from when it was received."""
        rows = self.report_clocks(session, event.category, event.priority, now, received_at=event.received_at,
                                  level=event.level, owner_id=event.owner_id)
        self.insert_clocks(session, event.id, rows)

    def report_clocks(self, session: Session, category: Category, priority: str, now: datetime, *,
                      received_at: datetime, level: str, owner_id: int) -> list[dict[str, Any]]:
        """The accept, level and resolve clocks a new event starts with (event_id still to fill in).

        Intake computes them before its first write, so that it holds the write lock (SQLite) only
        for the inserts themselves.
        """
        policy = self.policy_for(session, category, priority, now)
        rows = [
            self.new_clock(session, 0, policy, "accept", start=received_at),
            self.new_clock(session, 0, policy, "level", start=received_at, level=level, owner_id=owner_id),
            self.new_clock(session, 0, policy, "resolve", start=received_at),
        ]
        return [row for row in rows if row is not None]

    @staticmethod
    def insert_clocks(session: Session, event_id: int, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            row["event_id"] = event_id
        if rows:
            INSERT_CLOCKS.execute(session.connection(), rows)

    def live_clocks(self, session: Session, event: Event) -> dict[str, Clock]:
        clocks = session.scalars(sa.select(Clock).where(Clock.event_id == event.id, Clock.state.in_(LIVE_STATES)))
        return {clock.metric: clock for clock in clocks}

    def last_clock(self, session: Session, event: Event, metric: str) -> Clock | None:
        return session.scalar(sa.select(Clock).where(Clock.event_id == event.id, Clock.metric == metric)
                              .order_by(Clock.seq.desc()).limit(1))

    def start_level(self, session: Session, event: Event, now: datetime) -> None:
        """A new level clock for the event's current level and owner, starting now."""
        last = self.last_clock(session, event, "level")
        policy = self.policy_for(session, event.category, event.priority, now)
        row = self.new_clock(session, event.id, policy, "level", start=now, seq=(last.seq + 1) if last else 1,
                             level=event.level, owner_id=event.owner_id)
        if row is not None:
            session.add(Clock(**row))

    def on_action(self, session: Session, event: Event, action: str, now: datetime, *, from_state: str,
                  from_level: str, from_owner_id: int, actor_id: int | None, history_note: str = "",
                  extend_minutes: int | None = None, extend_metric: str | None = None) -> None:
        """What one workflow action does to the event's clocks (called after the event changed)."""
        live = self.live_clocks(session, event)
        if action == "register" and "accept" in live:
            self.stop(session, live["accept"], now)
        elif action in ("reject", "merge", "cancel"):
            for clock in live.values():
                self.stop(session, clock, now, cancel=True)
        elif action == "resolve":
            for metric in ("resolve", "level", "accept"):
                if metric in live:
                    self.stop(session, live[metric], now)
        elif action == "rework":
            for metric in ("resolve", "level"):
                last = self.last_clock(session, event, metric)
                if last is not None and metric not in live:
                    self.reopen(session, last)
        elif action == "suspend":
            for clock in live.values():
                self.pause(session, clock, now)
        elif action == "resume":
            for clock in live.values():
                self.resume(session, clock, now)
        elif action == "reopen":
            for metric in ("resolve", "level"):
                if metric in live:  # a closed event has none; never leave two running
                    self.stop(session, live[metric], now)
            policy = self.policy_for(session, event.category, event.priority, now)
            last = self.last_clock(session, event, "resolve")
            row = self.new_clock(session, event.id, policy, "resolve", start=now, seq=(last.seq + 1) if last else 1)
            if row is not None:
                session.add(Clock(**row))
            self.start_level(session, event, now)
        elif action == "escalate":
            level_clock = live.get("level")
            if level_clock is not None:
                self.stop(session, level_clock, now)
            session.add(Escalation(event_id=event.id, clock_id=None, reason="manual", from_level=from_level,
                                   to_level=event.level, from_owner_id=from_owner_id, to_owner_id=event.owner_id,
                                   due_at=level_clock.due_at if level_clock else None, escalated_at=now, late_minutes=0.0))
            self.start_level(session, event, now)
        elif action == "reclassify":
            policy = self.policy_for(session, event.category, event.priority, now)
            for clock in live.values():
                self.apply_policy(session, clock, policy)
        elif action == "extend":
            clock = live.get(extend_metric or "resolve")
            if clock is None:
                raise Invalid("该事件没有此类正在计时的时限", {"metric": ["没有计时中或已暂停的时限"]})
            self.extend(session, clock, int(extend_minutes or 0), now)
        session.flush()


def notify(session: Session, *, unit_id: int, event_id: int, kind: str, message: str, now: datetime,
           dedupe_key: str, clock_id: int | None = None) -> None:
    """Queue one inbox item, once per `dedupe_key` (a replay of the same cause adds nothing)."""
    exists = session.scalar(sa.select(Notification.id).where(Notification.dedupe_key == dedupe_key))
    if exists is None:
        session.add(Notification(dedupe_key=dedupe_key, unit_id=unit_id, event_id=event_id, clock_id=clock_id,
                                 kind=kind, message=message, created_at=now))
