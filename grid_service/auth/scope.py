"""Territory scope: which events and units a user may see and act on.

Read scope: events located in, or owned by, a unit of the user's subtree; a handler (a department
doing the work) sees only what is dispatched to them. Out of scope is not found, never forbidden.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..events.models import Event
from ..fields import MAX_ID
from ..territory.models import Unit, subtree_bounds
from .models import User


def subtree_unit_ids(path: str) -> sa.Select:
    low, high = subtree_bounds(path)
    return sa.select(Unit.id).where(Unit.path >= low, Unit.path < high)


def in_subtree(unit_path: str, root_path: str) -> bool:
    return unit_path.startswith(root_path)


def visible_events(user: User) -> sa.ColumnElement[bool]:
    """A WHERE clause selecting the events `user` may read."""
    if user.role == "handler":
        return Event.handler_id == user.id
    units = subtree_unit_ids(user.unit.path)
    return sa.or_(Event.located_unit_id.in_(units), Event.owner_id.in_(units))


def get_visible_event(session: Session, user: User, event_id: int) -> Event:
    if not 0 < event_id <= MAX_ID:
        raise NotFound(f"未找到事件 {event_id}")
    query = sa.select(Event).where(Event.id == event_id, visible_events(user))
    event = session.scalar(query)
    if event is None:
        raise NotFound(f"未找到事件 {event_id}")
    return event
