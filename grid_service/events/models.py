"""Events, their categories, audit trail and photos."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..auth.models import User
from ..infra.append_only import make_append_only
from ..infra.db import check_in, db
from ..infra.timeutil import UTCDateTime
from ..territory.models import Unit, level_check
from .states import PRIORITIES, SOURCES, STATES


class Category(db.Model):
    """Two-level classification: a 大类 (major, no parent) holds 小类 (minor); events use minors."""

    __tablename__ = "categories"
    __table_args__ = (sa.CheckConstraint("(level = 'major') = (parent_id IS NULL)", name="level"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(16), unique=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    level: Mapped[str] = mapped_column(sa.String(8))
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("categories.id"), index=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    keywords: Mapped[str] = mapped_column(sa.String(200), default="")
    is_active: Mapped[bool] = mapped_column(default=True)
    sort_order: Mapped[int] = mapped_column(default=0)

    parent: Mapped[Category | None] = relationship(remote_side=[id], lazy="joined", join_depth=1)


class Event(db.Model):
    __tablename__ = "events"
    __table_args__ = (
        sa.CheckConstraint(check_in("state", STATES), name="state"),
        sa.CheckConstraint(check_in("source", SOURCES), name="source"),
        sa.CheckConstraint(check_in("priority", PRIORITIES), name="priority"),
        sa.CheckConstraint(level_check("level"), name="level"),
        sa.CheckConstraint("return_count >= 0 AND rework_count >= 0 AND reopen_count >= 0", name="counts"),
        sa.Index("ix_events_owner_state", "owner_id", "state"),
        sa.Index("ix_events_state_received", "state", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(16))
    category_id: Mapped[int] = mapped_column(sa.ForeignKey("categories.id"), index=True)
    priority: Mapped[str] = mapped_column(sa.String(8), default="normal")
    state: Mapped[str] = mapped_column(sa.String(16))
    level: Mapped[str] = mapped_column(sa.String(16))
    # The unit that holds the event now (责任单位); its level is the event's level.
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("units.id"))
    # Where the event is: its grid when the point falls in one, else the lowest unit holding it.
    located_unit_id: Mapped[int] = mapped_column(sa.ForeignKey("units.id"), index=True)
    grid_id: Mapped[int | None] = mapped_column(sa.ForeignKey("units.id"), index=True)
    handler_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"), index=True)
    reporter_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    merged_into_id: Mapped[int | None] = mapped_column(sa.ForeignKey("events.id"))

    description: Mapped[str] = mapped_column(sa.Text)
    address: Mapped[str] = mapped_column(sa.String(300), default="")
    lat: Mapped[float | None] = mapped_column(sa.Float)
    lon: Mapped[float | None] = mapped_column(sa.Float)
    resident_name: Mapped[str | None] = mapped_column(sa.String(64))
    # The caller's number, never in clear (grid_service.privacy.phones): AES-GCM ciphertext, keyed blind
    # index (every event from one caller), and the masked form shown to everyone (138****1234).
    resident_phone_enc: Mapped[str | None] = mapped_column(sa.String(128))
    resident_phone_index: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    resident_phone_masked: Mapped[str | None] = mapped_column(sa.String(32))

    needs_triage: Mapped[bool] = mapped_column(default=False)
    # 督办: the district let its own time run out; the event is under the district's direct order.
    is_supervised: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    triage_reason: Mapped[str | None] = mapped_column(sa.String(200))
    return_count: Mapped[int] = mapped_column(default=0)
    rework_count: Mapped[int] = mapped_column(default=0)
    reopen_count: Mapped[int] = mapped_column(default=0)

    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Optimistic lock: every change bumps it; a stale writer gets 409.
    version: Mapped[int] = mapped_column(default=1)

    category: Mapped[Category] = relationship(lazy="joined")
    owner: Mapped[Unit] = relationship(foreign_keys=[owner_id], lazy="joined")
    located_unit: Mapped[Unit] = relationship(foreign_keys=[located_unit_id], lazy="joined")
    grid: Mapped[Unit | None] = relationship(foreign_keys=[grid_id], lazy="joined")
    handler: Mapped[User | None] = relationship(foreign_keys=[handler_id], lazy="joined")

    __mapper_args__ = {"version_id_col": version}


class EventHistory(db.Model):
    """One append-only row per change of an event (a trigger refuses UPDATE and DELETE), chained by
    keyed hashes per event (grid_service.events.audit): `seq` is the event's version after the change."""

    __tablename__ = "event_history"
    __table_args__ = (sa.UniqueConstraint("event_id", "seq"), sa.CheckConstraint("seq >= 1", name="seq"))

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(sa.ForeignKey("events.id"))
    seq: Mapped[int] = mapped_column()
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    # "system" for the sweeper; otherwise the actor's role at the time.
    actor_role: Mapped[str] = mapped_column(sa.String(16))
    actor_unit_id: Mapped[int | None] = mapped_column(sa.ForeignKey("units.id"))
    action: Mapped[str] = mapped_column(sa.String(24))
    from_state: Mapped[str | None] = mapped_column(sa.String(16))
    to_state: Mapped[str] = mapped_column(sa.String(16))
    from_level: Mapped[str | None] = mapped_column(sa.String(16))
    to_level: Mapped[str] = mapped_column(sa.String(16))
    from_owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("units.id"))
    to_owner_id: Mapped[int] = mapped_column(sa.ForeignKey("units.id"))
    note: Mapped[str] = mapped_column(sa.Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    row_hash: Mapped[str] = mapped_column(sa.String(64))

    actor: Mapped[User | None] = relationship(lazy="joined")
    # For reading a trail (the rows are only ever written by INSERT: these never write).
    actor_unit: Mapped[Unit | None] = relationship(foreign_keys=[actor_unit_id], viewonly=True)
    from_owner: Mapped[Unit | None] = relationship(foreign_keys=[from_owner_id], viewonly=True)
    to_owner: Mapped[Unit] = relationship(foreign_keys=[to_owner_id], viewonly=True)


class Attachment(db.Model):
    """A photo of an event, stored on disk by its SHA-256."""

    __tablename__ = "attachments"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('before', 'after')", name="kind"),
        sa.UniqueConstraint("event_id", "sha256", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(sa.ForeignKey("events.id"), index=True)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    content_type: Mapped[str] = mapped_column(sa.String(32))
    size_bytes: Mapped[int] = mapped_column()
    kind: Mapped[str] = mapped_column(sa.String(8))
    uploaded_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# The audit trail is append-only in the database itself, not only in Python.
APPEND_ONLY_SQL = make_append_only(EventHistory.__table__)
