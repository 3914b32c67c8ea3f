"""Published changes: one record per change of an event, handed to the subscribers inside the
transaction that made it (STYLE §11).

The workflow (`events.service`) and the sweeper publish; the outbox, the inbox — and later the
rollups and the metrics — subscribe. Whoever publishes imports none of them: a subscriber is
registered once, by the app factory. Subscribers take the session and a batch of changes (one for
a person's action, thousands for a sweeper batch), write in the same transaction, never commit,
and must do nothing twice for the same change (their rows carry unique keys).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session


@dataclass(slots=True)  # not frozen: a sweeper batch builds thousands, and frozen ones cost three times as much
class Change:
    """What happened to one event: the action (or the sweeper's effect, see actions.SPECS), the
    event's version after it, where the event was and is, who did it and why. Subscribers read it,
    never change it."""

    event_id: int
    version: int  # the event's version after the change: (event_id, version) names it once
    action: str
    at: datetime
    source: str  # the event's channel (the hotline hears only its own)
    from_state: str | None
    to_state: str
    from_level: str | None
    to_level: str
    from_owner_id: int | None
    to_owner_id: int
    handler_id: int | None = None  # who handles the event after the change
    actor_role: str = "system"  # a user's role, a channel's name, or `system` (the sweeper)
    actor_id: int | None = None
    actor_unit_name: str | None = None
    note: str = ""
    clock_id: int | None = None  # the sweeper's: the clock that caused it
    metric: str | None = None
    due_at: datetime | None = None
    from_owner_name: str | None = None
    to_owner_name: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def by_system(self) -> bool:
        return self.actor_role == "system"


Subscriber = Callable[[Session, Sequence[Change]], None]
_SUBSCRIBERS: list[Subscriber] = []


def subscribe(subscriber: Subscriber) -> None:
    """Have `subscriber` hear every published change (registering it twice is harmless)."""
    if subscriber not in _SUBSCRIBERS:
        _SUBSCRIBERS.append(subscriber)


def publish(session: Session, changes: Sequence[Change]) -> None:
    """Hand `changes`, just written in this session's transaction, to every subscriber."""
    if changes:
        for subscriber in _SUBSCRIBERS:
            subscriber(session, changes)
