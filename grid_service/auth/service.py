"""Users and opaque bearer tokens (only a SHA-256 of each token is stored)."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..infra.errors import Invalid, NotFound, Unauthorized
from ..territory.models import Unit
from .models import ROLES, ApiToken, User

TOKEN_PREFIX = "gs_"
# Kinds a bearer token may have on ordinary endpoints: refresh tokens only refresh, and enrol
# tokens only reach the TOTP enrolment endpoints.
BEARER_KINDS = ("access", "cli")

# Built once: every authenticated request runs it, so skip rebuilding the expression each time.
_USER_BY_TOKEN = sa.select(User).join(ApiToken, ApiToken.user_id == User.id).where(
    ApiToken.token_hash == sa.bindparam("token_hash"), ApiToken.revoked_at.is_(None),
    ApiToken.expires_at > sa.bindparam("now"), User.is_active.is_(True),
    sa.or_(*(ApiToken.kind == kind for kind in BEARER_KINDS)),
)
_LIVE_TOKEN = sa.select(ApiToken).join(User, ApiToken.user_id == User.id).where(
    ApiToken.token_hash == sa.bindparam("token_hash"), ApiToken.revoked_at.is_(None),
    ApiToken.expires_at > sa.bindparam("now"), User.is_active.is_(True),
)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def create_user(session: Session, *, name: str, role: str, unit_code: str, now: datetime, display_name: str | None = None) -> User:
    """A new active user bound to a unit; the name is the login name and must be unique."""
    if role not in ROLES:
        raise Invalid(f"unknown role {role!r}", {"role": [f"one of {', '.join(ROLES)}"]})
    unit = session.scalar(sa.select(Unit).where(Unit.code == unit_code))
    if unit is None:
        raise NotFound(f"unknown unit {unit_code!r}", {"unit": ["no unit has this code"]})
    if role == "grid_worker" and unit.level != "grid":
        raise Invalid("a grid worker must be bound to a grid", {"unit": [f"{unit_code} is a {unit.level}"]})
    if session.scalar(sa.select(User.id).where(User.name == name)) is not None:
        raise Invalid(f"user {name!r} already exists", {"name": ["already taken"]})
    user = User(name=name, display_name=display_name or name, role=role, unit=unit, unit_id=unit.id, is_active=True, created_at=now)
    session.add(user)
    session.flush()
    return user


def issue_token(session: Session, user: User, *, now: datetime, ttl: timedelta, label: str | None = None,
                kind: str = "cli", family: str | None = None, family_expires_at: datetime | None = None) -> str:
    """A new bearer token for `user`; the raw value is returned once and never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(raw), kind=kind, family=family,
                         family_expires_at=family_expires_at, label=label, created_at=now, expires_at=now + ttl))
    session.flush()
    return raw


def authenticate(session: Session, raw: str, now: datetime) -> User:
    """The active user a live token belongs to, else Unauthorized (same answer for every cause)."""
    user = session.scalar(_USER_BY_TOKEN, {"token_hash": hash_token(raw), "now": now})
    if user is None:
        raise Unauthorized("令牌无效或已过期")
    return user


def live_token(session: Session, raw: str, now: datetime, kinds: tuple[str, ...]) -> ApiToken:
    """The live token of one of `kinds` (with its active user), else Unauthorized."""
    token = session.scalar(_LIVE_TOKEN, {"token_hash": hash_token(raw), "now": now})
    if token is None or token.kind not in kinds:
        raise Unauthorized("令牌无效或已过期")
    return token


def revoke_token(session: Session, raw: str, now: datetime) -> bool:
    """Revoke a token; False when it was unknown or already revoked."""
    result = session.execute(
        sa.update(ApiToken)
        .where(ApiToken.token_hash == hash_token(raw), ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount == 1


def list_users(session: Session, *, role: str | None = None, unit_code: str | None = None) -> list[User]:
    """Users by unit path and name, optionally of one role and within one unit's subtree (404: no such unit)."""
    query = sa.select(User).join(Unit, User.unit_id == Unit.id).order_by(Unit.path, User.name)
    if role is not None:
        query = query.where(User.role == role)
    if unit_code is not None:
        unit = session.scalar(sa.select(Unit).where(Unit.code == unit_code))
        if unit is None:
            raise NotFound(f"unknown unit {unit_code!r}", {"unit": ["no unit has this code"]})
        query = query.where(Unit.path.startswith(unit.path, autoescape=True))
    return list(session.scalars(query))


def get_user(session: Session, name: str) -> User:
    user = session.scalar(sa.select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"unknown user {name!r}")
    return user
