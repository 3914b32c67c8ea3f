"""SLA reporting: one event's clocks as of now, and a unit's figures with one row per child unit.

The summary is SQL aggregation (GROUP BY over a tiny table of the report's rows: the unit and its
children, each as its [low, high) path range), the same statements on SQLite and PostgreSQL; the
median uses window functions (row_number and count over a partition). Python only assembles the
grouped results into rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from ..auth.models import User
from ..events.models import Event, EventHistory
from ..events.queries import resolve_overdue
from ..infra.errors import Forbidden, NotFound
from ..territory.models import Unit, in_subtree, subtree_bounds
from .engine import SlaEngine
from .models import CalendarRow, Clock, Escalation, Policy

SUMMARY_ROLES: tuple[str, ...] = ("supervisor", "admin", "grid_worker")

DEFINITIONS = """\
Figures for the unit (its whole subtree) and for each child unit, over the period [from, to)
(default: from the first day of the current month, local time, to now).

Events count for a row when they are **located** (located_unit) in that row's subtree; an event
located in the unit itself but in none of its children counts only in the unit's row.

- `received`: events whose received_at falls in the period.
- `resolved`: resolve cycles (处置) completed in the period — resolve clocks stopped as met or
  breached with stopped_at in the period. A rework (返工) reopens the cycle, so only the last
  resolution counts; a reopened (重办) event starts a new cycle and counts again.
- `resolved_on_time`: those of `resolved` that stopped within their limit (clock state met).
- `on_time_rate` (按期处置率): resolved_on_time ÷ resolved, null when nothing was resolved.
- `breached`: resolve clocks whose deadline passed in the period (breached_at in the period, as
  marked by the sweeper or at a late resolution), whatever happened to them afterwards.
