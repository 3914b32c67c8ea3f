"""Helpers the test modules share: constants, the calls a test makes as a user or a client, small builders.

Fixtures live in conftest.py (pytest finds them there); what a test imports lives here, once.
"""
from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from grid_service.escalation.sweeper import sweep
from grid_service.infra import webhooks
from grid_service.infra.db import db

ROOT = Path(__file__).resolve().parent.parent  # the repository: docs/, wsgi.py, where subprocesses start
DATA = Path(__file__).resolve().parent / "data"
XIHU = DATA / "xihu_district.geojson"
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # Monday 2026-03-02 09:00 in Shanghai


def sh(text: str) -> datetime:
    """A Shanghai wall time as an aware UTC instant."""
    return datetime.fromisoformat(text + "+08:00").astimezone(UTC)


# ---------------------------------------------------------------- territory


def rect(lon0: float, lat0: float, lon1: float, lat1: float) -> dict[str, Any]:
    """A GeoJSON Polygon: the rectangle between two corners."""
    ring = [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]
    return {"type": "Polygon", "coordinates": [ring]}


def square(lon: float, lat: float, size: float) -> dict[str, Any]:
    """A GeoJSON Polygon: the square with south-west corner (lon, lat)."""
    return rect(lon, lat, lon + size, lat + size)


def xihu() -> dict:
    """西湖区 (330106) from tests/data: 2 streets, 4 communities, 9 grids; children come before their parents."""
    return json.loads(XIHU.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- events, through the API


def report(actor, **overrides):
    """A new event reported by `actor` at g111 (201 checked): its JSON."""
    body = {"category_code": "01001", "description": "小区门口垃圾堆放", "lat": 40.005, "lon": 110.005} | overrides
    response = actor.post("/api/v1/events", json=body)
    assert response.status_code == 201, response.json
    return response.json


def act(actor, event_id, action, **body):
    """A workflow action on an event as `actor`: the response, unchecked (refusals are tested too)."""
    return actor.post(f"/api/v1/events/{event_id}/actions", json={"action": action} | body)


def run_sweep(app, at: str):
    """One sweeper pass at the Shanghai wall time `at`, in its own app context; its summary."""
    with app.app_context():
        return sweep(db.session, app.extensions["sla"], sh(at)).summary()


# ---------------------------------------------------------------- the hotline (12345)


PETITIONS = "/api/v1/hotline/petitions"
_ids = itertools.count(1)


class Hotline:
    """A hotline vendor: signs its requests with its secret, at the instant the test sets."""

    def __init__(self, client, name: str, secret: str, edge_clock) -> None:
        self.client, self.name, self.secret, self.clock = client, name, secret, edge_clock
        self.now = T0 + timedelta(minutes=10)
        self.clock.set(self.now)

    def at(self, instant) -> Hotline:
        self.now = instant
        self.clock.set(instant)
        return self

    def headers(self, payload: bytes, *, msg_id: str | None = None, ts: int | None = None, secrets=None,
                name: bool = True) -> dict[str, str]:
        msg_id = msg_id or f"msg_{next(_ids)}"
        ts = webhooks.unix_seconds(self.now) if ts is None else ts
        keys = [webhooks.secret_key(s) for s in (secrets or [self.secret])]
        out = {"webhook-id": msg_id, "webhook-timestamp": str(ts),
               "webhook-signature": " ".join(webhooks.sign(k, msg_id, ts, payload) for k in keys)}
        if name:
            out["webhook-client"] = self.name
        return out

    def post(self, path: str, body, **kw):
        raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        headers = self.headers(raw, **kw)
        return self.client.post(path, data=raw, headers=headers | {"Content-Type": "application/json"})

    def get(self, path: str, **kw):
        return self.client.get(path, headers=self.headers(f"GET {path}".encode(), **kw))

    def petition(self, number: str = "GD0001", *, msg_id: str | None = None, name: bool = True, **overrides):
        return self.post(PETITIONS, petition_body(number, **overrides), msg_id=msg_id, name=name)


def petition_body(number: str = "GD0001", **overrides) -> dict:
    body = {"petition_number": number, "received_at": "2026-03-02T08:55:00+08:00", "channel": "phone",
            "citizen_name": "张女士", "citizen_phone": "13800001234", "content": "小区门口垃圾堆放三天无人清运",
            "category_code": "HJ-01", "urgency": "normal", "location": {"lat": 40.005, "lon": 110.005}}
    return body | overrides


# ---------------------------------------------------------------- Open311 GeoReport v2


OPEN311_BASE = "/open311/v2"


def xml_of(response) -> ET.Element:
    """The parsed body of an XML answer, after checking the declaration and the content type."""
    assert response.content_type == "text/xml; charset=utf-8"
    body = response.get_data()
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(body)


def new_request(client, api_key, fmt="json", **overrides) -> str:
    """POST a service request (None drops a field); its service_request_id."""
    form = {"api_key": api_key, "service_code": "01001", "lat": "40.005", "long": "110.005",
            "description": "小区门口垃圾堆放，气味很大", "attribute[AMOUNT]": "some"} | overrides
    response = client.post(f"{OPEN311_BASE}/requests.{fmt}", data={k: v for k, v in form.items() if v is not None})
    assert response.status_code == 200, response.get_data(as_text=True)
    if fmt == "json":
        return response.json[0]["service_request_id"]
    return xml_of(response).findtext("request/service_request_id")


# ---------------------------------------------------------------- migrations


def base_rows(conn) -> None:
    """A district and a category (major 01, minor 01001), written in SQL into a migrated schema."""
    conn.execute(sa.text("INSERT INTO units (id, code, name, level, path, created_at, updated_at) "
                         "VALUES (1, '150299', 'd', 'district', '/150299/', '2026-01-01', '2026-01-01')"))
    conn.execute(sa.text("INSERT INTO categories (id, code, name, level, parent_id, description, keywords, is_active, sort_order) "
                         "VALUES (1, '01', 'c', 'major', NULL, '', '', true, 0), (2, '01001', 'm', 'minor', 1, '', '', true, 0)"))


# ---------------------------------------------------------------- photos


def photo(fmt: str = "PNG", tag: str = "", size: tuple[int, int] = (32, 24), pad: int = 0) -> bytes:
    """A real image that decodes (PNG, JPEG or WEBP). `tag` picks its colour and, in a PNG or JPEG, is
    written into it as text (`photo-of-<tag>`, then `pad` more bytes), so photos with different tags
    differ, can be found in a response and can be made as large as a test needs."""
    import hashlib
    import io

    from PIL import Image, PngImagePlugin

    digest = hashlib.sha256(tag.encode()).digest()
    image = Image.new("RGB", size, tuple(digest[:3]))
    text = f"photo-of-{tag}" + "." * pad
    out = io.BytesIO()
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", text)
        image.save(out, "PNG", pnginfo=info)
    elif fmt == "JPEG":
        image.save(out, "JPEG", comment=text.encode())
    else:
        image.save(out, fmt)
    return out.getvalue()
