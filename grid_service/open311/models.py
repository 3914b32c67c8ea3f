"""Open311 data: the questions each 小类 asks (service attributes) and the extras of requests posted here."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..auth.client_models import ApiClient  # noqa: F401  (the table client_id refers to)
from ..events.models import Category
from ..infra.db import db
from ..infra.timeutil import UTCDateTime

# GeoReport v2 attribute datatypes.
DATATYPES: tuple[str, ...] = ("string", "number", "datetime", "text", "singlevaluelist", "multivaluelist")
LIST_DATATYPES: frozenset[str] = frozenset({"singlevaluelist", "multivaluelist"})


class Open311Attribute(db.Model):
    """One category-specific question of a service definition (GeoReport v2 `attribute`)."""

    __tablename__ = "open311_attributes"
    __table_args__ = (
        sa.CheckConstraint(f"datatype IN ({', '.join(repr(d) for d in DATATYPES)})", name="datatype"),
        sa.CheckConstraint("sort_order > 0", name="sort_order"),
        # An informational attribute (variable = false) takes no input, so it cannot be required.
        sa.CheckConstraint("variable OR NOT required", name="required_variable"),
        sa.UniqueConstraint("category_id", "code"),
        sa.UniqueConstraint("category_id", "sort_order"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    category_id: Mapped[int] = mapped_column(sa.ForeignKey("categories.id"), index=True)
    code: Mapped[str] = mapped_column(sa.String(64))
    datatype: Mapped[str] = mapped_column(sa.String(16))
    variable: Mapped[bool] = mapped_column(default=True)
    required: Mapped[bool] = mapped_column(default=False)
    # GeoReport's `order`: 1 is shown first; unique within the service.
    sort_order: Mapped[int] = mapped_column()
    description: Mapped[str] = mapped_column(sa.String(500))
    datatype_description: Mapped[str] = mapped_column(sa.String(200), default="")
    # GeoReport's `values`: [{"key": "...", "name": "..."}] for the list datatypes, else [].
    choices: Mapped[list[dict[str, str]]] = mapped_column(sa.JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    category: Mapped[Category] = relationship(lazy="select")


class Open311Request(db.Model):
    """What an Open311 client sent with a request, beside the event it created (one row per event)."""

    __tablename__ = "open311_requests"

    event_id: Mapped[int] = mapped_column(sa.ForeignKey("events.id"), primary_key=True)
    # The API client (api key) that posted the request.
    client_id: Mapped[int | None] = mapped_column(sa.ForeignKey("api_clients.id"), index=True)
    # The reporter's own text, as sent (the event's description also carries the attribute answers).
    description: Mapped[str | None] = mapped_column(sa.Text)
    address_id: Mapped[str | None] = mapped_column(sa.String(64))
    # Private: never returned by any Open311 response.
    email: Mapped[str | None] = mapped_column(sa.String(254))
    device_id: Mapped[str | None] = mapped_column(sa.String(100))
    account_id: Mapped[str | None] = mapped_column(sa.String(100))
    attributes: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    media_url: Mapped[str | None] = mapped_column(sa.String(1000))
    # GET tokens/{token} resolves it; requests are created synchronously, so POST answers with the id instead.
    token: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
