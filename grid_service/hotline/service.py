"""Hotline intake: authenticate a signed request, turn a petition into an event exactly once, report
its status, and act on the citizen's verdict.

Services take the session and `now`, flush, and never commit (the view commits).
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..auth.client_models import ApiClient
from ..auth.clients import live_keys
from ..events.intake import Report, report_from_channel
from ..events.models import Category, Event, EventHistory
from ..events.service import ActionRequest, apply_channel_action
from ..infra import webhooks
from ..infra.db import savepoint
from ..infra.errors import Conflict, Invalid, NotFound, Unauthorized
from ..privacy import phones, pii
from ..sla.engine import SlaEngine
from ..sla.models import Clock
from ..territory.locator import Locator
from ..territory.models import Unit
from .models import DEFAULT_CODE, CategoryMapping, HotlineFeedback, HotlinePetition, SeenWebhook

logger = logging.getLogger(__name__)

CLIENT_HEADER = "webhook-client"
# Seen (id, timestamp) pairs are kept this long past their timestamp: the tolerance plus a margin.
SEEN_RETENTION = webhooks.TOLERANCE + timedelta(minutes=5)
URGENCY_PRIORITY = {"normal": "normal", "urgent": "urgent"}
# A petition older than this is a data error, not one to put on today's clocks.
MAX_AGE = timedelta(days=366)
SOURCE = "hotline"


# -- authentication -------------------------------------------------------------------------


def authenticate(session: Session, headers: Mapping[str, str], payload: bytes, *,
                 now: datetime) -> tuple[ApiClient, webhooks.SignedHeaders]:
    """The active hotline client that signed this request (Standard Webhooks) and what it signed, else 401.

    The client is named by the optional `webhook-client` header; without it every active hotline
    client's live secrets are tried (a city has one or two). Reads only: the view records the signed
    pair with `record_signature` just before it commits.
    """
    try:
        signed = webhooks.read_headers(headers, now)
    except webhooks.SignatureError as exc:
        raise Unauthorized(exc.reason) from None
    query = sa.select(ApiClient).where(ApiClient.kind == "hotline", ApiClient.is_active.is_(True)).order_by(ApiClient.id)
    name = (headers.get(CLIENT_HEADER) or "").strip()
    if name:
        query = query.where(ApiClient.name == name)
    client = next((c for c in session.scalars(query) if _signed_by(session, c, signed, payload, now)), None)
    if client is None:
        raise Unauthorized("签名无效（no signature matches a secret of an active hotline client）")
    if session.scalar(sa.select(SeenWebhook.id).where(SeenWebhook.client_id == client.id,
                                                      SeenWebhook.webhook_id == signed.msg_id,
                                                      SeenWebhook.signed_at == _signed_at(signed))) is not None:
        raise Unauthorized(REPLAY)  # early, before any other check; the UNIQUE key decides races at the end
    return client, signed


REPLAY = "该 webhook-id 与时间戳已使用过，请求被视为重放（this webhook-id and timestamp were already used (replay)）"


def _signed_at(signed: webhooks.SignedHeaders) -> datetime:
    return datetime.fromtimestamp(signed.timestamp, tz=UTC)


def _signed_by(session: Session, client: ApiClient, signed: webhooks.SignedHeaders, payload: bytes, now: datetime) -> bool:
    try:
        keys = live_keys(session, client, now)
    except ValueError:
        logger.error("signing secrets of client %s cannot be decrypted (SECRET_KEY changed?)", client.name)
        return False
    return webhooks.matches(signed, keys, payload)


def record_signature(session: Session, client: ApiClient, signed: webhooks.SignedHeaders, now: datetime) -> None:
    """Record the signed (id, timestamp) pair, else 401: the same pair again is a replay (UNIQUE).

    A signed pair is accepted once. It is recorded in the request's transaction, so a failed request
    records nothing, and as its last write: on SQLite a request holds the database's one write lock
    from its first write to its commit, and everything before that runs without it.
    """
    try:
        session.execute(sa.insert(SeenWebhook.__table__).values(client_id=client.id, webhook_id=signed.msg_id,
                                                                 signed_at=_signed_at(signed), seen_at=now))
    except sa.exc.IntegrityError:
        session.rollback()  # the replay leaves nothing: what the request wrote before goes with it
        raise Unauthorized(REPLAY) from None
    # Pairs whose timestamp left the tolerance window can never be accepted again anyway.
    session.execute(sa.delete(SeenWebhook.__table__).where(SeenWebhook.client_id == client.id,
                                                           SeenWebhook.signed_at < now - SEEN_RETENTION))


# -- intake ---------------------------------------------------------------------------------


@dataclass
class PetitionIn:
    """A petition as the hotline sends it (validated)."""

    petition_number: str
    received_at: datetime | None  # None: the SLA starts when we receive it
    channel: str
    content: str
    category_code: str
    urgency: str = "normal"
    citizen_name: str | None = None
    citizen_phone: str | None = None
    lat: float | None = None
    lon: float | None = None
    address: str = ""
    unit_code: str | None = None

    def digest(self, phone_key: str | None = None) -> str:
        """SHA-256 of the canonical content: key order, whitespace and time-zone spelling do not matter.

        With `phone_key` the number enters as its blind index: a plain hash of content this small
        would give the number away to anyone who can read the table and try every number.
        """
        values = asdict(self) | {"received_at": self.received_at and self.received_at.isoformat()}
        if phone_key is not None and self.citizen_phone:
            try:
                values["citizen_phone"] = phones.blind_index(phone_key, phones.normalize(self.citizen_phone))
            except ValueError:
                pass  # intake refuses the number (422) before anything is stored
        return hashlib.sha256(json.dumps(values, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def map_category(session: Session, external_code: str) -> tuple[Category, bool]:
    """Our 小类 for the hotline's code, and whether the code was mapped (else the default `*`)."""
    rows = {m.external_code: m.category for m in session.scalars(
        sa.select(CategoryMapping).where(CategoryMapping.external_code.in_([external_code, DEFAULT_CODE])))}
    mapped = rows.get(external_code)
    if mapped is not None and _usable(mapped):
        return mapped, True
    default = rows.get(DEFAULT_CODE)
    if default is None or not _usable(default):
        # No default configured: the first active 小类, so a petition is never refused for its category.
        default = session.scalar(sa.select(Category).where(Category.level == "minor", Category.is_active.is_(True))
                                 .order_by(Category.sort_order, Category.code).limit(1))
    if default is None:
        raise Invalid("尚未配置事件类别（no category is configured）",
                      {"category_code": ["系统中还没有启用的类别（the service has no active category yet）"]})
    return default, False


