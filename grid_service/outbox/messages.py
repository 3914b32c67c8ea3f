"""Writing the outbox: what the hotline must hear about an event, in the transaction of the change.

Only events that came from an active hotline client with a callback URL get messages. Each message
carries the event's next sequence number (UNIQUE (event_id, seq)); two writers racing on one event
cannot both commit, because every change of an event also bumps its version.
"""
from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..auth.client_models import ApiClient
from ..events.actions import SPECS
from ..events.changes import Change
from ..events.models import Event
from ..events.queries import event_number
from ..hotline.models import HotlinePetition
from ..infra.timeutil import zone
from ..sla.models import LIVE_STATES, Clock
from ..territory.models import Unit
from .models import OutboxMessage

outbox_t = OutboxMessage.__table__
_SUBSCRIBERS = (
    sa.select(HotlinePetition.event_id, HotlinePetition.petition_number, ApiClient.id.label("client_id"))
    .join(ApiClient, ApiClient.id == HotlinePetition.client_id)
    .where(HotlinePetition.event_id.in_(sa.bindparam("event_ids", expanding=True)),
           ApiClient.is_active.is_(True), ApiClient.callback_url.is_not(None))
)


def _next_seqs(session: Session, event_ids: Iterable[int]) -> dict[int, int]:
    ids = list(event_ids)
    rows = session.execute(sa.select(outbox_t.c.event_id, sa.func.max(outbox_t.c.seq))
                           .where(outbox_t.c.event_id.in_(ids)).group_by(outbox_t.c.event_id))
    last = {event_id: seq for event_id, seq in rows}
    return {event_id: (last.get(event_id) or 0) + 1 for event_id in ids}


def _resolve_due(session: Session, event_ids: Iterable[int]) -> dict[int, datetime]:
    """The due instant of each event's live resolve clock (处置时限), where it has one."""
    rows = session.execute(sa.select(Clock.event_id, Clock.due_at)
                           .where(Clock.event_id.in_(list(event_ids)), Clock.metric == "resolve",
                                  Clock.state.in_(LIVE_STATES)))
    return {event_id: due_at for event_id, due_at in rows}


def message_body(*, kind: str, seq: int, petition_number: str, event: Any, owner: Any, now: datetime,
                 note: str = "", resolve_due_at: datetime | None = None, extra: dict[str, Any] | None = None) -> str:
    """The JSON posted to the hotline (Standard Webhooks payload: type, timestamp, data)."""
    tz = zone()
    data = {
        "petition_number": petition_number, "seq": seq, "event_id": event.id, "event_number": event_number(event, tz),
        "state": event.state, "level": event.level,
        "owner": {"code": owner.code, "name": owner.name, "level": owner.level},
        "note": note, "resolve_due_at": resolve_due_at.astimezone(tz).isoformat() if resolve_due_at else None,
        **(extra or {}),
    }
    payload = {"type": f"petition.{kind}", "timestamp": now.astimezone(tz).isoformat(), "data": data}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def _row(*, client_id: int, event_id: int, seq: int, kind: str, body: str, now: datetime) -> dict[str, Any]:
    return {"client_id": client_id, "event_id": event_id, "seq": seq, "kind": kind,
            "msg_id": f"gs_{event_id}_{seq}_{secrets.token_hex(4)}", "body": body, "state": "pending",
            "attempts": 0, "next_attempt_at": now, "claimed_until": None, "last_status": None, "last_error": None,
            "created_at": now, "last_attempt_at": None, "delivered_at": None}


def on_changes(session: Session, changes: Sequence[Change]) -> None:
    """Queue a message for each change of a hotline petition's event the hotline must hear of (its
    action declares one: every change of the petition's state, owner or deadline; an urge stays
    inside). Subscribed by the app factory; called after the events were written."""
    wanted = [change for change in changes
              if change.source == "hotline" and SPECS[change.action].hotline is not None]
    if not wanted:
        return
    event_ids = sorted({change.event_id for change in wanted})
    subscribers = {row.event_id: row for row in session.execute(_SUBSCRIBERS, {"event_ids": event_ids})}
    if not subscribers:
        return
    events_t, units_t = Event.__table__, Unit.__table__
    events = {row.id: row for row in session.execute(
        sa.select(events_t.c.id, events_t.c.state, events_t.c.level, events_t.c.created_at, events_t.c.owner_id)
        .where(events_t.c.id.in_(list(subscribers))))}
    owners = {row.id: row for row in session.execute(
        sa.select(units_t.c.id, units_t.c.code, units_t.c.name, units_t.c.level)
        .where(units_t.c.id.in_({e.owner_id for e in events.values()})))}
    seqs = _next_seqs(session, subscribers)
    due = _resolve_due(session, subscribers)
    rows = []
    for change in wanted:
        event_id = change.event_id
        if event_id not in subscribers or event_id not in events:
            continue
        message = SPECS[change.action].hotline
        event, owner = events[event_id], owners[events[event_id].owner_id]
        seq = seqs[event_id]
        seqs[event_id] += 1
        note, extra = change.note, None
        if change.by_system and message.system_note:
            note = message.system_note.format(to_owner=owner.name)
        if "late_minutes" in change.details:
            extra = {"late_minutes": round(float(change.details["late_minutes"] or 0.0), 2)}
        body = message_body(kind=message.kind, seq=seq, petition_number=subscribers[event_id].petition_number,
                            event=event, owner=owner, now=change.at, note=note, resolve_due_at=due.get(event_id),
                            extra=extra)
        rows.append(_row(client_id=subscribers[event_id].client_id, event_id=event_id, seq=seq, kind=message.kind,
                         body=body, now=change.at))
    if rows:
        session.execute(sa.insert(outbox_t), rows)
