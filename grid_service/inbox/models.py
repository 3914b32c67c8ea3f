"""Inbox rows: one notification to a unit's people or to one person (a handler), once per cause
(`dedupe_key`)."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..auth.models import User
from ..infra.db import check_in, db
from ..infra.timeutil import UTCDateTime

NOTIFICATION_KINDS: tuple[str, ...] = ("warning", "escalated", "breached", "supervise", "urge", "dispatched", "rework",
                                       "extended", "returned")


class Notification(db.Model):
    """An inbox item for a unit (its supervisors, or a grid's worker) or for one person (a handler);
    `dedupe_key` makes each one happen once."""

    __tablename__ = "notifications"
    __table_args__ = (
        sa.CheckConstraint(check_in("kind", NOTIFICATION_KINDS), name="kind"),
        sa.CheckConstraint("(unit_id IS NULL) <> (user_id IS NULL)", name="recipient"),
        sa.Index("ix_notifications_unit_id_id", "unit_id", "id"),
        sa.Index("ix_notifications_user_id_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # The recipient: a unit, or one person (exactly one of the two).
    unit_id: Mapped[int | None] = mapped_column(sa.ForeignKey("units.id"))
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    event_id: Mapped[int] = mapped_column(sa.ForeignKey("events.id"), index=True)
    clock_id: Mapped[int | None] = mapped_column(sa.ForeignKey("sla_clocks.id"))
    kind: Mapped[str] = mapped_column(sa.String(12))
    message: Mapped[str] = mapped_column(sa.String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    read_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))

    read_by: Mapped[User | None] = relationship(foreign_keys=[read_by_id], lazy="select")