def _usable(category: Category) -> bool:
    return category.is_active and category.level == "minor"


def place_petition(session: Session, client: ApiClient, petition: PetitionIn, locator: Locator) -> tuple[Unit, Unit | None, list[str]]:
    """(located unit, grid, triage reasons): point → grid; else unit code; else the point's lowest unit;
    else the client's default unit; else the district (属地兜底). Only the grid and the unit code are trusted."""
    reasons: list[str] = []
    point_unit: Unit | None = None
    if petition.lat is not None and petition.lon is not None:
        placement = locator.locate(petition.lon, petition.lat)
        unit = session.get(Unit, placement.unit_id)
        if placement.grid_id is not None and unit is not None:
            return unit, unit, []
        reasons.append(placement.fallback or "point_outside_grids")
        if placement.fallback == "point_outside_grids":
            point_unit = unit
    if petition.unit_code:
        unit = session.scalar(sa.select(Unit).where(Unit.code == petition.unit_code))
        if unit is not None:
            return unit, (unit if unit.level == "grid" else None), []
        reasons.append("unknown_unit_code")
    if point_unit is not None:
        return point_unit, None, reasons
    if not reasons:
        reasons.append("no_location")
    fallback = client.unit or session.get(Unit, locator.fallback_unit())
    if fallback is None:
        raise Invalid("辖区尚未配置区级单位（the territory has no district yet）",
                      {"location": ["没有可分派的单位（no unit to route to）"]})
    return fallback, None, reasons


