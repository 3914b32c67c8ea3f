"""The workflow: a person's (or a channel's) action applied to an event, as actions.py declares it.

Services take the session, the actor and `now`; they flush, never commit (the edge commits). Each
change bumps the event's version, appends one link to its audit trail, moves its clocks, and is
published (events.changes) for the outbox and the inbox, in the same transaction.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from ..auth.models import User
from ..infra.errors import Forbidden, Invalid, InvalidTransition, StaleVersion
from ..sla.engine import SlaEngine
from ..territory.models import Unit, ancestor_paths, in_subtree, subtree_unit_ids
from . import audit
from .actions import ACTION_ROLES, HANDLER_ACTIONS, SPECS, allowed_actions, field_changes, next_state
from .changes import Change, publish
from .intake import get_category
from .models import Event, EventHistory
from .scope import get_visible_event
from .states import PRIORITIES, STATE_LABELS

logger = logging.getLogger(__name__)

# What a person reads when someone else changed the event first (409 stale_version).
STALE_MESSAGE = "事件已被他人修改，请刷新后重试"


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
    to_unit: str | None = None  # escalate: the unit to send the event up to (default: the owner's parent)


class Channel:
    """A machine channel acting without a person (the hotline relaying a citizen's verdict): no user,
    no unit; its source name is the audit row's role."""

    id = unit_id = None

    def __init__(self, name: str) -> None:
        self.role = name


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
    """The actions `user` could take on `event` right now (those whose arguments need no database
    either way: an escalation is listed only when there is a unit to send the event up to)."""
    return [a for a in allowed_actions(event.state)
            if may_act(user, event, a) and (a != "escalate" or escalation_targets(user, event))]


def escalation_targets(actor: User, event: Event) -> list[Unit]:
    """The units `actor` may send `event` up to by hand (上报), nearest first: the owner's ancestors,
    as far as the actor's own unit's parent (a community supervisor can ask the street to coordinate;
    a district admin can send it anywhere up). The timers move one level at a time."""
    reach = actor.unit.parent or actor.unit
    targets, unit = [], event.owner.parent
    while unit is not None and in_subtree(unit.path, reach.path):
        targets.append(unit)
        unit = unit.parent
    return targets


def apply_action(session: Session, event: Event, actor: User, request: ActionRequest, *, sla: SlaEngine,
                 now: datetime) -> Event:
    """Apply one workflow action by a person; 409 if the state forbids it, 403 if the actor may not."""
    action = request.action
    new_state = next_state(event.state, action, allowed_now=lambda: actions_for(actor, event))
    if not may_act(actor, event, action):
        raise Forbidden(f"您无权对该事件执行“{SPECS[action].label}”", {"action": ["您的角色或单位不允许此操作"]},
                        allowed_actions=actions_for(actor, event))
    if request.expected_version is not None and request.expected_version != event.version:
        raise StaleVersion(STALE_MESSAGE, {"version": [f"当前版本为 {event.version}"]})
    if SPECS[action].note_required and not request.note.strip():
        raise Invalid(f"“{SPECS[action].label}”须填写原因", {"note": ["此操作必须填写"]})
    return _change(session, event, actor, request, new_state, sla=sla, now=now, stale=STALE_MESSAGE,
                   actor_unit_name=actor.unit.name)


def apply_channel_action(session: Session, event: Event, channel: str, request: ActionRequest, *, sla: SlaEngine,
                         now: datetime, details: dict[str, Any] | None = None) -> Event:
    """An action a machine channel takes for a citizen (重办 after 不满意): the same change as a person's,
    without a person's checks (the channel is the event's own); the audit row's role is the channel's
    name and `details` (the verdict, the client) go into it."""
    new_state = next_state(event.state, request.action)
    return _change(session, event, Channel(channel), request, new_state, sla=sla, now=now,
                   stale="事件刚被修改，请重试", details=details)


def _change(session: Session, event: Event, actor: Any, request: ActionRequest, new_state: str, *, sla: SlaEngine,
            now: datetime, stale: str, actor_unit_name: str | None = None,
            details: dict[str, Any] | None = None) -> Event:
    """The change itself, once checked: arguments, fields, version, clocks, audit link, publication."""
    action, spec = request.action, SPECS[request.action]
    from_state, from_level, from_owner_id = event.state, event.level, event.owner_id
    details = dict(details or {})
    prepare = _ARGUMENTS.get(action)
    if prepare is not None:
        details.update(prepare(session, event, actor, request))
    for name, value in field_changes(action, event, now, new_state).items():
        setattr(event, name, value)
        if name == "handler_id":
            event.handler = None
    event.state = new_state
    event.updated_at = now
    flag_modified(event, "updated_at")  # every action is a new version (an urge changes nothing else)
    if spec.clears_triage:
        event.needs_triage = False
    try:
        session.flush()  # the guarded UPDATE … WHERE version = :loaded
    except sa.orm.exc.StaleDataError:
        raise StaleVersion(stale) from None
    sla.on_action(session, event, action, now, from_level=from_level, from_owner_id=from_owner_id,
                  extend_minutes=request.minutes, extend_metric=request.metric)
    audit.append_link(session, event, audit.history_values(
        event_id=event.id, actor=actor, action=action, now=now, from_state=from_state, to_state=event.state,
        from_level=from_level, to_level=event.level, from_owner_id=from_owner_id, to_owner_id=event.owner_id,
        note=request.note, details=details))
    publish(session, [Change(
        event_id=event.id, version=event.version, action=action, at=now, source=event.source, from_state=from_state,
        to_state=event.state, from_level=from_level, to_level=event.level, from_owner_id=from_owner_id,
        to_owner_id=event.owner_id, handler_id=event.handler_id, actor_role=actor.role, actor_id=actor.id,
        actor_unit_name=actor_unit_name,
        note=request.note, details=details)])
    return event


# -- the arguments of the actions that have them: checked against the database, applied, and
#    returned as the audit row's details ------------------------------------------------------


def _dispatch(session: Session, event: Event, actor: Any, request: ActionRequest) -> dict[str, Any]:
    handler = _check_handler(session, event, request.handler_id)
    event.handler_id, event.handler = handler.id, handler
    return {"handler_id": handler.id}


def _return(session: Session, event: Event, actor: Any, request: ActionRequest) -> dict[str, Any]:
    return {"handler_id": event.handler_id}


def _merge(session: Session, event: Event, actor: Any, request: ActionRequest) -> dict[str, Any]:
    target = _merge_target(session, actor, event, request.into_event_id)
    event.merged_into_id = target.id
    return {"into": target.id}


def _escalate(session: Session, event: Event, actor: Any, request: ActionRequest) -> dict[str, Any]:
    """Hand the event up to the chosen ancestor, by default the owner's parent (level and owner change)."""
    targets = escalation_targets(actor, event)
    if not targets:
        raise InvalidTransition("事件已在最高层级，或已到您可上报的最高单位，无法再上报",
                                errors={"action": ["没有可上报的上级单位"]}, allowed_actions=actions_for(actor, event))
    target = targets[0] if request.to_unit is None else next((u for u in targets if u.code == request.to_unit), None)
    if target is None:
        allowed = "、".join(f"{u.name}（{u.code}）" for u in targets)
        raise Invalid("只能上报至责任单位的上级单位，最高到您所在单位的上级", {"to_unit": [f"可选：{allowed}"]})
    levels = len(targets[:targets.index(target) + 1])
    event.owner_id, event.owner, event.level = target.id, target, target.level
    return {"to_owner": target.code} | ({"levels": levels} if levels > 1 else {})


def _reclassify(session: Session, event: Event, actor: Any, request: ActionRequest) -> dict[str, Any]:
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


def _extend(session: Session, event: Event, actor: Any, request: ActionRequest) -> dict[str, Any]:
    if not request.minutes:
        raise Invalid("延期须填写延长的分钟数（minutes）", {"minutes": ["必填"]})
    return {"metric": request.metric or "resolve", "minutes": request.minutes}


_ARGUMENTS: dict[str, Callable[[Session, Event, Any, ActionRequest], dict[str, Any]]] = {
    "dispatch": _dispatch, "return": _return, "merge": _merge, "escalate": _escalate, "reclassify": _reclassify,
    "extend": _extend,
}


def may_handle(handler: User, owner: Unit) -> bool:
    """Whether `handler` may be dispatched an event `owner` holds: an active handler of the owner's
    own unit, a unit above it (a street's department serves its grids) or a unit below it."""
    return (handler.role == "handler" and handler.is_active
            and (in_subtree(owner.path, handler.unit.path) or in_subtree(handler.unit.path, owner.path)))


def dispatch_candidates(owner: Unit) -> sa.ColumnElement[bool]:
    """`may_handle` as a WHERE clause on users (the people directory's `for_event`)."""
    units = sa.select(Unit.id).where(sa.or_(Unit.path.in_([*ancestor_paths(owner.path), owner.path]),
                                            Unit.id.in_(subtree_unit_ids(owner.path))))
    return sa.and_(User.role == "handler", User.is_active.is_(True), User.unit_id.in_(units))


def _check_handler(session: Session, event: Event, handler_id: int | None) -> User:
    if handler_id is None:
        raise Invalid("派遣须指定处置人员", {"handler_id": ["必填"]})
    handler = session.get(User, handler_id)
    if handler is None or not may_handle(handler, event.owner):
        raise Invalid("处置人员不存在，或不能由本单位派遣",
                      {"handler_id": ["应为责任单位或其上下级单位的在岗处置人员"]})
    return handler


def _merge_target(session: Session, actor: User, event: Event, into_id: int | None) -> Event:
    if into_id is None:
        raise Invalid("合并须指定目标事件（into_event_id）", {"into_event_id": ["必填"]})
    if into_id == event.id:
        raise Invalid("事件不能合并到自身", {"into_event_id": ["应为另一个事件"]})
    target = get_visible_event(session, actor, into_id)
    if target.state in ("merged", "rejected", "cancelled"):
        raise Invalid("不能合并到已终结的事件",
                      {"into_event_id": [f"该事件为“{STATE_LABELS[target.state]}”"]})
    return target


_UNITS_OF_A_ROW = (sa.orm.joinedload(EventHistory.actor_unit), sa.orm.joinedload(EventHistory.from_owner),
                   sa.orm.joinedload(EventHistory.to_owner))


def history(session: Session, event: Event) -> list[EventHistory]:
    """The event's audit trail, oldest first, with the units each row names (one query)."""
    return list(session.scalars(sa.select(EventHistory).options(*_UNITS_OF_A_ROW)
                                .where(EventHistory.event_id == event.id).order_by(EventHistory.seq)))
