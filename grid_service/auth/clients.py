"""API clients: create them, rotate their signing secrets, authenticate their API keys.

Signing secrets (`whsec_…`) must be readable again to verify and sign HMACs, so they cannot be
hashed: they are sealed with AES-256-GCM (grid_service.infra.crypto: a key derived from SECRET_KEY by
HKDF; SECRET_KEY_FALLBACKS still open them), with the client id as associated data so a sealed
secret copied onto another client does not open. API keys only need comparing, so only
their SHA-256 is stored. Raw secrets and keys are returned once, at creation or rotation.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from ..infra import crypto
from ..infra.errors import Conflict, Forbidden, Invalid, NotFound
from ..infra.webhooks import new_secret, secret_key
from ..territory.models import Unit
from .client_models import CLIENT_KINDS, ApiClient, ClientSecret

API_KEY_PREFIX = "gsk_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_GRACE = timedelta(days=30)


# -- sealing secrets at rest ----------------------------------------------------------------

_PURPOSE = "api-client-signing-secret"


def _app_secrets() -> list[str]:
    config = current_app.config
    return [str(config["SECRET_KEY"]), *(str(k) for k in config.get("SECRET_KEY_FALLBACKS") or [])]


def seal(plaintext: str, client_id: int) -> str:
    """AES-GCM ciphertext of a signing secret, bound to its client."""
    return crypto.encrypt(_app_secrets()[0], plaintext, purpose=_PURPOSE, aad=f"api_client:{client_id}")


def unseal(token: str, client_id: int) -> str:
    """The signing secret; ValueError when no configured key opens it (SECRET_KEY changed)."""
    return crypto.decrypt(_app_secrets(), token, purpose=_PURPOSE, aad=f"api_client:{client_id}")


def hash_api_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


# -- clients ------------------------------------------------------------------------------------


def _check_callback_url(url: str | None) -> str | None:
    if url is None or url == "":
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 500:
        raise Invalid("回调地址应为 http(s) 网址（the callback URL must be an http(s) URL）",
                      {"callback_url": ["应为完整的 http:// 或 https:// 网址，最多 500 个字符"
                                        "（an absolute http:// or https:// URL, at most 500 characters）"]})
    return url


def _unit(session: Session, unit_code: str | None) -> Unit | None:
    if unit_code is None:
        return None
    unit = session.scalar(sa.select(Unit).where(Unit.code == unit_code))
    if unit is None:
        raise Invalid(f"未找到单位 {unit_code}（unknown unit {unit_code!r}）",
                      {"unit_code": ["没有此编码的单位（no unit has this code）"]})
    return unit


def _add_secret(session: Session, client: ApiClient, now: datetime) -> str:
    raw = new_secret()
    session.add(ClientSecret(client_id=client.id, ciphertext=seal(raw, client.id), created_at=now, expires_at=None))
    return raw


def create_client(session: Session, *, name: str, kind: str, callback_url: str | None = None,
                  unit_code: str | None = None, now: datetime) -> tuple[ApiClient, str, str]:
    """A new active client; returns it with its signing secret and API key (shown this once)."""
    if not NAME_PATTERN.match(name or ""):
        raise Invalid("客户端名称无效（invalid client name）",
                      {"name": ["应为 1-64 个字符，限 A-Z a-z 0-9 _ -，以字母或数字开头"
                                "（1-64 characters of A-Z a-z 0-9 _ -, starting with a letter or digit）"]})
    if kind not in CLIENT_KINDS:
        raise Invalid(f"未知的客户端类型 {kind}（unknown client kind {kind!r}）",
                      {"kind": [f"应为 {' 或 '.join(CLIENT_KINDS)}（one of {', '.join(CLIENT_KINDS)}）"]})
    unit = _unit(session, unit_code)
    if session.scalar(sa.select(ApiClient.id).where(ApiClient.name == name)) is not None:
        raise Conflict(f"客户端 {name} 已存在（client {name!r} already exists）", {"name": ["名称已被使用（already taken）"]})
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    client = ApiClient(name=name, kind=kind, unit_id=unit.id if unit else None, unit=unit,
                       callback_url=_check_callback_url(callback_url), api_key_hash=hash_api_key(api_key),
                       is_active=True, created_at=now, updated_at=now)
    session.add(client)
    session.flush()
    secret = _add_secret(session, client, now)
    session.flush()
    return client, secret, api_key


def get_client(session: Session, name: str) -> ApiClient:
    client = session.scalar(sa.select(ApiClient).where(ApiClient.name == name))
    if client is None:
        raise NotFound(f"unknown client {name!r}")
    return client


def get_client_by_id(session: Session, client_id: int) -> ApiClient:
    client = session.get(ApiClient, client_id) if 0 < client_id <= 2**31 - 1 else None
    if client is None:
        raise NotFound(f"未找到客户端 {client_id}（client {client_id} not found）")
    return client


def list_clients(session: Session) -> list[ApiClient]:
    return list(session.scalars(sa.select(ApiClient).order_by(ApiClient.name)))


def rotate_secret(session: Session, client: ApiClient, *, grace: timedelta, now: datetime) -> str:
    """A new current secret; the ones current until now stay accepted for `grace`. Returns the new secret."""
    if grace < timedelta(0) or grace > MAX_GRACE:
        raise Invalid("宽限期应在 0 到 30 天之间（the grace period must be between 0 and 30 days）",
                      {"grace_hours": ["0 … 720"]})
    until = now + grace
    session.execute(sa.update(ClientSecret)
                    .where(ClientSecret.client_id == client.id,
                           sa.or_(ClientSecret.expires_at.is_(None), ClientSecret.expires_at > until))
                    .values(expires_at=until))
    secret = _add_secret(session, client, now)
    client.updated_at = now
    session.flush()
    session.expire(client, ["secrets"])
    return secret


def deactivate_client(session: Session, client: ApiClient, *, now: datetime) -> ApiClient:
    """Stop accepting the client's signatures and key; its pending outbound messages wait."""
    client.is_active = False
    client.updated_at = now
    session.flush()
    return client


def live_keys(session: Session, client: ApiClient, now: datetime) -> list[bytes]:
    """HMAC keys of the client's secrets still accepted at `now`, newest first."""
    rows = session.scalars(sa.select(ClientSecret)
                           .where(ClientSecret.client_id == client.id,
                                  sa.or_(ClientSecret.expires_at.is_(None), ClientSecret.expires_at > now))
                           .order_by(ClientSecret.id.desc()))
    return [secret_key(unseal(row.ciphertext, client.id)) for row in rows]


# Built once: Open311 calls it on every request.
_CLIENT_BY_KEY = sa.select(ApiClient).where(ApiClient.api_key_hash == sa.bindparam("key_hash"))


def authenticate_api_key(session: Session, raw_key: str, *, kind: str) -> ApiClient:
    """The active client of `kind` holding this API key, else Forbidden (one answer for every cause)."""
    if not raw_key or len(raw_key) > 200:
        raise Forbidden("api_key 无效（a valid api_key is required）")
    client = session.scalar(_CLIENT_BY_KEY, {"key_hash": hash_api_key(raw_key)})
    if client is None or not client.is_active or client.kind != kind:
        raise Forbidden("api_key 无效（a valid api_key is required）")
    return client
