"""GeoReport v2 documents: XML built with ElementTree, JSON by the Spark convention, error lists.

One Python value renders to both formats: a dict is an element per key, a list is an element per
item named after its container (`<services><service>…`), None is an empty element in XML and null
in JSON. Only ever serialized here, never parsed: requests to this endpoint are form-encoded.
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

from flask import Response

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
