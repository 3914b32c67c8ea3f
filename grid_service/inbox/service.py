"""The inbox (待办提醒): the notifications addressed to the caller.

A unit's notifications are read by its supervisors and admins and — for a grid — its grid worker
(a grid owns the events reported in it). A handler (处置人员/部门) reads the notifications addressed
to them: work dispatched to them, urges, rework, extensions and deadline warnings on the events
they hold. Only the caller's own inbox is readable; any other notification is "not found", like an
event out of scope.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from ..auth.models import User
from ..events.models import Event
from ..infra.db import MAX_ID
from ..infra.errors import NotFound
from ..sla.models import Clock
from .models import Notification

MAX_BULK_IDS = 500


@dataclass
class InboxItem:
    """One notification with the event facts a supervisor needs to triage it."""

    notification: Notification
    event: Event
    metric: str | None


def mine(user: User) -> sa.ColumnElement[bool]:
    """The notifications `user` reads: addressed to them (a handler), else to their unit."""
    if user.role == "handler":
        return Notification.user_id == user.id
    return Notification.unit_id == user.unit_id


def _filters(user: User, *, unread: bool | None, kind: str | None) -> list[sa.ColumnElement[bool]]:
    clauses: list[sa.ColumnElement[bool]] = [mine(user)]
    if unread is True:
        clauses.append(Notification.read_at.is_(None))
    elif unread is False:
        clauses.append(Notification.read_at.is_not(None))
    if kind is not None:
        clauses.append(Notification.kind == kind)
    return clauses


def list_inbox(session: Session, user: User, *, unread: bool | None, kind: str | None, limit: int,
               offset: int) -> dict[str, Any]:
    """One page of the caller's unit's notifications, newest first, with the total and unread counts."""
    where = _filters(user, unread=unread, kind=kind)
    # Newest first = most recently created; ids grow with insertion; (unit_id, id) and (user_id, id) are indexed.
    rows = session.execute(
        sa.select(Notification, Event, Clock.metric)
        .options(selectinload(Notification.read_by))
        .join(Event, Event.id == Notification.event_id)
        .outerjoin(Clock, Clock.id == Notification.clock_id)
        .where(*where)
        .order_by(Notification.id.desc())
        .limit(limit)
        .offset(offset)
    ).unique().all()
    total = session.scalar(sa.select(sa.func.count()).select_from(Notification).where(*where)) or 0
    unread_count = session.scalar(
        sa.select(sa.func.count()).select_from(Notification)
        .where(mine(user), Notification.read_at.is_(None))
    ) or 0
    return {
        "items": [InboxItem(n, e, metric) for n, e, metric in rows],
        "total": int(total), "unread": int(unread_count), "limit": limit, "offset": offset,
    }


def _item(session: Session, notification_id: int) -> InboxItem:
    row = session.execute(
        sa.select(Notification, Event, Clock.metric)
        .options(selectinload(Notification.read_by))
        .join(Event, Event.id == Notification.event_id)
        .outerjoin(Clock, Clock.id == Notification.clock_id)
        .where(Notification.id == notification_id)
    ).unique().one()
    return InboxItem(row[0], row[1], row[2])


def mark_read(session: Session, user: User, notification_id: int, now: datetime) -> InboxItem:
    """Mark one notification of the caller's inbox as read (the first reader is kept); 404 otherwise."""
    if not 0 < notification_id <= MAX_ID:
        raise NotFound(f"未找到提醒 {notification_id}")
    exists = session.scalar(sa.select(Notification.id).where(Notification.id == notification_id,
                                                             mine(user)))
    if exists is None:
        raise NotFound(f"未找到提醒 {notification_id}")
    # Guarded: a second reader (or a retry) does not overwrite who read it first.
    session.execute(sa.update(Notification)
                    .where(Notification.id == notification_id, Notification.read_at.is_(None))
                    .values(read_at=now, read_by_id=user.id)
                    .execution_options(synchronize_session=False))
    session.flush()
    session.expire_all()
    return _item(session, notification_id)


def mark_many_read(session: Session, user: User, *, ids: list[int] | None, mark_all: bool, kind: str | None,
                   now: datetime) -> dict[str, int]:
    """Mark the given notifications (all of them or none: 404 naming the unknown ids), or all unread ones."""
    query = sa.update(Notification).where(mine(user), Notification.read_at.is_(None))
    if not mark_all:
        wanted = sorted(set(ids or []))
        found = set(session.scalars(sa.select(Notification.id).where(mine(user),
                                                                      Notification.id.in_(wanted))))
        missing = [i for i in wanted if i not in found]
        if missing:
            raise NotFound("部分提醒不在本单位的待办提醒中", {"ids": missing[:50]})
        query = query.where(Notification.id.in_(wanted))
    elif kind is not None:
        query = query.where(Notification.kind == kind)
    marked = session.execute(query.values(read_at=now, read_by_id=user.id)
                             .execution_options(synchronize_session=False)).rowcount
    session.flush()
    unread = session.scalar(sa.select(sa.func.count()).select_from(Notification)
                            .where(mine(user), Notification.read_at.is_(None))) or 0
    return {"marked": int(marked or 0), "unread": int(unread)}
