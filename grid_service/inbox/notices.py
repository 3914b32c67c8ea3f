"""Whom a change tells: the inbox's subscriber to published changes (events.changes).

Each action declares its notices (events.actions): a dispatch tells the handler, an urge or a
rework the handler and the owner unit, a 退单 the owner, an extension the handler, an escalation
the new owner, the sweeper's warnings and breaches the owner and the handler, 督办 the owner.
This module writes them, in the transaction of the change, in one set-based statement whatever the
batch's size. A notice happens
once: its `dedupe_key` — its kind and cause: the clock that ran out, or the event's version after
a person's change — is UNIQUE, and a replay of the same cause adds nothing.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ..events.actions import METRIC_LABELS, SPECS
from ..events.changes import Change
from ..infra.db import begin_writing
from ..infra.setwrite import BIGINT, TEXT, TIME, Columns, SetWriter
from ..infra.timeutil import zone

_COLUMNS: Columns = (("dedupe_key", TEXT), ("unit_id", BIGINT), ("user_id", BIGINT), ("event_id", BIGINT),
                     ("clock_id", BIGINT), ("kind", TEXT), ("message", TEXT))
# WHERE true: SQLite's parser needs it between INSERT … SELECT and ON CONFLICT.
_NOTIFY = ("INSERT INTO notifications (dedupe_key, unit_id, user_id, event_id, clock_id, kind, message, created_at) "
           "SELECT r.dedupe_key, r.unit_id, r.user_id, r.event_id, r.clock_id, r.kind, r.message, {at} FROM r WHERE true "
           "ON CONFLICT (dedupe_key) DO NOTHING")


def on_changes(session: Session, changes: Sequence[Change]) -> None:
    """Write the notices `changes` call for (subscribed by the app factory)."""
    rows: dict[datetime, list[tuple[Any, ...]]] = {}  # by instant: a batch's changes share one
    messages: dict[tuple[Any, ...], str] = {}  # many changes of a batch read the same words
    tz = None
    for change in changes:
        notices = SPECS[change.action].notices
        if not notices:
            continue
        cause = f"{change.clock_id}" if change.clock_id is not None else f"{change.event_id}:v{change.version}"
        for notice in notices:
            template = notice.system_message if change.actor_role == "system" else notice.message
            due = change.due_at if "{due}" in template else None
            key = (template, change.actor_unit_name, change.note, change.details.get("minutes"),
                   change.from_owner_name, change.to_owner_name, change.metric, due)
            message = messages.get(key)
            if message is None:
                if due is not None:
                    tz = tz or zone()
                message = messages[key] = _cut(template.format(
                    actor_unit=change.actor_unit_name or "", note=change.note, minutes=change.details.get("minutes"),
                    from_owner=change.from_owner_name, to_owner=change.to_owner_name,
                    metric=METRIC_LABELS.get(change.metric or "", ""),
                    due=due.astimezone(tz).strftime("%m-%d %H:%M") if due is not None else ""))
            for recipient in notice.to:
                if recipient == "owner":
                    unit_id, user_id, dedupe = change.to_owner_id, None, f"{notice.kind}:{cause}"
                elif change.handler_id is not None:  # the handler: only while someone handles the event
                    unit_id, user_id, dedupe = None, change.handler_id, f"{notice.kind}:{cause}:u{change.handler_id}"
                else:
                    continue
                rows.setdefault(change.at, []).append(
                    (dedupe, unit_id, user_id, change.event_id, change.clock_id, notice.kind, message))
    if rows:
        out = SetWriter(session)
        begin_writing(session)  # the statement starts with WITH: sqlite3 would not open a transaction for it
        for at, batch in rows.items():
            out.run(_NOTIFY, batch, _COLUMNS, {"at": (TIME, out.instant(at))})


def _cut(message: str, limit: int = 300) -> str:
    """A message as the column holds it (a long reason is cut, not refused)."""
    return message if len(message) <= limit else message[:limit - 1] + "…"
