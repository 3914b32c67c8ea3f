"""The outbox: one row per change a client must hear about, written in the change's transaction."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..auth.client_models import ApiClient
from ..infra.db import check_in, db
from ..infra.timeutil import UTCDateTime

MESSAGE_KINDS: tuple[str, ...] = (
    "registered", "dispatched", "escalated", "returned", "resolved", "closed", "rejected", "reopened",
    "merged", "cancelled", "accepted", "reworked", "suspended", "resumed", "extended", "reclassified",
)
DELIVERY_STATES: tuple[str, ...] = ("pending", "delivered", "dead")


class OutboxMessage(db.Model):
    """One message to one client about one event, delivered in `seq` order per event."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.UniqueConstraint("event_id", "seq"),
        sa.CheckConstraint(check_in("kind", MESSAGE_KINDS), name="kind"),
        sa.CheckConstraint(check_in("state", DELIVERY_STATES), name="state"),
        sa.CheckConstraint("seq >= 1 AND attempts >= 0", name="counts"),
        sa.Index("ix_outbox_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(sa.ForeignKey("api_clients.id"), index=True)
    event_id: Mapped[int] = mapped_column(sa.ForeignKey("events.id"))
    seq: Mapped[int] = mapped_column()
    kind: Mapped[str] = mapped_column(sa.String(16))
    # The webhook-id of every attempt: stable across retries so the receiver can drop duplicates.
    msg_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # The exact JSON (UTF-8) that is signed and posted, fixed when the change happened.
    body: Mapped[str] = mapped_column(sa.Text)
    state: Mapped[str] = mapped_column(sa.String(12), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A delivery run holds the row until then (the HTTP call happens outside any transaction).
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(sa.String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    client: Mapped[ApiClient] = relationship(lazy="joined")
