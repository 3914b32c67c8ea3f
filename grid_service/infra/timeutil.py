"""Instants: stored in UTC, shown in the configured zone, read from the wall clock only at edges."""
from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current instant; call only at an edge (a request, a CLI command, a scheduler tick)."""
    return datetime.now(UTC)  # clock-edge


def zone() -> ZoneInfo:
    """The configured zone (GRID_TIMEZONE): where instants are shown and working hours fall."""
    return ZoneInfo(current_app.config["GRID_TIMEZONE"])


def as_utc(value: datetime, default_zone: ZoneInfo | None = None) -> datetime:
    """An aware UTC datetime; a naive one is read in `default_zone` (UTC when not given)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=default_zone or UTC)
    return value.astimezone(UTC)


# SQLAlchemy's SQLite DATETIME text: "2026-01-04 01:30:00.000000".
_SQLITE_FORMAT = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"


def sqlite_instant(value: datetime | None) -> str | None:
    """What a UTC column stores on SQLite: the UTC wall time as SQLAlchemy's DATETIME text, no offset."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
    # isoformat at microseconds is exactly _SQLITE_FORMAT, and several times faster.
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


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

    def bind_processor(self, dialect):
        if dialect.name != "sqlite" or self.impl_instance.dialect_impl(dialect)._storage_format != _SQLITE_FORMAT:
            return super().bind_processor(dialect)

        # SQLite: one step instead of two (to naive UTC, then SQLAlchemy's %-formatting), giving the
        # same text. Every write binds several instants (intake ~30, an escalation ~10).
        return sqlite_instant

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
