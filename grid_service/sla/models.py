"""SLA data: calendars and their day overrides, versioned policies, clocks, escalations.

Deadlines are rows (DESIGN §5): a clock knows when it is due and when to look at it next, so nothing
is lost when a process dies. Every effect that must happen once has a UNIQUE constraint behind it.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..infra.db import check_in, db
from ..infra.timeutil import UTCDateTime
from ..territory.models import level_check

METRICS: tuple[str, ...] = ("accept", "level", "resolve")
CLOCK_STATES: tuple[str, ...] = ("running", "paused", "met", "breached", "cancelled")
LIVE_STATES: tuple[str, ...] = ("running", "paused")
CLOCK_STATE_LABELS: dict[str, str] = {"running": "计时中", "paused": "已暂停", "met": "已按时完成", "breached": "已超期",
                                      "cancelled": "已取消"}


class CalendarRow(db.Model):
    """A working calendar (工作日历) or a natural 24×7 one."""

    __tablename__ = "sla_calendars"
    __table_args__ = (sa.CheckConstraint("kind IN ('working', 'natural')", name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(32), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(8))
    timezone: Mapped[str] = mapped_column(sa.String(64))
    # {"mon": [["09:00", "12:00"], ["13:30", "17:30"]], …}; null means the default template.
    weekly: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    # Where official holidays come from ("cn": chinese-calendar, then `holidays`' CN rules).
    source: Mapped[str | None] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CalendarDay(db.Model):
    """An admin's override of one day: a holiday, or a (make-up) working day."""

    __tablename__ = "sla_calendar_days"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('holiday', 'workday')", name="kind"),
        sa.UniqueConstraint("calendar_id", "day"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    calendar_id: Mapped[int] = mapped_column(sa.ForeignKey("sla_calendars.id"))
    day: Mapped[date] = mapped_column(sa.Date)
    kind: Mapped[str] = mapped_column(sa.String(8))
    note: Mapped[str] = mapped_column(sa.String(200), default="")
    set_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CalendarYear(db.Model):
    """A year whose schedule an admin confirmed (the State Council notice is out and entered)."""

    __tablename__ = "sla_calendar_years"
    __table_args__ = (sa.UniqueConstraint("calendar_id", "year"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    calendar_id: Mapped[int] = mapped_column(sa.ForeignKey("sla_calendars.id"))
    year: Mapped[int] = mapped_column()
    confirmed_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    confirmed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Policy(db.Model):
    """Time limits for a category × priority (either may be '*'); every edit is a new version."""

    __tablename__ = "sla_policies"
    __table_args__ = (
        sa.CheckConstraint("accept_minutes > 0 AND resolve_minutes > 0", name="limits"),
        sa.CheckConstraint("warn_ratio > 0 AND warn_ratio < 1", name="warn_ratio"),
        sa.CheckConstraint("priority IS NULL OR priority IN ('urgent', 'normal')", name="priority"),
        sa.UniqueConstraint("scope", "version"),
        sa.Index("uq_sla_policies_current_scope", "scope", unique=True,
                 postgresql_where=sa.text("is_current"), sqlite_where=sa.text("is_current")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # "<category code or *>|<priority or *>": one current version per scope.
    scope: Mapped[str] = mapped_column(sa.String(40))
    category_id: Mapped[int | None] = mapped_column(sa.ForeignKey("categories.id"))
    priority: Mapped[str | None] = mapped_column(sa.String(8))
    version: Mapped[int] = mapped_column()
    is_current: Mapped[bool] = mapped_column(default=True)
    accept_minutes: Mapped[int] = mapped_column()
    # {"grid": 240, "community": 480, "street": 960, "district": 1440}; a missing level has no limit.
    level_minutes: Mapped[dict[str, int]] = mapped_column(sa.JSON)
    resolve_minutes: Mapped[int] = mapped_column()
    warn_ratio: Mapped[float] = mapped_column(sa.Float, default=0.8)
    calendar_id: Mapped[int] = mapped_column(sa.ForeignKey("sla_calendars.id"))
    note: Mapped[str] = mapped_column(sa.String(200), default="")
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    calendar: Mapped[CalendarRow] = relationship(lazy="joined")


class Clock(db.Model):
    """One measured interval of an event: accept (立案), level (one owner level), resolve (处置)."""

    __tablename__ = "sla_clocks"
    __table_args__ = (
        sa.CheckConstraint(check_in("metric", METRICS), name="metric"),
        sa.CheckConstraint(check_in("state", CLOCK_STATES), name="state"),
        sa.CheckConstraint("level IS NULL OR " + level_check("level"), name="level"),
        sa.CheckConstraint("limit_minutes > 0 AND used_minutes >= 0", name="minutes"),
        sa.CheckConstraint("(state = 'running') = (segment_started_at IS NOT NULL)", name="segment"),
        sa.UniqueConstraint("event_id", "metric", "seq"),
        # At most one live clock per event and metric.
        sa.Index("uq_sla_clocks_live", "event_id", "metric", unique=True,
                 postgresql_where=sa.text("state IN ('running', 'paused')"),
                 sqlite_where=sa.text("state IN ('running', 'paused')")),
        # The sweeper's queue: running clocks by the instant they need a look.
        sa.Index("ix_sla_clocks_due", "next_check_at",
                 postgresql_where=sa.text("state = 'running'"), sqlite_where=sa.text("state = 'running'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # No index of its own: UNIQUE (event_id, metric, seq) serves every lookup by event.
    event_id: Mapped[int] = mapped_column(sa.ForeignKey("events.id"))
    metric: Mapped[str] = mapped_column(sa.String(8))
    # Cycle number per event and metric (a new level clock at each change of level, a new resolve
    # clock when a closed event is reopened).
    seq: Mapped[int] = mapped_column(default=1)
    # For level clocks: the level and the unit that held the event while this clock ran.
    level: Mapped[str | None] = mapped_column(sa.String(16))
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("units.id"))
    policy_id: Mapped[int] = mapped_column(sa.ForeignKey("sla_policies.id"))
    calendar_id: Mapped[int] = mapped_column(sa.ForeignKey("sla_calendars.id"))
    limit_minutes: Mapped[int] = mapped_column()
    # Extra minutes granted by approved extensions (延期), included in limit_minutes.
    extended_minutes: Mapped[int] = mapped_column(default=0)
    warn_minutes: Mapped[int] = mapped_column()
    state: Mapped[str] = mapped_column(sa.String(10))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Working minutes used before the current running segment (time spent stays spent).
    used_minutes: Mapped[float] = mapped_column(sa.Float, default=0.0)
    segment_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    warn_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    provisional: Mapped[bool] = mapped_column(default=False)

    policy: Mapped[Policy] = relationship(lazy="select")


class Escalation(db.Model):
    """One move of an event to the parent unit; a level clock escalates at most once."""

    __tablename__ = "escalations"
    __table_args__ = (
        sa.UniqueConstraint("clock_id"),
        sa.CheckConstraint("reason IN ('timer', 'manual')", name="reason"),
        sa.Index("ix_escalations_from_owner_at", "from_owner_id", "escalated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(sa.ForeignKey("events.id"), index=True)
    clock_id: Mapped[int | None] = mapped_column(sa.ForeignKey("sla_clocks.id"))
    reason: Mapped[str] = mapped_column(sa.String(8))
    from_level: Mapped[str] = mapped_column(sa.String(16))
    to_level: Mapped[str] = mapped_column(sa.String(16))
    from_owner_id: Mapped[int] = mapped_column(sa.ForeignKey("units.id"))
    to_owner_id: Mapped[int] = mapped_column(sa.ForeignKey("units.id"))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    escalated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Working minutes between the deadline and the escalation (a sweeper that was down is late).
    late_minutes: Mapped[float] = mapped_column(sa.Float, default=0.0)
