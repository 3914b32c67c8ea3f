"""Machine clients (the 12345 hotline, Open311 partners) and their credentials."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..infra.db import check_in, db
from ..infra.timeutil import UTCDateTime
from ..territory.models import Unit

CLIENT_KINDS: tuple[str, ...] = ("hotline", "open311")


class ApiClient(db.Model):
    """A partner system: signs its requests with a shared secret, or presents an API key."""

    __tablename__ = "api_clients"
    __table_args__ = (sa.CheckConstraint(check_in("kind", CLIENT_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    # The unit its petitions fall back to when they cannot be placed (属地兜底); None means the district.
    unit_id: Mapped[int | None] = mapped_column(sa.ForeignKey("units.id"))
    # Where outcomes are posted (signed like the inbound requests); None sends nothing.
    callback_url: Mapped[str | None] = mapped_column(sa.String(500))
    # SHA-256 of the API key; the raw key is shown once, at creation.
    api_key_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    unit: Mapped[Unit | None] = relationship(lazy="joined")
    secrets: Mapped[list[ClientSecret]] = relationship(back_populates="client", order_by="ClientSecret.id.desc()",
                                                       lazy="selectin")

    def __repr__(self) -> str:
        return f"<ApiClient {self.name} {self.kind}>"


class ClientSecret(db.Model):
    """One signing secret (`whsec_…`), AES-GCM encrypted at rest; `expires_at` is set when it is rotated out."""

    __tablename__ = "api_client_secrets"
    __table_args__ = (sa.Index("ix_api_client_secrets_client_id_expires_at", "client_id", "expires_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(sa.ForeignKey("api_clients.id"))
    # "v1." + base64url(nonce ‖ ciphertext ‖ tag), bound to the client id as associated data.
    ciphertext: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # None while current; after a rotation, the end of the grace period during which it is still accepted.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    client: Mapped[ApiClient] = relationship(back_populates="secrets")

    def is_live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now
