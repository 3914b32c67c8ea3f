"""Hotline petitions (one per client and petition number), the citizen's verdicts, seen webhook ids
and the mapping of the hotline's category codes onto ours."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..auth.client_models import ApiClient
from ..events.models import Category, Event
from ..infra.db import check_in, db
from ..infra.timeutil import UTCDateTime

CHANNELS: tuple[str, ...] = ("phone", "web", "app", "wechat")
URGENCIES: tuple[str, ...] = ("normal", "urgent")
VERDICTS: tuple[str, ...] = ("满意", "基本满意", "不满意")
# The mapping row every unmapped hotline code falls back to.
DEFAULT_CODE = "*"


class HotlinePetition(db.Model):
    """A petition (工单) received from a hotline client and the event it became.

    UNIQUE (client_id, petition_number) makes intake idempotent: a concurrent duplicate fails to
    insert and is answered with the first one. `content_sha256` tells a resend from a reuse.
    """

    __tablename__ = "hotline_petitions"
    __table_args__ = (
        sa.UniqueConstraint("client_id", "petition_number"),
        sa.CheckConstraint(check_in("channel", CHANNELS), name="channel"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(sa.ForeignKey("api_clients.id"))
    petition_number: Mapped[str] = mapped_column(sa.String(64))
    event_id: Mapped[int] = mapped_column(sa.ForeignKey("events.id"), unique=True)
    content_sha256: Mapped[str] = mapped_column(sa.String(64))
    channel: Mapped[str] = mapped_column(sa.String(8))
    # The hotline's own category code, as sent (mapped onto ours at intake).
    external_category: Mapped[str] = mapped_column(sa.String(32))
    is_category_mapped: Mapped[bool] = mapped_column()
    webhook_id: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    client: Mapped[ApiClient] = relationship(lazy="joined")
    event: Mapped[Event] = relationship(lazy="joined")


class HotlineFeedback(db.Model):
    """The citizen's verdict on a petition's outcome (回访), as relayed by the hotline."""

    __tablename__ = "hotline_feedback"
    __table_args__ = (
        sa.CheckConstraint(check_in("verdict", VERDICTS), name="verdict"),
        # A retried message (same webhook-id) is recorded, and acted on, once.
        sa.UniqueConstraint("petition_id", "webhook_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    petition_id: Mapped[int] = mapped_column(sa.ForeignKey("hotline_petitions.id"), index=True)
    verdict: Mapped[str] = mapped_column(sa.String(8))
    note: Mapped[str] = mapped_column(sa.Text, default="")
    # When the hotline called the citizen back, if it says; else when we received the verdict.
    visited_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # True when this verdict reopened the closed event (重办).
    reopened: Mapped[bool] = mapped_column(default=False)
    event_state: Mapped[str] = mapped_column(sa.String(16))
    webhook_id: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SeenWebhook(db.Model):
    """A signed request already accepted: the same (id, timestamp) again is a replay.

    Rows matter only while their timestamp is inside the tolerance window, and are pruned after it.
    A sender's retry keeps the webhook-id but signs a new timestamp (Standard Webhooks), so it passes
    here and is then answered idempotently by the petition number.
    """

    __tablename__ = "hotline_seen_webhooks"
    __table_args__ = (sa.UniqueConstraint("client_id", "webhook_id", "signed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(sa.ForeignKey("api_clients.id"))
    webhook_id: Mapped[str] = mapped_column(sa.String(255))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CategoryMapping(db.Model):
    """The hotline's category code → our 小类; the row with code `*` takes every unmapped code."""

    __tablename__ = "hotline_category_map"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_code: Mapped[str] = mapped_column(sa.String(32), unique=True)
    category_id: Mapped[int] = mapped_column(sa.ForeignKey("categories.id"))
    note: Mapped[str] = mapped_column(sa.String(200), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    category: Mapped[Category] = relationship(lazy="joined")
