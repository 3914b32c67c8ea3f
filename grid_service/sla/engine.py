"""The SLA engine: which policy and calendar apply, and what each workflow step does to the clocks.

Clock arithmetic lives here; the events service calls `on_report` / `on_action` in the same
transaction as the change, and the sweeper (escalation/) calls the same recompute helpers.
Functions take the session and `now`, flush at most, and never commit.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..events.actions import SPECS, ClockStep
from ..events.models import Category, Event
from ..infra.cache import VersionedCache, bump_version
from ..infra.errors import Invalid, InvalidTransition
from ..infra.prepared import PreparedInsert
from .deadlines import AnyCalendar, PolicyInfo, new_clock, warn_minutes
from .defaults import ensure_default_policies
from .holidays import calendar_from_dict
from .models import CLOCK_STATE_LABELS, LIVE_STATES, CalendarDay, CalendarRow, CalendarYear, Clock, Escalation, Policy

logger = logging.getLogger(__name__)

POLICY_VERSION_KEY = "policy_version"
CALENDAR_VERSION_KEY = "calendar_version"
INSERT_CLOCKS = PreparedInsert(Clock.__table__)  # new clocks go in on the session's connection


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

    def __init__(self, refresh_seconds: float, *, extension_max_ratio: float = 1.0) -> None:
        # One extension (延期) may add at most this share of the clock's own limit (EXTENSION_MAX_RATIO).
        self.extension_max_ratio = extension_max_ratio
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

    def calendars(self, session: Session) -> dict[int, AnyCalendar]:
        """Every calendar by id (the cached set: treat it as read-only)."""
        return self._calendars.get(session)

    def invalidate(self) -> None:
        self._policies.invalidate()
        self._calendars.invalidate()

    # -- clock arithmetic ------------------------------------------------------------------

    def new_clock(self, session: Session | None, event_id: int, policy: PolicyInfo, metric: str, *, start: datetime,
                  seq: int = 1, level: str | None = None, owner_id: int | None = None) -> dict[str, Any] | None:
        """Column values of a new running clock, or None when the policy sets no limit for it."""
        return new_clock(policy, self.calendar(session, policy.calendar_id), metric, start=start, event_id=event_id,
                         seq=seq, level=level, owner_id=owner_id)

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
            raise InvalidTransition("只有计时中或已暂停的时限可以延期", errors={"clock": [CLOCK_STATE_LABELS[clock.state]]})
        if clock.breached_at is not None or (clock.state == "running" and now >= clock.due_at):
            raise InvalidTransition("时限已到期，延期须在到期前申请", errors={"clock": ["已超期"]})
        cap = int((clock.limit_minutes - clock.extended_minutes) * self.extension_max_ratio)
        if minutes > cap:
            raise Invalid(f"一次延期最多 {cap} 分钟（该时限本身的 {self.extension_max_ratio:g} 倍）",
                          {"minutes": [f"不能超过 {cap}"]})
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
        clock.warn_minutes = warn_minutes(clock.limit_minutes, policy.warn_ratio)
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

    def on_action(self, session: Session, event: Event, action: str, now: datetime, *, from_level: str,
                  from_owner_id: int, extend_minutes: int | None = None, extend_metric: str | None = None) -> None:
        """What one workflow action does to the event's clocks (called after the event changed)."""
        steps = SPECS[action].clocks
        if steps:
            self.run_clock_steps(
                session, _EventClocks(session, event, from_level, from_owner_id), steps, now, event_id=event.id,
                level=event.level, owner_id=event.owner_id,
                policy=lambda: self.policy_for(session, event.category, event.priority, now),
                extend_minutes=extend_minutes, extend_metric=extend_metric)
            session.flush()

    def run_clock_steps(self, session: Session | None, clocks: ClockSet, steps: Sequence[ClockStep], now: datetime, *,
                        event_id: int, level: str, owner_id: int, policy: Callable[[], PolicyInfo],
                        extend_minutes: int | None = None, extend_metric: str | None = None) -> None:
        """Carry out an action's clock steps (events.actions) on one event's clocks, in order.

        `clocks` is the event's clocks in the database, or the demo's replay of them: the same rules
        either way. `level` and `owner_id` are the event's after the action (a new level clock's).
        """
        live = clocks.live()
        for step in steps:
            if step.op in ("stop", "cancel"):
                for metric in step.metrics:
                    if metric in live:
                        self.stop(session, live.pop(metric), now, cancel=step.op == "cancel")
            elif step.op == "pause":
                for metric in step.metrics:
                    if metric in live:
                        self.pause(session, live[metric], now)
            elif step.op == "resume":
                for metric in step.metrics:
                    if metric in live:
                        self.resume(session, live[metric], now)
            elif step.op == "reopen":  # a failed verification: the stopped clocks run on from their stop
                for metric in step.metrics:
                    last = clocks.last(metric)
                    if last is not None and metric not in live:
                        self.reopen(session, last)
                        if last.state in LIVE_STATES:
                            live[metric] = last
            elif step.op == "start":
                current = policy()
                for metric in step.metrics:  # never two live clocks of a metric: the step before stopped it
                    last = clocks.last(metric)
                    row = self.new_clock(session, event_id, current, metric, start=now,
                                         seq=(last.seq + 1) if last else 1, level=level if metric == "level" else None,
                                         owner_id=owner_id if metric == "level" else None)
                    if row is not None:
                        live[metric] = clocks.add(row)
            elif step.op == "record_escalation":
                clocks.record_escalation(live.get("level"), now)
            elif step.op == "reapply":
                current = policy()
                for clock in live.values():
                    self.apply_policy(session, clock, current)
            elif step.op == "extend":
                clock = live.get(extend_metric or "resolve")
                if clock is None:
                    raise Invalid("该事件没有此类正在计时的时限", {"metric": ["没有计时中或已暂停的时限"]})
                self.extend(session, clock, int(extend_minutes or 0), now)