def find_petition(session: Session, client: ApiClient, number: str) -> HotlinePetition | None:
    return session.scalar(sa.select(HotlinePetition).where(HotlinePetition.client_id == client.id,
                                                          HotlinePetition.petition_number == number))


def _digests(petition: PetitionIn) -> list[str]:
    """The content digest under each key, the current one first; then the unkeyed one (petitions stored before 0005)."""
    return [petition.digest(key) for key in pii.current_keys()] + [petition.digest()]


def _same_or_conflict(petition: HotlinePetition, digests: list[str]) -> HotlinePetition:
    if petition.content_sha256 not in digests:
        number = petition.petition_number
        raise Conflict(f"工单 {number} 已以不同内容接收过（petition {number} was already received with different content）",
                       {"petition_number": ["该编号已用于另一工单，更正须使用新编号"
                                            "（already used for another petition; a correction needs a new number）"]})
    return petition


def receive_petition(session: Session, client: ApiClient, petition: PetitionIn, *, webhook_id: str, locator: Locator,
                     sla: SlaEngine, now: datetime) -> tuple[HotlinePetition, bool]:
    """The petition's record and whether it is new; the same content again is the same petition, other content 409.

    Concurrent duplicates: the UNIQUE (client, number) insert fails for all but one; the loser's
    event is rolled back to the savepoint and it answers with the winner's petition.
    """
    received_at = petition.received_at or now
    if received_at < now - MAX_AGE:
        raise Invalid("received_at 早于一年前（received_at is more than a year ago）",
                      {"received_at": ["应在最近一年内（must be within the last year）"]})
    digests = _digests(petition)
    existing = find_petition(session, client, petition.petition_number)
    if existing is not None:
        return _same_or_conflict(existing, digests), False
    category, mapped = map_category(session, petition.category_code)
    located, grid, reasons = place_petition(session, client, petition, locator)
    if not mapped:
        reasons.insert(0, "unmapped_category")
    report = Report(category_code=category.code, description=petition.content, lat=petition.lat, lon=petition.lon,
                    address=petition.address, resident_name=petition.citizen_name, resident_phone=petition.citizen_phone,
                    received_at=received_at, priority=URGENCY_PRIORITY[petition.urgency])
    details = {"client": client.name, "petition_number": petition.petition_number, "channel": petition.channel,
               "external_category": petition.category_code}
    try:
        with savepoint(session):
            event = report_from_channel(session, report, source=SOURCE, located=located, grid=grid,
                                        triage_reason="; ".join(reasons)[:200] or None, sla=sla, now=now, details=details)
            record = HotlinePetition(client_id=client.id, petition_number=petition.petition_number, event_id=event.id,
                                     content_sha256=digests[0], channel=petition.channel,
                                     external_category=petition.category_code, is_category_mapped=mapped,
                                     webhook_id=webhook_id, created_at=now)
            session.add(record)
            session.flush()
    except sa.exc.IntegrityError:
        existing = find_petition(session, client, petition.petition_number)
        if existing is None:
            raise
        return _same_or_conflict(existing, digests), False
    logger.info("hotline petition %s from %s became event %s", petition.petition_number, client.name, event.id)
    return record, True


def get_petition(session: Session, client: ApiClient, number: str) -> HotlinePetition:
    """The client's own petition by number; another client's, or none, is 404."""
    petition = find_petition(session, client, number)
    if petition is None:
        raise NotFound(f"未找到工单 {number}（petition {number} not found）")
    return petition


# -- status ---------------------------------------------------------------------------------


@dataclass
class PetitionStatus:
    """A petition with what the hotline may know about its event."""

    petition: HotlinePetition
    clocks: dict[str, Clock]
    history: list[dict[str, Any]]
    feedback: list[HotlineFeedback]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.petition, name)  # petition_number, event … as on the petition itself


