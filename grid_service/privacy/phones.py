"""Citizens' phone numbers: one canonical form, sealed at rest, found by a keyed blind index, shown masked.

A number is stored three ways, never in clear: AES-256-GCM ciphertext (grid_service.infra.crypto, purpose
"resident-phone"), an HMAC-SHA256 blind index under its own key (equal numbers, equal index: "every
petition from this caller" is one indexed lookup, yet the table alone does not tell the number), and
the masked form everyone is shown (138****1234). Both keys are derived from SECRET_KEY; ciphertexts
open under SECRET_KEY_FALLBACKS too, and a search looks for the index under every key, so rotating
SECRET_KEY loses nothing; `flask --app wsgi phones reindex` then moves old rows onto the new key.

Pure: no Flask, no database. Also the log filter that keeps numbers out of every log line.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
import unicodedata
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..infra import crypto

CIPHER_PURPOSE = "resident-phone"
INDEX_PURPOSE = "resident-phone-index"
# Event columns, in the order `columns` fills them.
COLUMNS = ("resident_phone_enc", "resident_phone_index", "resident_phone_masked")
MIN_DIGITS, MAX_DIGITS = 3, 20

_SEPARATORS = re.compile(r"[\s\-().]")
_MOBILE = re.compile(r"1[3-9]\d{9}")


def normalize(raw: str) -> str:
    """The canonical digits of a number: separators and the +86 / 0086 / 86 country code dropped.

    "+86 138-1234-1234" → "13812341234"; "+86 472 1234567" (a landline without its trunk 0) →
    "04721234567"; another country's number keeps its code behind "00". ValueError if it is not one.
    """
    text = _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))  # full-width digits too
    international = text.startswith(("+", "00"))
    text = text[1:] if text.startswith("+") else text[2:] if international else text
    if not (text.isascii() and text.isdigit()):
        raise ValueError("电话号码只能包含数字和分隔符")
    if international or (len(text) == 13 and text.startswith("86") and _MOBILE.fullmatch(text[2:])):
        if text.startswith("86"):
            text = text[2:]
            if not _MOBILE.fullmatch(text) and not text.startswith("0"):
                text = "0" + text
        else:
            text = "00" + text
    if not MIN_DIGITS <= len(text) <= MAX_DIGITS:
        raise ValueError(f"电话号码应为 {MIN_DIGITS} 到 {MAX_DIGITS} 位数字")
    return text


def mask(digits: str) -> str:
    """What people are shown: 138****1234 for 11 digits or more; shorter numbers keep less (never half)."""
    if len(digits) >= 11:
        return f"{digits[:3]}****{digits[-4:]}"
    if len(digits) >= 8:
        return f"****{digits[-4:]}"
    if len(digits) >= 5:
        return f"****{digits[-2:]}"
    return "****"


@functools.lru_cache(maxsize=8)
def _index_key(secret: str) -> bytes:
    info = f"grid-service/{INDEX_PURPOSE}/v1".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"grid-service", info=info).derive(secret.encode())


def blind_index(secret: str, digits: str) -> str:
    """HMAC-SHA256 (hex) of the canonical digits under the index key derived from `secret`."""
    return hmac.new(_index_key(secret), digits.encode(), hashlib.sha256).hexdigest()


def blind_indexes(secrets: Iterable[str], digits: str) -> list[str]:
    """The index under each key (current first): what a search must look for while old keys linger."""
    return [blind_index(secret, digits) for secret in secrets]


def seal(secret: str, digits: str) -> str:
    """The ciphertext stored for `digits`."""
    return crypto.encrypt(secret, digits, purpose=CIPHER_PURPOSE)


def unseal(secrets: str | Iterable[str], token: str) -> str:
    """The digits a ciphertext holds, under the current key or a fallback; ValueError if none opens it."""
    return crypto.decrypt(secrets, token, purpose=CIPHER_PURPOSE)


def columns(raw: str | None, secret: str) -> dict[str, str | None]:
    """The three stored columns for a number as received (all None without one); ValueError if malformed."""
    if raw is None or not raw.strip():
        return dict.fromkeys(COLUMNS)
    digits = normalize(raw)
    return dict(zip(COLUMNS, (seal(secret, digits), blind_index(secret, digits), mask(digits))))


# ---------------------------------------------------------------- numbers in free text and in logs

# A mobile number (optionally +86, optionally split 3-4-4) or a landline with its area code, not
# inside a longer run of digits (event numbers, unit codes, timestamps are longer or shorter).
_MOBILE_IN_TEXT = re.compile(r"(?<![\d+])(?:(?:\+|00)?86[- ]?)?(1[3-9]\d)[- ]?\d{4}[- ]?(\d{4})(?!\d)")
_LANDLINE_IN_TEXT = re.compile(r"(?<![\d+(.])(?:(?:\+|00)86[- ]?\(?0?|\(?0)[1-9]\d{1,2}\)?[- ]?\d{3,4}[- ]?\d{4}(?!\d)")


def mask_text(text: str) -> str:
    """`text` with every phone-number-like digit run masked."""
    text = _MOBILE_IN_TEXT.sub(lambda m: f"{m.group(1)}****{m.group(2)}", text)
    return _LANDLINE_IN_TEXT.sub("****", text)


def contains_phone(text: str) -> bool:
    return bool(_MOBILE_IN_TEXT.search(text) or _LANDLINE_IN_TEXT.search(text))


class PhoneMaskingFilter(logging.Filter):
    """Masks phone numbers in a record's message (its arguments merged in) and its traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: the handler reports it, as it would without us
            return True
        if contains_phone(message):
            record.msg, record.args = mask_text(message), None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if contains_phone(text):
                record.exc_text = mask_text(text)  # formatters use exc_text when it is set
        return True


_installed_filter: PhoneMaskingFilter | None = None


def install_log_masking() -> PhoneMaskingFilter:
    """Run the filter on every log record this process creates, whichever logger or handler it goes to.

    A filter on a logger misses its children's records and one on a handler misses handlers added
    later (gunicorn's, a test's), so it wraps the record factory instead. Idempotent.
    """
    global _installed_filter
    if _installed_filter is None:
        log_filter = PhoneMaskingFilter()
        make_record = logging.getLogRecordFactory()

        def masked_record(*args, **kwargs) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            log_filter.filter(record)
            return record

        logging.setLogRecordFactory(masked_record)
        _installed_filter = log_filter
    return _installed_filter
