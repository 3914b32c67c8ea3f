"""Event intake and the workflow: one function per change, each appending to the audit trail.

Services take the session, the actor and `now`; they flush, never commit (the edge commits).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import flag_modified, set_committed_value

from ..auth.models import User
from ..auth.scope import get_visible_event, in_subtree
from ..errors import Forbidden, Invalid, InvalidTransition, StaleVersion
from ..notify.outbox import enqueue_event_change
from ..sla.engine import INSERT_CLOCKS, SlaEngine, notify
from ..territory.locator import Locator
from ..territory.models import Unit
from .. import audit, pii
from ..prepared import PreparedInsert, SequenceIds, insert_together
from .catalog import CategoryCache
from .models import Category, Event, EventHistory
from .states import (ACTION_LABELS, ACTION_ROLES, HANDLER_ACTIONS, PRIORITIES, STATE_LABELS, InvalidTransitionError,
                     allowed_actions, next_state)

logger = logging.getLogger(__name__)

# How far in the future a reported `received_at` may be (clock skew of phones), before 422.
RECEIVED_AT_SKEW = timedelta(minutes=5)
# Actions whose note is the reason the rules require (退单/返工/挂账/重办/作废 need a why).
NOTE_REQUIRED = frozenset({"return", "reject", "rework", "suspend", "reopen", "cancel", "extend"})
_CATEGORY_BY_CODE = sa.select(Category).options(sa.orm.joinedload(Category.parent)).where(Category.code == sa.bindparam("code"))
_INSERT_EVENT = PreparedInsert(Event.__table__, returning=Event.__table__.c.id)
_EVENT_IDS = SequenceIds(Event.__table__.c.id)


def forget_reserved_event_ids() -> None:
    """After the events' id sequence was reset (RESTART IDENTITY, a restore): drop this process's block."""
    _EVENT_IDS.forget()


INSERT_HISTORY = PreparedInsert(EventHistory.__table__)
_CHAIN_HEAD = (sa.select(EventHistory.row_hash).where(EventHistory.event_id == sa.bindparam("event_id"))
               .order_by(EventHistory.seq.desc()).limit(1))
# What a person reads when someone else changed the event first (409 stale_version).
STALE_MESSAGE = "事件已被他人修改，请刷新后重试"
# A person taking one of these has looked at the event: it no longer waits for triage.
TRIAGE_CLEARING = frozenset({"register", "reject", "merge", "cancel", "escalate", "reclassify"})


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


@dataclass
class ActionRequest:
    action: str
    note: str = ""
    expected_version: int | None = None
    handler_id: int | None = None
    into_event_id: int | None = None
    category_code: str | None = None
    priority: str | None = None
    minutes: int | None = None
    metric: str | None = None


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


def history_values(*, event_id: int, actor: User | None, action: str, now: datetime, from_state: str | None,
                   to_state: str, from_level: str | None, to_level: str, from_owner_id: int | None, to_owner_id: int,
                   note: str = "", details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Column values of one audit row; `actor=None` means the system (the sweeper)."""
    return {
        "event_id": event_id, "at": now, "actor_id": actor.id if actor else None,
        "actor_role": actor.role if actor else "system", "actor_unit_id": actor.unit_id if actor else None,
        "action": action, "from_state": from_state, "to_state": to_state, "from_level": from_level,
        "to_level": to_level, "from_owner_id": from_owner_id, "to_owner_id": to_owner_id,
        "note": note, "details": details or {},
    }


def record(session: Session, event: Event, *, actor: User | None, action: str, now: datetime,
           from_state: str | None, from_level: str | None, from_owner_id: int | None,
           note: str = "", details: dict[str, Any] | None = None) -> None:
    """Append one audit row describing the change just made to `event` (flushing that change first)."""
    append_history(session, event, history_values(
        event_id=event.id, actor=actor, action=action, now=now, from_state=from_state, to_state=event.state,
        from_level=from_level, to_level=event.level, from_owner_id=from_owner_id, to_owner_id=event.owner_id,
        note=note, details=details))


