"""GeoReport v2 over the event services: discovery, services from categories, requests from events.

Everything here takes the session (and `now`, the zone) and returns plain values that
the edge (web/open311/documents.py) renders as XML or JSON. Creating requests is in `intake.py`.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..events.catalog import VERSION_KEY as CATALOG_VERSION_KEY
from ..events.models import Category, Event, EventHistory
from ..events.states import FINAL_STATES, OPEN_STATES
from ..infra.db import MAX_ID
from ..infra.errors import BadRequest, NotFound
from ..infra.state import ServiceState
from ..sla.models import Clock
from ..territory.models import Unit, subtree_unit_ids
from .attributes import attributes_for
from .formats import SPEC_URL, parse_w3c, redact, w3c
from .models import LIST_DATATYPES, Open311Attribute, Open311Request

logger = logging.getLogger(__name__)

# Sources whose events the public list shows. Hotline petitions stay private by default: the caller
# did not agree to publication and the hotline answers them on its own channel.
DEFAULT_PUBLIC_SOURCES: tuple[str, ...] = ("open311", "grid_worker", "supervisor")
MAX_RESULTS = 1000
MAX_SPAN = timedelta(days=90)
FORMATS_OFFERED = ["text/xml", "application/json"]

STATE_NOTES = {
    "reported": "已受理，等待立案",
    "registered": "已立案，等待派遣",
    "dispatched": "已派遣至处置部门",
    "in_progress": "正在处置",
    "resolved": "已处置，等待核查",
    "suspended": "暂缓办理（挂账）",
    "closed": "已办结",
    "rejected": "不予受理",
    "merged": "与其他诉求合并办理",
    "cancelled": "已撤销",
}


def storable(text: str) -> bool:
    """Whether a database can compare against `text` (PostgreSQL refuses NUL in a string)."""
    return "\x00" not in text


# ---------------------------------------------------------------- jurisdiction and discovery


def resolve_jurisdiction(session: Session, jurisdiction_id: str | None, configured: str | None) -> Unit | None:
    """The district a jurisdiction_id names (None: the whole endpoint); 404 when it names nothing here.

    The endpoint serves one jurisdiction per district; its id is the district code, or the configured
    OPEN311_JURISDICTION_ID, which stands for the whole endpoint. Absent (or empty) is always fine.
    """
    if not jurisdiction_id or (configured and jurisdiction_id == configured):
        return None
    district = None
    if storable(jurisdiction_id) and len(jurisdiction_id) <= 64:
        district = session.scalar(sa.select(Unit).where(Unit.code == jurisdiction_id, Unit.level == "district"))
    if district is None:
        accepted = ", ".join(filter(None, [configured, *session.scalars(
            sa.select(Unit.code).where(Unit.level == "district").order_by(Unit.code).limit(10))]))
        raise NotFound(f"未找到 jurisdiction_id {jurisdiction_id!r}（jurisdiction_id not found; this endpoint serves: {accepted}）")
    return district


def discovery(session: Session, *, url: str, contact: str, key_service: str, endpoint_type: str,
              zone: ZoneInfo) -> dict[str, Any]:
    """The service discovery document (one GeoReport v2 endpoint, XML and JSON)."""
    changeset = w3c(_changed_at(session), zone)
    return {
        "changeset": changeset,
        "contact": contact,
        "key_service": key_service,
        "endpoints": [{
            "specification": SPEC_URL, "url": url, "changeset": changeset, "type": endpoint_type,
            "formats": FORMATS_OFFERED,
        }],
    }


def _changed_at(session: Session) -> datetime:
    """When the service list or a service definition last changed."""
    stamps = [
        session.scalar(sa.select(ServiceState.updated_at).where(ServiceState.key == CATALOG_VERSION_KEY)),
        session.scalar(sa.select(sa.func.max(Open311Attribute.updated_at))),
    ]
    known = [s for s in stamps if s is not None]
    return max(known) if known else datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))


# ---------------------------------------------------------------- services


def _minors(session: Session) -> list[Category]:
    rows = session.scalars(sa.select(Category).where(Category.level == "minor", Category.is_active.is_(True))).unique()
    live = [c for c in rows if c.parent is None or c.parent.is_active]
    return sorted(live, key=lambda c: (c.parent.sort_order if c.parent else 0, c.parent.code if c.parent else "",
                                       c.sort_order, c.code))


def list_services(session: Session) -> list[dict[str, Any]]:
    """One service per active 小类, grouped by its 大类 (GET services)."""
    with_questions = set(session.scalars(sa.select(Open311Attribute.category_id).distinct()))
    return [
        {
            "service_code": c.code,
            "service_name": c.name,
            "description": c.description or None,
            "metadata": c.id in with_questions,
            "type": "realtime",
            "keywords": c.keywords or None,
            "group": c.parent.name if c.parent else None,
        }
        for c in _minors(session)
    ]


def get_service(session: Session, code: str) -> Category:
    """The active 小类 behind a service_code, else 404."""
    category = session.scalar(sa.select(Category).where(Category.code == code)) if len(code) <= 16 and storable(code) else None
    if (category is None or category.level != "minor" or not category.is_active
            or (category.parent is not None and not category.parent.is_active)):
        raise NotFound(f"未找到服务 service_code {code!r}（service_code not found）")
    return category


def _attribute_view(a: Open311Attribute) -> dict[str, Any]:
    view: dict[str, Any] = {
        "variable": a.variable,
        "code": a.code,
        "datatype": a.datatype,
        "required": a.required,
        "datatype_description": a.datatype_description or None,
        "order": a.sort_order,
        "description": a.description,
    }
    if a.datatype in LIST_DATATYPES:
        view["values"] = [{"key": str(v["key"]), "name": str(v["name"])} for v in a.choices]
    return view


def service_definition(session: Session, code: str) -> dict[str, Any]:
    """The questions a service asks (GET services/{service_code})."""
    category = get_service(session, code)
    attributes = attributes_for(session, [category.id]).get(category.id, [])
    return {"service_code": category.code, "attributes": [_attribute_view(a) for a in attributes]}


# ---------------------------------------------------------------- GET requests


@dataclass
class RequestQuery:
    ids: list[int] | None = None
    service_codes: list[str] | None = None
    start: datetime | None = None
    end: datetime | None = None
    statuses: set[str] | None = None


def _is_id(text: str) -> bool:
    """Whether `text` is an event id (ASCII digits, 1 … MAX_ID)."""
    return text.isascii() and text.isdigit() and len(text) <= 10 and 0 < int(text) <= MAX_ID


def _listed(args: Mapping[str, Sequence[str]], name: str) -> list[str]:
    """A parameter that may be repeated and comma-delimited, as one list without blanks."""
    return [part.strip() for value in args.get(name, []) for part in value.split(",") if part.strip()]


def parse_request_query(args: Mapping[str, Sequence[str]], *, now: datetime, zone: ZoneInfo) -> RequestQuery:
    """GET requests' filters; a service_request_id list overrides the others. BadRequest on bad input."""
    problems: dict[str, list[str]] = {}
    ids = _listed(args, "service_request_id")
    if ids:
        if len(ids) > MAX_RESULTS:
            raise BadRequest(f"一次最多查询 {MAX_RESULTS} 个 service_request_id（at most {MAX_RESULTS} ids）")
        # An id that is not a number names no request: it is simply not found, like an unknown number.
        return RequestQuery(ids=list(dict.fromkeys(int(i) for i in ids if _is_id(i))))
    statuses = set(_listed(args, "status"))
    if statuses - {"open", "closed"}:
        problems["status"] = ["只能是 open 或 closed（status is open or closed）"]
    bounds: dict[str, datetime | None] = {}
    for name in ("start_date", "end_date"):
        raw = next((v for v in args.get(name, []) if v.strip()), None)
        bounds[name] = parse_w3c(raw, zone) if raw is not None else None
        if raw is not None and bounds[name] is None:
            problems[name] = ["应为 W3C 日期时间，如 2026-03-01T00:00:00+08:00（must be a W3C datetime）"]
    if problems:
        raise BadRequest("查询参数有误（the query is invalid）", problems)
    start, end = bounds["start_date"], bounds["end_date"]
    if start is None and end is None:
        end, start = now, now - MAX_SPAN
    elif start is None:
        start = end - MAX_SPAN
    elif end is None:
        end = start + MAX_SPAN
    if end < start:
        raise BadRequest("end_date 早于 start_date（end_date is before start_date）")
    if end - start > MAX_SPAN:
        raise BadRequest("start_date 与 end_date 最多相隔 90 天（the range may span at most 90 days）")
    return RequestQuery(service_codes=_listed(args, "service_code") or None, start=start, end=end,
                        statuses=statuses if statuses and statuses != {"open", "closed"} else None)


