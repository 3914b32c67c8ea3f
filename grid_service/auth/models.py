"""People and their credentials."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..territory.models import Unit
from ..timeutil import UTCDateTime

ROLES: tuple[str, ...] = ("grid_worker", "supervisor", "handler", "admin")


class User(db.Model):
    __tablename__ = "users"
    __table_args__ = (sa.CheckConstraint(f"role IN ({', '.join(repr(r) for r in ROLES)})", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    display_name: Mapped[str] = mapped_column(sa.String(100))
    role: Mapped[str] = mapped_column(sa.String(16))
    unit_id: Mapped[int] = mapped_column(sa.ForeignKey("units.id"), index=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    unit: Mapped[Unit] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"<User {self.name} {self.role}@{self.unit_id}>"


class ApiToken(db.Model):
    """An opaque bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    label: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(lazy="joined")