def append_history(session: Session, event: Event, row: dict[str, Any]) -> None:
    """Insert `row` as the next link of the event's audit chain: seq = the event's version after the change.

    A new event's first row (version 1) starts the chain; any other reads the head of the chain it
    extends. The change itself is flushed first, so its version check has already passed: two writers
    cannot extend the same chain (and UNIQUE(event_id, seq) says so in the database too).
    """
    session.flush()
    row["seq"] = event.version
    prev_hash = audit.GENESIS
    if event.version > 1:
        prev_hash = session.execute(_CHAIN_HEAD, {"event_id": event.id}).scalar() or audit.GENESIS
    INSERT_HISTORY.execute(session.connection(), [audit.seal(audit.current_key(), row, prev_hash)])


def report_event(session: Session, reporter: User, report: Report, *, locator: Locator, sla: SlaEngine,
                 now: datetime, source: str = "grid_worker", categories: CategoryCache | None = None) -> Event:
    """Create an event from a report: routed to its grid, owned by it, state `reported`, clocks running."""
    category, received_at = _checked(session, report, now, categories)
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


def _checked(session: Session, report: Report, now: datetime,
             categories: CategoryCache | None) -> tuple[Category, datetime]:
    """The report's category and received instant, or 422."""
    category = get_category(session, report.category_code, categories)
    if report.priority not in PRIORITIES:
        raise Invalid("未知的优先级", {"priority": [f"应为 {' 或 '.join(PRIORITIES)}"]})
    received_at = report.received_at or now
    if received_at > now + RECEIVED_AT_SKEW:
        raise Invalid("received_at 不能晚于当前时间", {"received_at": ["不能是将来的时间"]})
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
    row = history_values(event_id=0, actor=reporter, action="report", now=now, from_state=None,
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
    inserts.append((INSERT_HISTORY, [audit.seal(audit.current_key(), row, audit.GENESIS)]))
    inserts.append((INSERT_CLOCKS, [clock | {"event_id": event_id} for clock in clocks]))
    insert_together(connection, inserts)

    make_transient_to_detached(event)
    for name, value in (("category", category), ("owner", located), ("located_unit", located), ("grid", grid), ("handler", None)):
        set_committed_value(event, name, value)
    return event


def may_act(user: User, event: Event, action: str) -> bool:
    """Whether `user` holds the event in a way that lets them take `action` on it."""
    if user.role not in ACTION_ROLES.get(action, ()):
        return False
    if action in HANDLER_ACTIONS:
        return event.handler_id == user.id
    if user.role == "grid_worker":
        return event.grid_id == user.unit_id
    return in_subtree(event.owner.path, user.unit.path)


def actions_for(user: User, event: Event) -> list[str]:
    """The actions `user` could take on `event` right now."""
    return [a for a in allowed_actions(event.state) if may_act(user, event, a)]


def _not_now(state: str, action: str) -> str:
    """Why `action` cannot be taken in `state`, for the person who tried."""
    return f"事件当前为“{STATE_LABELS[state]}”（{state}），不能执行“{ACTION_LABELS[action]}”（{action}）"


def _require_note(request: ActionRequest) -> None:
    if request.action in NOTE_REQUIRED and not request.note.strip():
        raise Invalid(f"“{ACTION_LABELS[request.action]}”（{request.action}）须填写原因", {"note": ["此操作必须填写"]})


def _check_handler(session: Session, event: Event, handler_id: int | None) -> User:
    if handler_id is None:
        raise Invalid("派遣须指定处置人员", {"handler_id": ["必填"]})
    handler = session.get(User, handler_id)
    owner_path = event.owner.path
    if (handler is None or handler.role != "handler" or not handler.is_active
            or not (in_subtree(owner_path, handler.unit.path) or in_subtree(handler.unit.path, owner_path))):
        raise Invalid("处置人员不存在，或不能由本单位派遣",
                      {"handler_id": ["应为责任单位或其上下级单位的在岗处置人员"]})
    return handler


def apply_action(session: Session, event: Event, actor: User, request: ActionRequest, *, sla: SlaEngine, now: datetime) -> Event:
    """Apply one workflow action by a person; 409 if the state forbids it, 403 if the actor may not."""
    action = request.action
    try:
        new_state = next_state(event.state, action)
    except InvalidTransitionError as exc:
        raise InvalidTransition(
            _not_now(event.state, action), allowed_actions=actions_for(actor, event),
            errors={"action": [f"{exc.state} 状态下不允许此操作"]},
        ) from None
    if not may_act(actor, event, action):
        raise Forbidden(f"您无权对该事件执行“{ACTION_LABELS[action]}”（{action}）", {"action": ["您的角色或单位不允许此操作"]},
                        allowed_actions=actions_for(actor, event))
    if request.expected_version is not None and request.expected_version != event.version:
        raise StaleVersion(STALE_MESSAGE, {"version": [f"当前版本为 {event.version}"]})
    _require_note(request)

    from_state, from_level, from_owner_id = event.state, event.level, event.owner_id
    details: dict[str, Any] = {}
    if action == "dispatch":
        handler = _check_handler(session, event, request.handler_id)
        event.handler_id, event.handler = handler.id, handler
        details["handler_id"] = handler.id
    elif action == "return":
        event.return_count += 1
        details["handler_id"] = event.handler_id
        event.handler_id, event.handler = None, None
    elif action == "resolve":
        event.resolved_at = now
    elif action == "verify":
        event.closed_at = now
    elif action == "rework":
        event.rework_count += 1
        event.resolved_at = None
    elif action == "reopen":
        event.reopen_count += 1
        event.closed_at = event.resolved_at = None
    elif action == "merge":
        details["into"] = _merge_target(session, actor, event, request.into_event_id).id
        event.merged_into_id = details["into"]
    elif action == "escalate":
        details.update(_move_up(session, event))
        if new_state == "registered":
            event.handler_id, event.handler = None, None
    elif action == "reclassify":
        details.update(_reclassify(session, event, request))
    elif action == "extend":
        if not request.minutes:
            raise Invalid("延期须填写延长的分钟数（minutes）", {"minutes": ["必填"]})
        details.update(metric=request.metric or "resolve", minutes=request.minutes)

    event.state = new_state
    event.updated_at = now
    flag_modified(event, "updated_at")  # every action is a new version (an urge changes nothing else)
    if action in TRIAGE_CLEARING:
        event.needs_triage = False
    try:
        session.flush()  # the guarded UPDATE … WHERE version = :loaded
    except sa.orm.exc.StaleDataError:
        raise StaleVersion(STALE_MESSAGE) from None
    sla.on_action(session, event, action, now, from_state=from_state, from_level=from_level, from_owner_id=from_owner_id,
                  actor_id=actor.id, extend_minutes=request.minutes, extend_metric=request.metric)
    record(session, event, actor=actor, action=action, now=now, from_state=from_state, from_level=from_level,
           from_owner_id=from_owner_id, note=request.note, details=details)
    _notify_for(session, event, action, actor, now)
    enqueue_event_change(session, event, action, now, note=request.note)  # the hotline hears it in this transaction
    return event


def _notify_for(session: Session, event: Event, action: str, actor: User, now: datetime) -> None:
    """Inbox items a person's action causes: the new owner of an escalated event, an urged owner."""
    # Each change bumps the event's version, so (event, version) names this change exactly once.
    if action == "escalate":
        notify(session, unit_id=event.owner_id, event_id=event.id, kind="escalated", now=now,
               dedupe_key=f"escalated:{event.id}:v{event.version}",
               message=f"事件由{actor.unit.name}上报至本单位处置")
    elif action == "urge":
        notify(session, unit_id=event.owner_id, event_id=event.id, kind="urge", now=now,
               dedupe_key=f"urge:{event.id}:v{event.version}", message=f"{actor.unit.name}催办：请尽快处置")


def _merge_target(session: Session, actor: User, event: Event, into_id: int | None) -> Event:
    if into_id is None:
        raise Invalid("合并须指定目标事件（into_event_id）", {"into_event_id": ["必填"]})
    if into_id == event.id:
        raise Invalid("事件不能合并到自身", {"into_event_id": ["应为另一个事件"]})
    target = get_visible_event(session, actor, into_id)
    if target.state in ("merged", "rejected", "cancelled"):
        raise Invalid("不能合并到已终结的事件",
                      {"into_event_id": [f"该事件为“{STATE_LABELS[target.state]}”（{target.state}）"]})
    return target


def _move_up(session: Session, event: Event) -> dict[str, Any]:
    """Hand the event to its owner's parent (level and owner change, DESIGN §4)."""
    parent = event.owner.parent if event.owner.parent_id is not None else None
    if parent is None:
        raise InvalidTransition("事件已在最高层级，无法再上报", errors={"action": ["没有可上报的上级单位"]})
    event.owner_id, event.owner, event.level = parent.id, parent, parent.level
    return {"to_owner": parent.code}


def _reclassify(session: Session, event: Event, request: ActionRequest) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if request.category_code is not None and request.category_code != event.category.code:
        category = get_category(session, request.category_code)
        changes["category"] = [event.category.code, category.code]
        event.category_id, event.category = category.id, category
    if request.priority is not None and request.priority != event.priority:
        if request.priority not in PRIORITIES:
            raise Invalid("未知的优先级", {"priority": [f"应为 {' 或 '.join(PRIORITIES)}"]})
        changes["priority"] = [event.priority, request.priority]
        event.priority = request.priority
    if not changes:
        raise Invalid("没有需要修改的内容", {"category_code": ["请提供新的 category_code 或 priority"]})
    return changes


def history(session: Session, event: Event) -> list[EventHistory]:
    return list(session.scalars(sa.select(EventHistory).where(EventHistory.event_id == event.id).order_by(EventHistory.seq)))



def reopen_by_channel(session: Session, event: Event, *, channel: str, note: str, sla: SlaEngine, now: datetime,
                      details: dict[str, Any] | None = None) -> Event:
    """重办 without a person: a citizen's verdict relayed by a machine channel reopens a closed event.

    The same transition, counters and clocks as the `reopen` action; the audit row's role is the
    channel's name, its note says why, and `details` (the verdict, the client) go into it.
    """
    try:
        new_state = next_state(event.state, "reopen")
    except InvalidTransitionError:
        raise InvalidTransition(_not_now(event.state, "reopen"),
                                errors={"action": [f"{event.state} 状态下不允许此操作"]}) from None
    from_state, from_level, from_owner_id = event.state, event.level, event.owner_id
    event.reopen_count += 1
    event.closed_at = event.resolved_at = None
    event.state, event.updated_at = new_state, now
    try:
        session.flush()
    except sa.orm.exc.StaleDataError:
        raise StaleVersion("事件刚被修改，请重试") from None
    sla.on_action(session, event, "reopen", now, from_state=from_state, from_level=from_level,
                  from_owner_id=from_owner_id, actor_id=None)
    row = history_values(event_id=event.id, actor=None, action="reopen", now=now, from_state=from_state,
                         to_state=event.state, from_level=from_level, to_level=event.level, from_owner_id=from_owner_id,
                         to_owner_id=event.owner_id, note=note, details=details)
    append_history(session, event, row | {"actor_role": channel})
    enqueue_event_change(session, event, "reopen", now, note=note)
    return event
