"""GeoReport v2 values: W3C dates (written and read) and the redaction of what residents may not see.

How a value becomes an XML or JSON document is the edge's (web/open311/documents.py).
"""
from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from ..infra.timeutil import as_utc

SPEC_URL = "http://wiki.open311.org/GeoReport_v2"


def w3c(instant: datetime | None, zone: ZoneInfo) -> str | None:
    """An instant as W3C datetime with its offset in `zone`, to the second: 2026-03-02T09:00:00+08:00."""
    if instant is None:
        return None
    return instant.astimezone(zone).isoformat(timespec="seconds")


# An unencoded '+' in a query string arrives as a space: "2026-03-02T09:00:00 08:00".
_SPACE_OFFSET = re.compile(r"^(.*T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


def parse_w3c(text: str, zone: ZoneInfo) -> datetime | None:
    """A UTC instant from a W3C/ISO 8601 date or datetime, else None; no offset means `zone`'s local time."""
    text = text.strip()
    match = _SPACE_OFFSET.match(text)
    if match:
        text = f"{match.group(1)}+{match.group(2)}"
    if not text[:4].isdigit():
        return None
    if re.fullmatch(r"\d{4}(-\d{2})?", text):  # W3C's coarser forms: YYYY and YYYY-MM
        text += "-01-01" if len(text) == 4 else "-01"
    try:
        return as_utc(datetime.fromisoformat(text), zone)
    except (ValueError, OverflowError):
        return None


# ---------------------------------------------------------------- privacy

# Mainland mobile numbers (optionally +86) and landlines with an area code; emails.
_PHONE = re.compile(r"(?<![\d])(?:\+?86[- ]?)?(1[3-9]\d)[- ]?\d{4}[- ]?(\d{4})(?![\d])")
_LANDLINE = re.compile(r"(?<![\d])0\d{2,3}-\d{7,8}(?![\d])")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def redact(text: str | None) -> str | None:
    """Free text with phone numbers and email addresses masked (public output never carries contacts)."""
    if not text:
        return text
    text = _PHONE.sub(lambda m: f"{m.group(1)}****{m.group(2)}", text)
    text = _LANDLINE.sub("****", text)
    return _EMAIL.sub("***@***", text)
