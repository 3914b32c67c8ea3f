"""POST requests: check the form, place the request, create its event (source open311) and keep the extras."""
from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..events import intake as events
from ..events.catalog import CategoryCache
from ..events.models import Category, Event
from ..infra.errors import BadRequest
from ..sla.engine import SlaEngine
from ..territory.locator import Locator
from ..territory.models import Unit, in_subtree
from .attributes import Answer, attributes_for, check_answers, raw_answers
from .models import Open311Attribute, Open311Request
from .service import get_service, resolve_deadlines, service_notice

logger = logging.getLogger(__name__)

SOURCE = "open311"
MAX_DESCRIPTION = 4000
# The locator's reason for a point that lies outside every boundary of the territory.
OUTSIDE_TERRITORY = "point_outside_territory"

# C0 controls (NUL included) and DEL; tab, LF and CR are text.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()\-]{4,30}$")
_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass
class NewRequest:
    """A checked POST requests form."""

    service_code: str
    lat: float | None = None
    lon: float | None = None
    address_string: str | None = None
    address_id: str | None = None
    description: str | None = None
    media_url: str | None = None
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    device_id: str | None = None
    account_id: str | None = None
    answers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def resident_name(self) -> str | None:
        parts = [p for p in (self.first_name, self.last_name) if p]
        if not parts:
            return None
        if _CJK.search("".join(parts)):  # 张 + 三 → 张三: family name first, no space
            return "".join(p for p in (self.last_name, self.first_name) if p)
        return " ".join(parts)