def _public(query: sa.Select, public_sources: Iterable[str], district: Unit | None) -> sa.Select:
    query = query.where(Event.source.in_(list(public_sources)))
    if district is not None:
        query = query.where(Event.located_unit_id.in_(subtree_unit_ids(district.path)))
    return query


def _lean(query: sa.Select) -> sa.Select:
    # Only the category and the owner are shown; skip the joins to the grid, located unit and handler.
    return query.options(sa.orm.lazyload(Event.grid), sa.orm.lazyload(Event.located_unit), sa.orm.lazyload(Event.handler))


def find_requests(session: Session, query: RequestQuery, *, public_sources: Iterable[str],
                  district: Unit | None = None) -> list[Event]:
    """The public events a GET requests asks for: newest first (or in the order of the ids), at most 1000."""
    select = _lean(_public(sa.select(Event), public_sources, district))
    if query.ids is not None:
        if not query.ids:
            return []
        found = {e.id: e for e in session.scalars(select.where(Event.id.in_(query.ids))).unique()}
        return [found[i] for i in query.ids if i in found]
    if query.service_codes:
        codes = [c for c in query.service_codes if storable(c)]  # a code no database can hold matches nothing
        select = select.where(Event.category_id.in_(sa.select(Category.id).where(Category.code.in_(codes))))
    select = select.where(Event.received_at >= query.start, Event.received_at <= query.end)
    if query.statuses == {"open"}:
        select = select.where(Event.state.in_(sorted(OPEN_STATES)))
    elif query.statuses == {"closed"}:
        select = select.where(Event.state.in_(sorted(FINAL_STATES)))
    select = select.order_by(Event.received_at.desc(), Event.id.desc()).limit(MAX_RESULTS)
    return list(session.scalars(select).unique())


