"""Writing the outbox: what the hotline must hear about an event, in the transaction of the change.

Only events that came from an active hotline client with a callback URL get messages. Each message
carries the event's next sequence number (UNIQUE (event_id, seq)); two writers racing on one event
cannot both commit, because every change of an event also bumps its version.
"""
from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..auth.client_models import ApiClient
from ..events.models import Event
from ..events.queries import event_number
from ..fields import zone
from ..hotline.models import HotlinePetition
from ..sla.models import LIVE_STATES, Clock
from ..territory.models import Unit
from .models import OutboxMessage

# Workflow action → the message the hotline gets: every change of the petition's state, owner or
# deadline (resolve_due_at). Only an urge (催办) and internal notes stay inside.
ACTION_KINDS: dict[str, str] = {
    "register": "registered", "dispatch": "dispatched", "escalate": "escalated", "return": "returned",
    "resolve": "resolved", "verify": "closed", "reject": "rejected", "reopen": "reopened",
    "merge": "merged", "cancel": "cancelled", "accept": "accepted", "rework": "reworked",
    "suspend": "suspended", "resume": "resumed", "extend": "extended", "reclassify": "reclassified",
}

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


def enqueue_event_change(session: Session, event: Event, action: str, now: datetime, *, note: str = "",
                         extra: dict[str, Any] | None = None) -> OutboxMessage | None:
    """Queue the message for `action` just applied to `event`, if its hotline wants to know (call after the change)."""
    kind = ACTION_KINDS.get(action)
    if kind is None or event.source != "hotline":
        return None
    subscriber = session.execute(_SUBSCRIBERS, {"event_ids": [event.id]}).first()
    if subscriber is None:
        return None
    seq = _next_seqs(session, [event.id])[event.id]
    body = message_body(kind=kind, seq=seq, petition_number=subscriber.petition_number, event=event, owner=event.owner,
                        now=now, note=note, resolve_due_at=_resolve_due(session, [event.id]).get(event.id), extra=extra)
    message = OutboxMessage(**_row(client_id=subscriber.client_id, event_id=event.id, seq=seq, kind=kind, body=body, now=now))
    session.add(message)
    session.flush()
    return message


def outbox_rows_for_escalations(session: Session, escalations: list[dict[str, Any]], now: datetime) -> int:
    """Queue an `escalated` message for each hotline event the sweeper just moved up; returns how many.

    Call in the sweeper's batch transaction, after the events were updated: `escalations` are the
    rows it inserts into `escalations` (event_id, to_owner_id, late_minutes …).
    """
    if not escalations:
        return 0
    event_ids = sorted({row["event_id"] for row in escalations})
    subscribers = {row.event_id: row for row in session.execute(_SUBSCRIBERS, {"event_ids": event_ids})}
    if not subscribers:
        return 0
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
    for escalation in escalations:
        event_id = escalation["event_id"]
        if event_id not in subscribers or event_id not in events:
            continue
        event, owner = events[event_id], owners[events[event_id].owner_id]
        seq = seqs[event_id]
        seqs[event_id] += 1
        body = message_body(kind="escalated", seq=seq, petition_number=subscribers[event_id].petition_number,
                            event=event, owner=owner, now=now, note=f"处置超时，已自动上报至{owner.name}",
                            resolve_due_at=due.get(event_id),
                            extra={"late_minutes": round(float(escalation.get("late_minutes") or 0.0), 2)})
        rows.append(_row(client_id=subscribers[event_id].client_id, event_id=event_id, seq=seq, kind="escalated",
                         body=body, now=now))
    if rows:
        session.execute(sa.insert(outbox_t), rows)
    return len(rows)
