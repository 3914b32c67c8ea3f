"""Small secrets sealed at rest: AES-256-GCM under a key derived from SECRET_KEY by HKDF.

Each use names its `purpose` (a separate HKDF key per purpose) and binds the ciphertext to its row
through `aad` (e.g. "user:42"), so a sealed value copied onto another row or into another column
does not open. Older keys (SECRET_KEY_FALLBACKS) still decrypt, so SECRET_KEY can be rotated.
"""
from __future__ import annotations

import base64
import functools
import secrets
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "v1."
_NONCE_BYTES = 12


@functools.lru_cache(maxsize=32)
def _aead(app_secret: str, purpose: str) -> AESGCM:
    info = f"grid-service/{purpose}/v1".encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"grid-service", info=info).derive(app_secret.encode())
    return AESGCM(key)


def encrypt(app_secret: str, plaintext: str, *, purpose: str, aad: str = "") -> str:
    """Printable AES-GCM ciphertext of `plaintext` ("v1." + base64url(nonce ‖ ciphertext ‖ tag))."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = _aead(app_secret, purpose).encrypt(nonce, plaintext.encode(), aad.encode())
    return VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()


def decrypt(app_secrets: str | Iterable[str], token: str, *, purpose: str, aad: str = "") -> str:
    """The plaintext of `encrypt`, trying each key in turn; ValueError when none opens it."""
    if not token.startswith(VERSION):
        raise ValueError("unknown ciphertext format")
    try:
        blob = base64.urlsafe_b64decode(token[len(VERSION):])
    except (ValueError, TypeError):
        raise ValueError("malformed ciphertext") from None
    keys = [app_secrets] if isinstance(app_secrets, str) else list(app_secrets)
    for app_secret in keys:
        try:
            return _aead(app_secret, purpose).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad.encode()).decode()
        except InvalidTag:
            continue
    raise ValueError("no configured SECRET_KEY decrypts this value")