def get_request(session: Session, raw_id: str, *, public_sources: Iterable[str], district: Unit | None = None) -> Event:
    """One public event by its service_request_id, else 404."""
    event = None
    if _is_id(raw_id):
        event = session.scalar(_lean(_public(sa.select(Event), public_sources, district)).where(Event.id == int(raw_id)))
    if event is None:
        raise NotFound(f"未找到诉求 service_request_id {raw_id!r}（service request not found）")
    return event


@dataclass(frozen=True, slots=True)
class Deadline:
    """An event's latest resolve clock (处置时限): its deadline, state and whether it was breached."""

    due_at: datetime
    state: str
    breached_at: datetime | None

    def is_overdue(self, now: datetime | None) -> bool:
        """Whether the deadline has passed: the sweeper marked it breached, or (given `now`) it lies behind `now`."""
        if self.breached_at is not None:
            return True
        return self.state == "running" and now is not None and now >= self.due_at

    def promises(self, now: datetime | None) -> bool:
        """Whether a resident may be told to expect the work done by `due_at`: the clock runs and has not run out."""
        return self.state == "running" and not self.is_overdue(now)


def resolve_deadlines(session: Session, event_ids: Sequence[int]) -> dict[int, Deadline]:
    """Each event's latest resolve clock (处置时限)."""
    latest: dict[int, tuple[int, Deadline]] = {}
    if event_ids:
        rows = session.execute(sa.select(Clock.event_id, Clock.seq, Clock.due_at, Clock.state, Clock.breached_at)
                               .where(Clock.event_id.in_(list(event_ids)), Clock.metric == "resolve"))
        for event_id, seq, due_at, state, breached_at in rows:
            if event_id not in latest or seq > latest[event_id][0]:
                latest[event_id] = (seq, Deadline(due_at, state, breached_at))
    return {event_id: deadline for event_id, (_, deadline) in latest.items()}


def resolve_due(session: Session, event_ids: Sequence[int]) -> dict[int, datetime]:
    """The deadline of each event's latest resolve clock (处置时限)."""
    return {event_id: deadline.due_at for event_id, deadline in resolve_deadlines(session, event_ids).items()}


def expected_at(event: Event, deadline: Deadline | None, now: datetime | None) -> datetime | None:
    """GeoReport's expected_datetime: the deadline while it is still a promise; left out once an open
    request is overdue, paused (挂账) or resolved; kept for finished requests as the deadline they had."""
    if deadline is None:
        return None
    if event.state in FINAL_STATES or deadline.promises(now):
        return deadline.due_at
    return None


# Actions whose note is written for the resident: the result (处置结果), the verification, the reason
# for not taking a case up or withdrawing it. Other notes (dispatch, 退单, escalation, 挂账 …) are the
# staff's working notes and never leave the service.
PUBLIC_NOTE_ACTIONS = frozenset({"resolve", "verify", "reject", "cancel"})


