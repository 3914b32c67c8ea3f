"""GeoReport v2 on the wire: W3C dates, XML built with ElementTree, JSON by the Spark convention, error lists.

One Python value renders to both formats: a dict is an element per key, a list is an element per
item named after its container (`<services><service>…`), None is an empty element in XML and null
in JSON. Only ever serialized here, never parsed: requests to this endpoint are form-encoded.
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response

from ..timeutil import as_utc

SPEC_URL = "http://wiki.open311.org/GeoReport_v2"
FORMATS: tuple[str, ...] = ("json", "xml")
MIMETYPES = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'

# The element of each item of a list, by the list's element name (the Spark convention's pairs).
ITEM_NAMES = {
    "services": "service", "service_requests": "request", "errors": "error", "attributes": "attribute",
    "values": "value", "endpoints": "endpoint", "formats": "format",
}

# Characters XML 1.0 cannot carry at all (C0 controls but tab, LF, CR; U+FFFE/U+FFFF).
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


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


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _XML_ILLEGAL.sub("", str(value))


def element(name: str, value: Any) -> ET.Element:
    """The XML element for `value` under `name`."""
    node = ET.Element(name)
    if isinstance(value, dict):
        for key, item in value.items():
            node.append(element(key, item))
    elif isinstance(value, (list, tuple)):
        item_name = ITEM_NAMES[name]
        for item in value:
            node.append(element(item_name, item))
    elif value is not None:
        node.text = _text(value)
    return node


def xml_bytes(root: str, value: Any) -> bytes:
    """A whole XML document: the declaration, then `value` as the root element `root`."""
    return (XML_DECLARATION + ET.tostring(element(root, value), encoding="unicode")).encode("utf-8")


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def document(fmt: str, root: str, value: Any, status: int = 200) -> Response:
    """A response holding `value` in `fmt`; `root` names the XML root element (JSON has none)."""
    body = xml_bytes(root, value) if fmt == "xml" else json_bytes(value)
    return Response(body, status=status, content_type=MIMETYPES[fmt])


def error_document(fmt: str, status: int, descriptions: list[str]) -> Response:
    """The GeoReport error list: one {code, description} per problem, code = the HTTP status."""
    return document(fmt, "errors", [{"code": status, "description": d} for d in descriptions], status)


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
