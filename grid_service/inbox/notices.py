"""Whom a change tells: the inbox's subscriber to published changes (events.changes).

Each action declares its notices (events.actions: an urge tells the owner, an escalation the new
owner, the sweeper's warnings, breaches and 督办 the owner); this module writes them, in the
transaction of the change, in one set-based statement whatever the batch's size. A notice happens
once: its `dedupe_key` — the clock that caused it, or the event's version after the change — is
UNIQUE, and a replay of the same cause adds nothing.
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

_COLUMNS: Columns = (("dedupe_key", TEXT), ("unit_id", BIGINT), ("event_id", BIGINT), ("clock_id", BIGINT),
                     ("kind", TEXT), ("message", TEXT))
# WHERE true: SQLite's parser needs it between INSERT … SELECT and ON CONFLICT.
_NOTIFY = ("INSERT INTO notifications (dedupe_key, unit_id, event_id, clock_id, kind, message, created_at) "
           "SELECT r.dedupe_key, r.unit_id, r.event_id, r.clock_id, r.kind, r.message, {at} FROM r WHERE true "
           "ON CONFLICT (dedupe_key) DO NOTHING")


def dedupe_key(kind: str, change: Change) -> str:
    """Names the cause once: the clock that ran out, or the event's version after a person's change."""
    if change.clock_id is not None:
        return f"{kind}:{change.clock_id}"
    return f"{kind}:{change.event_id}:v{change.version}"


def on_changes(session: Session, changes: Sequence[Change]) -> None:
    """Write the notices `changes` call for (subscribed by the app factory)."""
    rows: dict[datetime, list[tuple[Any, ...]]] = {}  # by instant: a batch's changes share one
    tz = None
    for change in changes:
        notices = SPECS[change.action].notices
        if not notices:
            continue
        for notice in notices:
            if change.by_system:
                if tz is None:
                    tz = zone()
                template = notice.system_message
                message = template.format(
                    from_owner=change.from_owner_name, to_owner=change.to_owner_name,
                    metric=METRIC_LABELS.get(change.metric or "", ""),
                    due=change.due_at.astimezone(tz).strftime("%m-%d %H:%M")
                    if change.due_at is not None and "{due}" in template else "")
            else:
                message = notice.message.format(actor_unit=change.actor_unit_name or "")
            rows.setdefault(change.at, []).append(
                (dedupe_key(notice.kind, change), change.to_owner_id, change.event_id, change.clock_id, notice.kind,
                 message))
    if rows:
        out = SetWriter(session)
        begin_writing(session)  # the statement starts with WITH: sqlite3 would not open a transaction for it
        for at, batch in rows.items():
            out.run(_NOTIFY, batch, _COLUMNS, {"at": (TIME, out.instant(at))})
