"""Intake: a report becomes an event — placed in its grid, owned by it, its clocks running, the first
link of its audit trail written. People report through `report_event`; the hotline and Open311,
having placed the report themselves, through `report_from_channel`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from ..auth.models import User
from ..infra.errors import Invalid
from ..infra.prepared import PreparedInsert, SequenceIds, insert_together
from ..privacy import pii
from ..sla.engine import INSERT_CLOCKS, SlaEngine
from ..territory.locator import Locator
from ..territory.models import Unit, in_subtree
from . import audit
from .catalog import CategoryCache
from .models import Category, Event
from .states import PRIORITIES

# How far in the future a reported `received_at` may be (clock skew of phones), before 422.
RECEIVED_AT_SKEW = timedelta(minutes=5)
# How far in the past a person's report may say it was received (RECEIVED_AT_MAX_AGE_DAYS): a phone
# that queued a report offline sends it days later, not years.
RECEIVED_AT_MAX_AGE = timedelta(days=7)
_CATEGORY_BY_CODE = sa.select(Category).options(sa.orm.joinedload(Category.parent)).where(Category.code == sa.bindparam("code"))
_INSERT_EVENT = PreparedInsert(Event.__table__, returning=Event.__table__.c.id)
_EVENT_IDS = SequenceIds(Event.__table__.c.id)


def forget_reserved_event_ids() -> None:
    """After the events' id sequence was reset (RESTART IDENTITY, a restore): drop this process's block."""
    _EVENT_IDS.forget()


@dataclass
class Report:
    """What a reporter tells us about a new event."""

    category_code: str
    description: str
    lat: float | None = None
    lon: float | None = None
    grid_code: str | None = None
    address: str = ""
    resident_name: str | None = None
    resident_phone: str | None = None
    received_at: datetime | None = None
    priority: str = "normal"


def get_category(session: Session, code: str, cache: CategoryCache | None = None) -> Category:
    """An active 小类 by code (from `cache` when given: a detached snapshot), else 422 naming the field."""
    category = cache.get(session, code) if cache is not None else session.scalar(_CATEGORY_BY_CODE, {"code": code})
    if category is None or not category.is_active:
        raise Invalid(f"未知的事件类别 {code}", {"category_code": ["没有使用此编码的有效类别"]})
    if category.level != "minor":
        raise Invalid(f"{code} 是大类，请选择其下的小类", {"category_code": ["应为小类编码"]})
    return category


def _unit_by_code(session: Session, code: str) -> Unit | None:
    return session.scalar(sa.select(Unit).where(Unit.code == code))


def place_report(session: Session, reporter: User, report: Report, locator: Locator) -> tuple[Unit, Unit | None, str | None]:
    """(located unit, grid, triage reason) for a report, within the reporter's territory."""
    outside = Invalid("该位置不在您的辖区内", {"location": ["不在您可以上报的辖区内"]})
    grid: Unit | None = None
    if report.grid_code is not None:
        grid = _unit_by_code(session, report.grid_code)
        if grid is None or grid.level != "grid" or not in_subtree(grid.path, reporter.unit.path):
            raise Invalid("网格不存在或不在您的辖区内", {"grid_code": ["您的辖区内没有此编码的网格"]})
    if report.lat is None:
        if grid is None and reporter.role == "grid_worker" and reporter.unit.level == "grid":
            grid = reporter.unit  # no GPS fix and no code typed: a grid worker reports from their own grid
        if grid is None:
            raise Invalid("请提供事件位置", {"location": ["请提供 lat 与 lon，或 grid_code"]})
        return grid, grid, None
    placement = locator.locate(report.lon, report.lat)
    if grid is not None:
        if placement.grid_id is not None and placement.grid_id != grid.id:
            raise Invalid("该位置不在所选网格内", {"location": [f"lat/lon 不在网格 {grid.code} 内"]})
        # The reporter's grid wins over a point that fell outside every grid (GPS drift).
        return grid, grid, None if placement.grid_id == grid.id else "point_outside_grids"
    located = session.get(Unit, placement.unit_id)
    if located is None:  # the territory changed under the cached index
        raise Invalid("暂时无法确定该位置所属单位，请重试", {"location": ["辖区数据正在更新"]})
    if not in_subtree(located.path, reporter.unit.path):
        raise outside
    return located, (located if placement.grid_id is not None else None), placement.fallback


def report_event(session: Session, reporter: User, report: Report, *, locator: Locator, sla: SlaEngine,
                 now: datetime, source: str = "grid_worker", categories: CategoryCache | None = None,
                 max_age: timedelta = RECEIVED_AT_MAX_AGE) -> Event:
    """Create an event from a report: routed to its grid, owned by it, state `reported`, clocks running."""
    category, received_at = _checked(session, report, now, categories, max_age)
    located, grid, fallback = place_report(session, reporter, report, locator)
    return _insert_event(session, report, category, received_at, source=source, reporter=reporter, located=located,
                         grid=grid, triage_reason=fallback, sla=sla, now=now, details={})