- `open_overdue`: a snapshot as of the request, not bounded by the period — events whose live
  resolve clock is past due (the same rule as the events list's `overdue=true`).
- `escalations_out`: escalations in the period (escalated_at) that moved an event from an
  owner inside the row's subtree to one outside it — for a grid every escalation from it, for a
  street only those leaving the street (grid → community inside the street is not "out"). These
  are attributed by **owner**, not location. `escalations_out_timer` counts those the sweeper did
  (超时自动上报); the rest were escalated by hand.
- `returns` (退单) and `reworks` (返工): those workflow actions taken in the period (audit trail).
- `median_resolve_minutes`: the median working minutes used by the resolve cycles counted in
  `resolved` (suspension excluded; the mean of the two middle values for an even count), null
  when none.
"""


# ------------------------------------------------------------------ one event's clocks


def event_clocks(session: Session, sla: SlaEngine, event: Event, now: datetime) -> list[dict[str, Any]]:
    """Every clock of the event, oldest first, with the working minutes used and remaining as of `now`."""
    rows = session.execute(
        sa.select(Clock, Policy.scope, Policy.version, CalendarRow.name, Unit.code)
        .join(Policy, Policy.id == Clock.policy_id)
        .join(CalendarRow, CalendarRow.id == Clock.calendar_id)
        .outerjoin(Unit, Unit.id == Clock.owner_id)
        .where(Clock.event_id == event.id)
        .order_by(Clock.id)
    ).all()
    out = []
    for clock, scope, version, calendar_name, owner_code in rows:
        used = sla.used_now(session, clock, now)
        live = clock.state in ("running", "paused")
        overdue = live and (clock.breached_at is not None or used >= clock.limit_minutes
                            or (clock.state == "running" and clock.due_at <= now))
        out.append({
            "id": clock.id, "metric": clock.metric, "seq": clock.seq, "level": clock.level, "owner_code": owner_code,
            "state": clock.state, "started_at": clock.started_at, "due_at": clock.due_at, "warn_at": clock.warn_at,
            "limit_minutes": clock.limit_minutes, "extended_minutes": clock.extended_minutes,
            "used_minutes": round(used, 2), "remaining_minutes": round(max(0.0, clock.limit_minutes - used), 2),
            "overdue_minutes": round(max(0.0, used - clock.limit_minutes), 2), "is_overdue": overdue,
            "warned_at": clock.warned_at, "breached_at": clock.breached_at, "stopped_at": clock.stopped_at,
            "provisional": clock.provisional, "policy_scope": scope, "policy_version": version,
            "calendar": calendar_name,
        })
    return out


# ------------------------------------------------------------------ the unit summary


@dataclass(frozen=True)
class SummaryRow:
    unit: Unit
    low: str
    high: str


def summary_unit(session: Session, user: User, code: str | None) -> Unit:
    """The unit to report on: the caller's own by default; 404 outside the caller's subtree."""
    if user.role not in SUMMARY_ROLES:
        raise Forbidden("处置人员没有可统计的辖区", {"role": [user.role]})
    if code is None:
        return user.unit
    unit = session.scalar(sa.select(Unit).where(Unit.code == code))
    if unit is None or not in_subtree(unit.path, user.unit.path):
        raise NotFound(f"未找到单位 {code}")
    return unit


def _rows_table(rows: list[SummaryRow]) -> sa.Subquery:
    """The report's rows as a tiny derived table (unit_id, low, high), portable to both databases."""
    selects = [
        sa.select(sa.literal(r.unit.id, sa.Integer).label("unit_id"), sa.literal(r.low, sa.String).label("low"),
                  sa.literal(r.high, sa.String).label("high"))
        for r in rows
    ]
    return (sa.union_all(*selects) if len(selects) > 1 else selects[0]).subquery("report_rows")


def _in_row(path: sa.ColumnElement[str], rows: sa.Subquery) -> sa.ColumnElement[bool]:
    return sa.and_(path >= rows.c.low, path < rows.c.high)


def _grouped(session: Session, query: sa.Select) -> dict[int, sa.Row]:
    return {row.unit_id: row for row in session.execute(query)}


def unit_summary(session: Session, unit: Unit, *, start: datetime, end: datetime, now: datetime) -> dict[str, Any]:
    """The unit's figures and each child's over [start, end); see DEFINITIONS."""
    children = list(session.scalars(sa.select(Unit).where(Unit.parent_id == unit.id).order_by(Unit.code)))
    rows = [SummaryRow(u, *subtree_bounds(u.path)) for u in [unit, *children]]
    t = _rows_table(rows)
    located = aliased(Unit)
    by_location = (
        sa.join(Event, located, located.id == Event.located_unit_id).join(t, _in_row(located.path, t))
    )

    received = _grouped(session, sa.select(t.c.unit_id, sa.func.count().label("n")).select_from(by_location)
                        .where(Event.received_at >= start, Event.received_at < end).group_by(t.c.unit_id))

    resolved_clocks = sa.and_(Clock.metric == "resolve", Clock.state.in_(("met", "breached")),
                              Clock.stopped_at >= start, Clock.stopped_at < end)
    clock_rows = sa.join(Clock, Event, Event.id == Clock.event_id).join(located, located.id == Event.located_unit_id) \
        .join(t, _in_row(located.path, t))
    resolved = _grouped(session, sa.select(
        t.c.unit_id, sa.func.count().label("n"),
        sa.func.sum(sa.case((Clock.state == "met", 1), else_=0)).label("on_time"),
    ).select_from(clock_rows).where(resolved_clocks).group_by(t.c.unit_id))

    ranked = sa.select(
        t.c.unit_id.label("unit_id"), Clock.used_minutes.label("minutes"),
        sa.func.row_number().over(partition_by=t.c.unit_id, order_by=(Clock.used_minutes, Clock.id)).label("rn"),
        sa.func.count().over(partition_by=t.c.unit_id).label("n"),
    ).select_from(clock_rows).where(resolved_clocks).subquery("ranked")
    median = _grouped(session, sa.select(ranked.c.unit_id, sa.func.avg(ranked.c.minutes).label("m"))
                      .where(sa.or_(ranked.c.rn == (ranked.c.n + 1) // 2, ranked.c.rn == ranked.c.n // 2 + 1))
                      .group_by(ranked.c.unit_id))

    breached = _grouped(session, sa.select(t.c.unit_id, sa.func.count().label("n")).select_from(clock_rows)
                        .where(Clock.metric == "resolve", Clock.breached_at >= start, Clock.breached_at < end)
                        .group_by(t.c.unit_id))

    overdue = _grouped(session, sa.select(t.c.unit_id, sa.func.count(sa.distinct(Event.id)).label("n"))
                       .select_from(by_location).where(resolve_overdue(now)).group_by(t.c.unit_id))

    from_unit, to_unit = aliased(Unit), aliased(Unit)
    escalations = _grouped(session, sa.select(
        t.c.unit_id, sa.func.count().label("n"),
        sa.func.sum(sa.case((Escalation.reason == "timer", 1), else_=0)).label("timer"),
    ).select_from(
        sa.join(Escalation, from_unit, from_unit.id == Escalation.from_owner_id)
        .join(to_unit, to_unit.id == Escalation.to_owner_id)
        .join(t, _in_row(from_unit.path, t))
    ).where(sa.not_(_in_row(to_unit.path, t)), Escalation.escalated_at >= start, Escalation.escalated_at < end)
        .group_by(t.c.unit_id))

    actions = _grouped(session, sa.select(
        t.c.unit_id,
        sa.func.sum(sa.case((EventHistory.action == "return", 1), else_=0)).label("returns"),
        sa.func.sum(sa.case((EventHistory.action == "rework", 1), else_=0)).label("reworks"),
    ).select_from(sa.join(EventHistory, Event, Event.id == EventHistory.event_id)
                  .join(located, located.id == Event.located_unit_id).join(t, _in_row(located.path, t)))
        .where(EventHistory.action.in_(("return", "rework")), EventHistory.at >= start, EventHistory.at < end)
        .group_by(t.c.unit_id))

    def figures(u: Unit) -> dict[str, Any]:
        n_resolved = int(resolved[u.id].n) if u.id in resolved else 0
        on_time = int(resolved[u.id].on_time or 0) if u.id in resolved else 0
        m = median.get(u.id)
        return {
            "code": u.code, "name": u.name, "level": u.level,
            "received": int(received[u.id].n) if u.id in received else 0,
            "resolved": n_resolved,
            "resolved_on_time": on_time,
            "on_time_rate": round(on_time / n_resolved, 4) if n_resolved else None,
            "breached": int(breached[u.id].n) if u.id in breached else 0,
            "open_overdue": int(overdue[u.id].n) if u.id in overdue else 0,
            "escalations_out": int(escalations[u.id].n) if u.id in escalations else 0,
            "escalations_out_timer": int(escalations[u.id].timer or 0) if u.id in escalations else 0,
            "returns": int(actions[u.id].returns or 0) if u.id in actions else 0,
            "reworks": int(actions[u.id].reworks or 0) if u.id in actions else 0,
            "median_resolve_minutes": round(float(m.m), 2) if m is not None and m.m is not None else None,
        }

    return {"from": start, "to": end, "as_of": now, "unit": figures(unit), "children": [figures(c) for c in children]}