def _public_notes(session: Session, event_ids: Sequence[int]) -> dict[int, str]:
    """Each event's public note: that of its latest audit row, when that row is a public action with one."""
    if not event_ids:
        return {}
    latest = (sa.select(sa.func.max(EventHistory.seq).label("seq"), EventHistory.event_id)
              .where(EventHistory.event_id.in_(list(event_ids))).group_by(EventHistory.event_id).subquery())
    rows = session.execute(sa.select(EventHistory.event_id, EventHistory.action, EventHistory.note).join(
        latest, sa.and_(EventHistory.event_id == latest.c.event_id, EventHistory.seq == latest.c.seq)))
    return {event_id: note for event_id, action, note in rows if action in PUBLIC_NOTE_ACTIONS and note.strip()}


def service_notice(event: Event, deadline: Deadline | None, zone: ZoneInfo, now: datetime | None = None) -> str | None:
    """What happens next, in the words a resident reads; None once the request is finished.

    A date is named only while it is a promise: an overdue request says so instead of naming a
    deadline in the past, a paused (挂账) one says it is on hold, a resolved one that it is checked.
    """
    if event.state in FINAL_STATES:
        return None
    agency = event.owner.name
    if event.needs_triage:
        return f"您反映的问题已转{agency}，核实位置后派单处置。"
    if event.state == "resolved":
        return f"您反映的问题已由{agency}处置，正在核查处置结果。"
    if event.state == "suspended":
        return f"您反映的问题已转{agency}办理，目前暂缓办理，具备条件后将恢复处置。"
    if deadline is not None and deadline.is_overdue(now):
        return f"您反映的问题已转{agency}办理，已超过预计处置时间，正在加紧处置。"
    if deadline is not None and deadline.promises(now):
        return f"您反映的问题已转{agency}办理，预计 {deadline.due_at.astimezone(zone):%Y-%m-%d %H:%M} 前处置完毕。"
    return f"您反映的问题已转{agency}办理。"


def _status_notes(event: Event, note: str | None) -> str:
    if note and note.strip():
        return redact(note.strip()) or ""
    text = STATE_NOTES.get(event.state, event.state)
    if event.state == "merged" and event.merged_into_id:
        text += f"（见 service_request_id {event.merged_into_id}）"
    return text


def request_views(session: Session, found: Sequence[Event], zone: ZoneInfo,
                  now: datetime | None = None) -> list[dict[str, Any]]:
    """Every field GeoReport v2 lists for a request; private fields (phone, email, names) never appear.

    `now` (the edge's instant) tells an overdue request from one still on time; without it only a
    deadline the sweeper has marked breached counts as passed.
    """
    ids = [e.id for e in found]
    deadlines = resolve_deadlines(session, ids)
    notes = _public_notes(session, ids)
    extras = {r.event_id: r for r in session.scalars(sa.select(Open311Request).where(Open311Request.event_id.in_(ids)))} if ids else {}
    views = []
    for event in found:
        extra = extras.get(event.id)
        closed = event.state in FINAL_STATES
        views.append({
            "service_request_id": str(event.id),
            "status": "closed" if closed else "open",
            "status_notes": _status_notes(event, notes.get(event.id)),
            "service_name": event.category.name,
            "service_code": event.category.code,
            "description": redact(extra.description if extra is not None else event.description),
            "agency_responsible": event.owner.name,
            "service_notice": service_notice(event, deadlines.get(event.id), zone, now),
            "requested_datetime": w3c(event.received_at, zone),
            "updated_datetime": w3c((event.closed_at or event.updated_at) if closed else event.updated_at, zone),
            "expected_datetime": w3c(expected_at(event, deadlines.get(event.id), now), zone),
            "address": redact(event.address) or None,
            "address_id": extra.address_id if extra is not None else None,
            "zipcode": None,
            "lat": event.lat,
            "long": event.lon,
            "media_url": extra.media_url if extra is not None else None,
        })
    return views


def resolve_token(session: Session, token: str) -> dict[str, Any]:
    """GET tokens/{token}: the request a token stands for, else 404."""
    event_id = None
    if len(token) <= 64 and storable(token):
        event_id = session.scalar(sa.select(Open311Request.event_id).where(Open311Request.token == token))
    if event_id is None:
        raise NotFound(f"未找到 token {token!r}（token not found）")
    return {"service_request_id": str(event_id), "token": token}