def report_from_channel(session: Session, report: Report, *, source: str, located: Unit, grid: Unit | None,
                        triage_reason: str | None, sla: SlaEngine, now: datetime,
                        categories: CategoryCache | None = None, details: dict[str, Any] | None = None) -> Event:
    """Create an event a machine channel reported (no reporting user), already placed by the caller.

    Same row, audit entry and clocks as `report_event`; the audit row's role is the channel's name
    and `details` (e.g. the API client) go into it. A `triage_reason` flags the event for triage.
    """
    category, received_at = _checked(session, report, now, categories)
    return _insert_event(session, report, category, received_at, source=source, reporter=None, located=located,
                         grid=grid, triage_reason=triage_reason, sla=sla, now=now, details=details or {})


def _checked(session: Session, report: Report, now: datetime, categories: CategoryCache | None,
             max_age: timedelta | None = None) -> tuple[Category, datetime]:
    """The report's category and received instant (not in the future, nor older than `max_age`), or 422."""
    category = get_category(session, report.category_code, categories)
    if report.priority not in PRIORITIES:
        raise Invalid("未知的优先级", {"priority": [f"应为 {' 或 '.join(PRIORITIES)}"]})
    received_at = report.received_at or now
    if received_at > now + RECEIVED_AT_SKEW:
        raise Invalid("received_at 不能晚于当前时间", {"received_at": ["不能是将来的时间"]})
    if max_age is not None and received_at < now - max_age:
        days = max_age / timedelta(days=1)
        raise Invalid(f"上报时间（received_at）不能早于 {days:g} 天前", {"received_at": [f"应在最近 {days:g} 天内"]})
    return category, received_at


def _insert_event(session: Session, report: Report, category: Category, received_at: datetime, *, source: str,
                  reporter: User | None, located: Unit, grid: Unit | None, triage_reason: str | None,
                  sla: SlaEngine, now: datetime, details: dict[str, Any]) -> Event:
    """The event row, its first audit link and its clocks.

    Intake is the hottest write path. Everything is computed first (clocks, the ORM object, the
    audit row); then three prepared inserts run back to back on the driver, so that on SQLite the
    database's write lock, which the first insert takes and the commit releases, is held for the
    writes alone, and on PostgreSQL (the id drawn beforehand) they take one round trip. The Event returned is built from the values already held (no flush, no reload)
    and is detached: callers read it (the 201 body, a channel's record); a later change loads the
    event into the session as any action does.
    """
    values = {
        "source": source, "category_id": category.id, "priority": report.priority, "state": "reported",
        "level": located.level, "owner_id": located.id, "located_unit_id": located.id,
        "grid_id": grid.id if grid else None, "reporter_id": reporter.id if reporter else None, "handler_id": None,
        "merged_into_id": None, "description": report.description, "address": report.address or "",
        "lat": report.lat, "lon": report.lon, "resident_name": report.resident_name,
        **pii.phone_columns(report.resident_phone),
        "needs_triage": triage_reason is not None, "triage_reason": triage_reason, "is_supervised": False,
        "return_count": 0, "rework_count": 0, "reopen_count": 0, "version": 1,
        "received_at": received_at, "created_at": now, "updated_at": now, "resolved_at": None, "closed_at": None,
    }
    clocks = sla.report_clocks(session, category, report.priority, now, received_at=received_at,
                               level=located.level, owner_id=located.id)
    event = Event(**values)
    row = audit.history_values(event_id=0, actor=reporter, action="report", now=now, from_state=None,
                         to_state=event.state, from_level=None, to_level=event.level, from_owner_id=None,
                         to_owner_id=event.owner_id,
                         details={"source": source} | details | ({"triage": triage_reason} if triage_reason else {}))
    if reporter is None:
        row["actor_role"] = source  # a machine channel: its name is the role

    connection = session.connection()
    event_id = _EVENT_IDS.take(connection)  # PostgreSQL: known now, so all three rows go in one round trip
    if event_id is None:  # SQLite numbers the row in-process: RETURNING costs nothing there
        event_id = _INSERT_EVENT.execute(connection, [values])[0]
        inserts = []
    else:
        inserts = [(_INSERT_EVENT, [{**values, "id": event_id}])]
    event.id = row["event_id"] = event_id
    row["seq"] = 1  # the first link of the event's audit chain
    inserts.append((audit.INSERT_HISTORY, [audit.seal(audit.current_key(), row, audit.GENESIS)]))
    inserts.append((INSERT_CLOCKS, [clock | {"event_id": event_id} for clock in clocks]))
    insert_together(connection, inserts)

    make_transient_to_detached(event)
    for name, value in (("category", category), ("owner", located), ("located_unit", located), ("grid", grid), ("handler", None)):
        set_committed_value(event, name, value)
    return event