def petition_status(session: Session, petition: HotlinePetition) -> PetitionStatus:
    """What the hotline may know: state, owner and level, the clocks' due times, the history, the verdicts."""
    event = petition.event
    clocks: dict[str, Clock] = {}
    for clock in session.scalars(sa.select(Clock).where(Clock.event_id == event.id).order_by(Clock.seq, Clock.id)):
        clocks[clock.metric] = clock  # the latest of each metric
    rows = session.scalars(sa.select(EventHistory).where(EventHistory.event_id == event.id).order_by(EventHistory.seq)).all()
    unit_ids = {r.to_owner_id for r in rows}
    units = {u.id: u for u in session.scalars(sa.select(Unit).where(Unit.id.in_(unit_ids)))} if unit_ids else {}
    history = [{"at": r.at, "action": r.action, "actor_role": r.actor_role, "from_state": r.from_state,
                "to_state": r.to_state, "level": r.to_level, "owner": units.get(r.to_owner_id), "note": r.note}
               for r in rows]
    feedback = list(session.scalars(sa.select(HotlineFeedback).where(HotlineFeedback.petition_id == petition.id)
                                    .order_by(HotlineFeedback.id)))
    return PetitionStatus(petition, clocks, history, feedback)


# -- the citizen's verdict ------------------------------------------------------------------


def record_feedback(session: Session, client: ApiClient, number: str, *, verdict: str, note: str,
                    visited_at: datetime | None, webhook_id: str, sla: SlaEngine, now: datetime) -> tuple[HotlineFeedback, bool]:
    """Store the verdict (回访); 不满意 on a closed event reopens it (重办). A resent message is answered as before."""
    petition = get_petition(session, client, number)
    earlier = session.scalar(sa.select(HotlineFeedback).where(HotlineFeedback.petition_id == petition.id,
                                                             HotlineFeedback.webhook_id == webhook_id))
    if earlier is not None:
        return earlier, False
    event: Event = petition.event
    reopened = False
    if verdict == "不满意" and event.state == "closed":
        reason = f"市民回访不满意（{client.name}），重办" + (f"：{note}" if note else "")
        apply_channel_action(session, event, SOURCE, ActionRequest("reopen", note=reason), sla=sla, now=now,
                             details={"verdict": verdict, "citizen_satisfied": False, "client": client.name,
                                      "petition_number": number})
        reopened = True
    feedback = HotlineFeedback(petition_id=petition.id, verdict=verdict, note=note, visited_at=visited_at or now,
                               reopened=reopened, event_state=event.state, webhook_id=webhook_id, created_at=now)
    session.add(feedback)
    session.flush()
    return feedback, True


# -- the category mapping (admin) -----------------------------------------------------------


def list_mappings(session: Session) -> list[CategoryMapping]:
    return list(session.scalars(sa.select(CategoryMapping).order_by(CategoryMapping.external_code)))


def set_mapping(session: Session, external_code: str, category_code: str, *, note: str = "", now: datetime) -> tuple[CategoryMapping, bool]:
    """Map the hotline's code (or `*`, the default) onto our 小类; returns the row and whether it is new."""
    category = session.scalar(sa.select(Category).where(Category.code == category_code))
    if category is None or not _usable(category):
        raise Invalid(f"未知的事件类别 {category_code}（unknown category {category_code!r}）",
                      {"category_code": ["应为启用中的小类编码（must be an active 小类 code）"]})
    row = session.scalar(sa.select(CategoryMapping).where(CategoryMapping.external_code == external_code))
    created = row is None
    if row is None:
        row = CategoryMapping(external_code=external_code)
        session.add(row)
    row.category_id, row.category, row.note, row.updated_at = category.id, category, note, now
    session.flush()
    return row, created


def delete_mapping(session: Session, external_code: str) -> None:
    deleted = session.execute(sa.delete(CategoryMapping).where(CategoryMapping.external_code == external_code)).rowcount
    if not deleted:
        raise NotFound(f"热线类别 {external_code} 没有映射（no mapping for {external_code!r}）")
