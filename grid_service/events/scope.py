"""Which events a user may see (DESIGN §8): events located in, or owned by, a unit of the user's
subtree; a handler (a department doing the work) sees only what is dispatched to them. Out of scope
is not found, never forbidden. Every edge reads events through this one query layer.
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..auth.models import User
from ..infra.db import MAX_ID
from ..infra.errors import NotFound
from ..territory.models import subtree_unit_ids
from .models import Event


def visible_events(user: User) -> sa.ColumnElement[bool]:
    """A WHERE clause selecting the events `user` may read."""
    if user.role == "handler":
        return Event.handler_id == user.id
    units = subtree_unit_ids(user.unit.path)
    return sa.or_(Event.located_unit_id.in_(units), Event.owner_id.in_(units))


def get_visible_event(session: Session, user: User, event_id: int) -> Event:
    """The event, if `user` may see it; 404 otherwise (also for ids no event can have)."""
    if not 0 < event_id <= MAX_ID:
        raise NotFound(f"未找到事件 {event_id}")
    query = sa.select(Event).where(Event.id == event_id, visible_events(user))
    event = session.scalar(query)
    if event is None:
        raise NotFound(f"未找到事件 {event_id}")
    return event
