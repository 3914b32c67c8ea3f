"""People, their credentials and sessions, and the shared rate-limit counters."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..infra.db import check_in, db
from ..infra.timeutil import UTCDateTime
from ..territory.models import Unit

ROLES: tuple[str, ...] = ("grid_worker", "supervisor", "handler", "admin")
# access/refresh: a login session (one `family` per login); cli: scripts' long-lived API tokens;
# enrol: a password-only login of a user who must still enrol TOTP (only the TOTP endpoints take it).
TOKEN_KINDS: tuple[str, ...] = ("access", "refresh", "cli", "enrol")


class User(db.Model):
    __tablename__ = "users"
    __table_args__ = (sa.CheckConstraint(check_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    display_name: Mapped[str] = mapped_column(sa.String(100))
    role: Mapped[str] = mapped_column(sa.String(16))
    unit_id: Mapped[int] = mapped_column(sa.ForeignKey("units.id"), index=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # argon2id (PHC string); None: the user cannot log in with a password (CLI tokens only).
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Consecutive failed logins since the last success or lock; at the limit the account locks.
    failed_logins: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The TOTP secret, sealed with grid_service.infra.crypto (purpose "totp", bound to the user id).
    totp_secret: Mapped[str | None] = mapped_column(sa.String(200))
    # Set when a first code confirmed the secret; until then the secret is only pending.
    totp_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The last 30-second step a code was accepted for: a code is good once.
    totp_last_step: Mapped[int | None] = mapped_column(sa.BigInteger())

    unit: Mapped[Unit] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"<User {self.name} {self.role}@{self.unit_id}>"


class ApiToken(db.Model):
    """An opaque bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (sa.CheckConstraint(f"kind IN ({', '.join(repr(k) for k in TOKEN_KINDS)})", name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(8), default="cli", server_default="cli")
    # The login session the token belongs to (access, refresh and enrol tokens); revoked together.
    family: Mapped[str | None] = mapped_column(sa.String(32), index=True)
    # The session's absolute end: refreshing never extends a family past it.
    family_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    label: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(lazy="joined")


class RateCounter(db.Model):
    """One rate-limit window per key (e.g. "user:42:60"), shared by every worker process.

    A window starts at its first hit (epoch seconds) and counts hits until `period` has passed.
    Rows are a cache: losing them only resets the limits.
    """

    __tablename__ = "rate_counters"

    key: Mapped[str] = mapped_column(sa.String(160), primary_key=True)
    window_start: Mapped[int] = mapped_column(sa.BigInteger(), index=True)
    hits: Mapped[int] = mapped_column()
