"""Instants: stored in UTC, shown in the configured zone, read from the wall clock only at edges."""
from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current instant; call only at an edge (a request, a CLI command, a scheduler tick)."""
    return datetime.now(UTC)  # clock-edge


def as_utc(value: datetime, default_zone: ZoneInfo | None = None) -> datetime:
    """An aware UTC datetime; a naive one is read in `default_zone` (UTC when not given)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=default_zone or UTC)
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator):
    """Timestamps stored as UTC and always returned timezone-aware, on SQLite as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite keeps no zone; store the UTC wall time without an offset so strings sort in time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