def parse_new_request(form: Mapping[str, Sequence[str]]) -> NewRequest:
    """The POST form checked field by field; BadRequest lists every problem (empty means absent)."""
    problems: dict[str, list[str]] = {}

    def text(name: str, limit: int, *, multiline: bool = False) -> str | None:
        values = form.get(name) or []
        value = _newlines((values[0] if values else "").strip())
        if not value:
            return None
        if _CONTROL.search(value) or not _encodable(value):
            problems[name] = ["含有不可见的控制字符（contains control characters）"]
        elif not multiline and ("\n" in value or "\r" in value):
            problems[name] = ["不能换行（no line breaks）"]
        elif len(value) > limit:
            problems[name] = [f"最多 {limit} 个字符（at most {limit} characters）"]
        return value

    service_code = text("service_code", 64)
    if service_code is None:
        problems["service_code"] = ["缺少 service_code（service_code is required）"]
    lat, lon = text("lat", 40), text("long", 40)
    request = NewRequest(
        service_code=service_code or "",
        address_string=text("address_string", 300),
        address_id=text("address_id", 64),
        description=text("description", MAX_DESCRIPTION, multiline=True),
        media_url=text("media_url", 1000),
        email=text("email", 254),
        phone=text("phone", 32),
        first_name=text("first_name", 32),
        last_name=text("last_name", 32),
        device_id=text("device_id", 100),
        account_id=text("account_id", 100),
        answers={code: [_newlines(v) for v in values] for code, values in raw_answers(form).items()},
    )
    if (lat is None) != (lon is None):
        problems["long" if lat is not None else "lat"] = ["lat 与 long 须同时提供（give both lat and long）"]
    elif lat is not None and lon is not None:
        request.lat = _coordinate(lat, 90, "lat", problems)
        request.lon = _coordinate(lon, 180, "long", problems)
    if lat is None and lon is None and request.address_string is None and request.address_id is None:
        problems["location"] = ["须提供位置：lat 与 long，或 address_string，或 address_id（a location is required）"]
    if request.media_url is not None and "media_url" not in problems:
        parts = urlsplit(request.media_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems["media_url"] = ["应为 http(s) 网址（must be an http or https URL）"]
    if request.email is not None and "email" not in problems and not _EMAIL.match(request.email):
        problems["email"] = ["邮箱格式不正确（not a valid email address）"]
    if request.phone is not None and "phone" not in problems and not _PHONE.match(request.phone):
        problems["phone"] = ["电话号码格式不正确（not a valid phone number）"]
    for code, values in request.answers.items():
        if any(_CONTROL.search(v) or not _encodable(v) for v in values):
            problems[f"attribute[{code}]"] = ["含有不可见的控制字符（contains control characters）"]
    if problems:
        raise BadRequest("请求参数有误（the request is invalid）", problems)
    return request


def _newlines(value: str) -> str:
    """Line breaks as LF only: browsers send CRLF, and XML would read a CR back as LF anyway."""
    return value.replace("\r\n", "\n").replace("\r", "\n")


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _coordinate(value: str, bound: float, name: str, problems: dict[str, list[str]]) -> float | None:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not -bound <= number <= bound:  # also false for NaN
        problems[name] = [f"应为 -{bound:g} 到 {bound:g} 之间的 WGS84 坐标（a WGS84 coordinate in [-{bound:g}, {bound:g}]）"]
        return None
    return number


def _has_boundaries(session: Session) -> bool:
    """Whether any unit has a boundary: without one, no point can be told to lie outside the territory."""
    return session.scalar(sa.select(Unit.id).where(Unit.boundary.is_not(None)).limit(1)) is not None


def place_request(session: Session, request: NewRequest, locator: Locator, district: Unit | None,
                  fallback_unit: Unit | None = None) -> tuple[Unit, Unit | None, str | None]:
    """(located unit, grid, triage reason): the point through the locator, else address_id as a unit
    code, else the client's own fallback unit or the district (属地兜底), flagged for triage.

    A point inside the territory but in no grid goes to the lowest unit whose boundary holds it
    (属地兜底, flagged); a point outside every boundary is refused (400): unlike a 12345 petition,
    which the hotline has already accepted and which is kept and flagged, a resident can correct it.
    """
    if request.lat is not None and request.lon is not None:
        placement = locator.locate(request.lon, request.lat)
        if placement.fallback == OUTSIDE_TERRITORY and _has_boundaries(session):
            raise BadRequest(
                "位置不在本平台服务的辖区内（the location is outside the jurisdiction）",
                {"location": [f"坐标 lat {request.lat:g}, long {request.lon:g} 不在本辖区任何单位的边界内，请核对位置"
                              "（the point lies outside every boundary of the jurisdiction）"]})
        located = session.get(Unit, placement.unit_id)
        if located is None:  # the territory changed under the cached index
            raise BadRequest("位置暂时无法定位，请稍后重试（the territory is being updated; retry）")
        if district is not None and not in_subtree(located.path, district.path):
            raise BadRequest("位置不在该 jurisdiction_id 的辖区内（the location is outside this jurisdiction）",
                             {"location": ["不在该 jurisdiction_id 的辖区内（outside the jurisdiction）"]})
        return located, (located if placement.grid_id is not None else None), placement.fallback
    reason = "address_only"
    if request.address_id is not None:
        unit = session.scalar(sa.select(Unit).where(Unit.code == request.address_id))
        if unit is not None and (district is None or in_subtree(unit.path, district.path)):
            if unit.level == "grid":
                return unit, unit, None
            return unit, None, "address_id_not_a_grid"
        reason = "address_id_unknown"
    if fallback_unit is not None and (district is None or in_subtree(fallback_unit.path, district.path)):
        return fallback_unit, (fallback_unit if fallback_unit.level == "grid" else None), reason
    fallback = district or session.get(Unit, locator.fallback_unit())
    if fallback is None:
        raise BadRequest("辖区尚未配置（the territory is empty）")
    return fallback, None, reason


def _staff_description(category: Category, request: NewRequest, answers: Sequence[Answer],
                       attributes: Sequence[Open311Attribute]) -> str:
    """What the people handling the event read: the reporter's text, then the answers to the questions."""
    text = request.description or f"（通过 Open311 反映“{category.name}”，未填写描述）"
    if answers:
        questions = {a.code: a.description for a in attributes}
        text += "\n【附加信息】" + "；".join(f"{questions[a.code]}{a.shown}" for a in answers)
    return text


def create_request(session: Session, client_id: int | None, request: NewRequest, *, locator: Locator, sla: SlaEngine,
                   now: datetime, zone: ZoneInfo, district: Unit | None = None, fallback_unit: Unit | None = None,
                   categories: CategoryCache | None = None) -> tuple[Event, Open311Request]:
    """Create the event behind a POST requests (source open311), routed like any other; never commits."""
    category = get_service(session, request.service_code)
    attributes = attributes_for(session, [category.id]).get(category.id, [])
    answers = check_answers(attributes, request.answers, zone)
    located, grid, triage = place_request(session, request, locator, district, fallback_unit)
    report = events.Report(
        category_code=category.code, description=_staff_description(category, request, answers, attributes),
        lat=request.lat, lon=request.lon, address=request.address_string or "",
        resident_name=request.resident_name, resident_phone=request.phone,
    )
    event = events.report_from_channel(
        session, report, source=SOURCE, located=located, grid=grid, triage_reason=triage, sla=sla, now=now,
        categories=categories, details={"client_id": client_id},
    )
    extra = Open311Request(
        event_id=event.id, client_id=client_id, description=request.description, address_id=request.address_id,
        email=request.email, device_id=request.device_id, account_id=request.account_id,
        attributes={a.code: a.value for a in answers}, media_url=request.media_url,
        token=secrets.token_urlsafe(16), created_at=now,
    )
    session.add(extra)
    session.flush()
    logger.info("open311 request %s created by client %s (%s → %s%s)", event.id, client_id, category.code,
                located.code, f", triage: {triage}" if triage else "")
    return event, extra


def created_view(session: Session, event: Event, extra: Open311Request, zone: ZoneInfo) -> dict[str, Any]:
    """The POST requests answer: the id (never a token: requests are created synchronously)."""
    # An Open311 request is received when it is created, so its received_at is the edge's `now`.
    deadline = resolve_deadlines(session, [event.id]).get(event.id)
    return {"service_request_id": str(event.id), "service_notice": service_notice(event, deadline, zone, event.received_at),
            "account_id": extra.account_id}
