"""Standard Webhooks 1.0 signatures (symmetric `v1`). Pure: no Flask, no database.

The signed content is `{webhook-id}.{webhook-timestamp}.{payload}`, the MAC is HMAC-SHA256 keyed
with the base64-decoded part of a `whsec_…` secret, and `webhook-signature` carries one or more
space-separated `v1,<base64 MAC>` entries (several during a key rotation). The same functions sign
what we send and verify what we receive.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for at least 24
TOLERANCE = timedelta(minutes=5)
HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE = "webhook-id", "webhook-timestamp", "webhook-signature"
# The id is part of the signed content, so it must not contain the "." delimiter (spec: not user controlled).
_ID = re.compile(r"^[A-Za-z0-9_:\-]{1,255}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
MAX_SIGNATURES = 10


class SignatureError(Exception):
    """The request is not authentically signed; `reason` says why (safe to show the sender)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_secret() -> str:
    """A fresh random signing secret, serialized as `whsec_<base64>`."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_…` secret (the prefix is optional)."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a signing secret is base64 after the whsec_ prefix") from None
    if not key:
        raise ValueError("empty signing secret")
    return key


def signed_content(msg_id: str, timestamp: int | str, payload: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + payload


def sign(key: bytes, msg_id: str, timestamp: int | str, payload: bytes) -> str:
    """One signature entry: `v1,<base64 HMAC-SHA256>`."""
    mac = hmac.new(key, signed_content(msg_id, timestamp, payload), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def unix_seconds(instant: datetime) -> int:
    return int(instant.astimezone(UTC).timestamp())


def sign_headers(keys: Iterable[bytes], msg_id: str, instant: datetime, payload: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every key given (current first)."""
    timestamp = unix_seconds(instant)
    signatures = " ".join(sign(key, msg_id, timestamp, payload) for key in keys)
    if not signatures:
        raise ValueError("no key to sign with")
    return {HEADER_ID: msg_id, HEADER_TIMESTAMP: str(timestamp), HEADER_SIGNATURE: signatures}


@dataclass(frozen=True)
class SignedHeaders:
    """The webhook headers of a request, checked for shape and freshness (not yet for authenticity)."""

    msg_id: str
    timestamp: int
    macs: tuple[bytes, ...]


def read_headers(headers: Mapping[str, str], now: datetime, tolerance: timedelta = TOLERANCE) -> SignedHeaders:
    """Parse and check the three headers and the timestamp tolerance, else SignatureError."""
    msg_id = (headers.get(HEADER_ID) or "").strip()
    stamp = (headers.get(HEADER_TIMESTAMP) or "").strip()
    signature = (headers.get(HEADER_SIGNATURE) or "").strip()
    if not (msg_id and stamp and signature):
        raise SignatureError("缺少 webhook-id、webhook-timestamp 或 webhook-signature 请求头"
                             "（missing webhook-id, webhook-timestamp or webhook-signature header）")
    if not _ID.match(msg_id):
        raise SignatureError("webhook-id 应为 1-255 个字符，限 A-Z a-z 0-9 _ : -"
                             "（webhook-id must be 1-255 characters of A-Z a-z 0-9 _ : -）")
    if not _TIMESTAMP.match(stamp):
        raise SignatureError("webhook-timestamp 应为整数 Unix 秒（webhook-timestamp must be integer Unix seconds）")
    timestamp = int(stamp)
    if abs(timestamp - now.astimezone(UTC).timestamp()) > tolerance.total_seconds():
        minutes = int(tolerance.total_seconds() // 60)
        raise SignatureError(f"webhook-timestamp 与服务器时间相差超过 {minutes} 分钟"
                             f"（webhook-timestamp is more than {minutes} minutes from the server's time）")
    macs = []
    for entry in signature.split(" ")[:MAX_SIGNATURES]:
        version, _, value = entry.partition(",")
        if version != "v1" or not value:
            continue  # v1a (asymmetric) or an unknown version: not ours to check
        try:
            macs.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not macs:
        raise SignatureError("webhook-signature 中没有 v1 签名（webhook-signature holds no v1 signature）")
    return SignedHeaders(msg_id, timestamp, tuple(macs))


def matches(signed: SignedHeaders, keys: Iterable[bytes], payload: bytes) -> bool:
    """Whether any v1 signature was made with any of `keys` over this payload (constant-time compares)."""
    content = signed_content(signed.msg_id, signed.timestamp, payload)
    found = False
    for key in keys:
        expected = hmac.new(key, content, hashlib.sha256).digest()
        for mac in signed.macs:
            # No early exit: the time taken does not depend on which entry matched.
            found |= hmac.compare_digest(expected, mac)
    return found


def verify(headers: Mapping[str, str], payload: bytes, keys: Iterable[bytes], now: datetime,
           tolerance: timedelta = TOLERANCE) -> SignedHeaders:
    """Check a request signed with one of `keys`; returns its headers, else SignatureError."""
    signed = read_headers(headers, now, tolerance)
    if not matches(signed, keys, payload):
        raise SignatureError("签名不匹配（no signature matches）")
    return signed
