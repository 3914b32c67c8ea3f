"""The request's own facts for every edge: the instant it is handled at, the authenticated caller,
and the commit that ends it."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from flask import g, request

from ...auth.models import User
from ...auth.service import authenticate
from ...events.service import STALE_MESSAGE
from ...infra.db import db
from ...infra.errors import Forbidden, StaleVersion, Unauthorized
from ...infra.timeutil import utcnow

BEARER = [{"bearerAuth": []}]


def forget_previous_request() -> None:
    """Before each request: a request normally gets its own app context, but one already pushed (a CLI
    command, a test) is reused — never let the caller or the instant of a previous request leak in."""
    for key in ("user", "now"):
        g.pop(key, None)


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
            raise Unauthorized("缺少访问令牌（Authorization: Bearer …）")
        g.user = authenticate(db.session, raw.strip(), request_now())
    return g.user


def require_role(*roles: str) -> User:
    user = current_user()
    if user.role not in roles:
        raise Forbidden(f"此操作仅限以下角色：{', '.join(roles)}")
    return user


def commit_or_conflict() -> None:
    """Commit; a concurrent writer that got there first turns into 409, not 500."""
    try:
        db.session.commit()
    except (sa.orm.exc.StaleDataError, sa.exc.IntegrityError):
        db.session.rollback()
        raise StaleVersion(STALE_MESSAGE) from None
