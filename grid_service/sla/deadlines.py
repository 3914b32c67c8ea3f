"""A clock's deadlines from a policy and a calendar. Pure: no Flask, no database.

The SLA engine, the sweeper's decisions and the demo's replay all start clocks here, so a new
clock is computed one way wherever it starts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .calendar import NaturalCalendar, WorkCalendar

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


def warn_minutes(limit: int, ratio: float) -> int:
    """When the warning falls: `ratio` of the limit, at least a minute in and a minute before the end."""
    return max(1, min(limit - 1, math.floor(limit * ratio))) if limit > 1 else limit


def new_clock(policy: PolicyInfo, calendar: AnyCalendar, metric: str, *, start: datetime, event_id: int = 0,
              seq: int = 1, level: str | None = None, owner_id: int | None = None) -> dict[str, Any] | None:
    """Column values of a new running clock, or None when the policy sets no limit for it."""
    limit = policy.limit(metric, level)
    if limit is None:
        return None
    warn = warn_minutes(limit, policy.warn_ratio)
    due_at = calendar.add(start, limit)
    warn_at = calendar.add(start, warn)
    return {
        "event_id": event_id, "metric": metric, "seq": seq, "level": level, "owner_id": owner_id,
        "policy_id": policy.id, "calendar_id": policy.calendar_id, "limit_minutes": limit, "extended_minutes": 0,
        "warn_minutes": warn, "state": "running", "started_at": start, "used_minutes": 0.0,
        "segment_started_at": start, "due_at": due_at, "warn_at": warn_at,
        "next_check_at": warn_at if warn_at < due_at else due_at, "warned_at": None, "breached_at": None,
        "stopped_at": None, "provisional": calendar.is_provisional(start, due_at),
    }