class ClockSet(Protocol):
    """One event's clocks as `run_clock_steps` sees them."""

    def live(self) -> dict[str, Any]:
        """The running or paused clock of each metric (the steps keep this dict up to date)."""

    def last(self, metric: str) -> Any | None:
        """The latest clock of `metric`, live or not."""

    def add(self, row: dict[str, Any]) -> Any:
        """Start a new clock from its column values; returns it."""

    def record_escalation(self, level_clock: Any | None, now: datetime) -> None:
        """Write the row of a manual escalation (上报) of the event, whose level clock this was."""


class _EventClocks:
    """An event's clocks in the database."""

    def __init__(self, session: Session, event: Event, from_level: str, from_owner_id: int) -> None:
        self.session, self.event = session, event
        self.from_level, self.from_owner_id = from_level, from_owner_id

    def live(self) -> dict[str, Clock]:
        clocks = self.session.scalars(sa.select(Clock).where(Clock.event_id == self.event.id,
                                                             Clock.state.in_(LIVE_STATES)))
        return {clock.metric: clock for clock in clocks}

    def last(self, metric: str) -> Clock | None:
        return self.session.scalar(sa.select(Clock).where(Clock.event_id == self.event.id, Clock.metric == metric)
                                   .order_by(Clock.seq.desc()).limit(1))

    def add(self, row: dict[str, Any]) -> Clock:
        clock = Clock(**row)
        self.session.add(clock)
        return clock

    def record_escalation(self, level_clock: Clock | None, now: datetime) -> None:
        event = self.event
        self.session.add(Escalation(
            event_id=event.id, clock_id=None, reason="manual", from_level=self.from_level, to_level=event.level,
            from_owner_id=self.from_owner_id, to_owner_id=event.owner_id,
            due_at=level_clock.due_at if level_clock is not None else None, escalated_at=now, late_minutes=0.0))
