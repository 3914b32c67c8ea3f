"""Helpers shared by the blueprints: the caller, the request's instant, common schemas."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import marshmallow as ma
from flask import current_app, g, request

from ..auth.models import User
from ..auth.service import authenticate
from ..errors import Forbidden, Unauthorized
from ..extensions import db
from ..timeutil import as_utc, utcnow

BEARER = [{"bearerAuth": []}]


def request_now() -> datetime:
    """The instant this request is handled at, read once."""
    if "now" not in g:
        g.now = utcnow()
    return g.now


def current_user() -> User:
    """The authenticated caller, or 401."""
    if "user" not in g:
        header = request.headers.get("Authorization", "")
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise Unauthorized("missing bearer token")
        g.user = authenticate(db.session, raw.strip(), request_now())
    return g.user


def require_role(*roles: str) -> User:
    user = current_user()
    if user.role not in roles:
        raise Forbidden(f"this needs one of the roles: {', '.join(roles)}")
    return user


def zone() -> ZoneInfo:
    return ZoneInfo(current_app.config["GRID_TIMEZONE"])


class LocalDateTime(ma.fields.DateTime):
    """ISO 8601 with offset: dumped in the configured zone, loaded as UTC (naive means local)."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return value.astimezone(zone()).isoformat()

    def _deserialize(self, value, attr, data, **kwargs):
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            return as_utc(parsed, zone())
        except (OverflowError, ValueError) as exc:
            raise ma.ValidationError("Not a valid datetime.") from exc


ERROR_RESPONSES = (401, 404, 422)
