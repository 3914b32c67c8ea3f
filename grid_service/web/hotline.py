"""The hotline's signed API: push a petition, read its status, relay the citizen's verdict.

Every request is signed per Standard Webhooks (see docs/hotline.md) and verified over the raw
bytes before anything is parsed; a GET, having no body, signs the text "GET <path>".
"""
from __future__ import annotations

import marshmallow as ma
from flask import current_app, g, request
from flask.views import MethodView
from flask_smorest import abort

from ..events.queries import event_number
from ..hotline import service
from ..hotline.models import CHANNELS, URGENCIES, VERDICTS
from ..infra import webhooks
from ..infra.db import db
from ..infra.errors import Invalid
from ..infra.timeutil import zone
from .kit.blueprint import GridBlueprint
from .kit.errors import ErrorSchema
from .kit.fields import PHONE, LocalDateTime, Str
from .kit.request import commit_or_conflict, request_now
from .kit.schemas import UnitRefSchema
from .kit.security import enforce_rate_limit

blp = GridBlueprint("hotline", __name__, url_prefix="/api/v1/hotline",
                    description="12345 hotline (signed per Standard Webhooks): petitions in, status and verdicts")

MAX_BODY_BYTES = 64 * 1024
NUMBER = ma.validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$",
                            error="应为 1-64 个字符，限 A-Z a-z 0-9 _ -（1-64 characters of A-Z a-z 0-9 _ -）")
TOO_LARGE = f"请求体过大，最多 {MAX_BODY_BYTES} 字节（a hotline request body is at most {MAX_BODY_BYTES} bytes）"
SIGNED = [
    {"in": "header", "name": webhooks.HEADER_ID, "required": True,
     "description": "Unique message id (no '.'); a resend keeps it, a replay of the same id and timestamp is refused",
     "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_:\-]{1,255}$"}},
    {"in": "header", "name": webhooks.HEADER_TIMESTAMP, "required": True,
     "description": "Unix seconds; must be within 5 minutes of the server's clock", "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"}},
    {"in": "header", "name": webhooks.HEADER_SIGNATURE, "required": True,
     "description": "Space-separated `v1,<base64 HMAC-SHA256 of id.timestamp.payload>`; payload = the raw body, or `GET <path>` for a GET",
     "schema": {"type": "string"}},
    {"in": "header", "name": service.CLIENT_HEADER, "required": False,
     "description": "The client's name (recommended); without it every hotline client's secrets are tried",
     "schema": {"type": "string"}},
]


@blp.before_request
def verify_signature() -> None:
    """Authenticate the caller from the raw request before any parsing; 401 otherwise."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        abort(413, message=TOO_LARGE)
    body = request.get_data(cache=True)
    if len(body) > MAX_BODY_BYTES:
        abort(413, message=TOO_LARGE)
    payload = f"GET {request.path}".encode() if request.method in ("GET", "HEAD") else body
    g.hotline_client, g.hotline_signed = service.authenticate(db.session, request.headers, payload, now=request_now())
    g.hotline_webhook_id = g.hotline_signed.msg_id
    # Only once the client is proven (nobody can spend another client's allowance), and before the
    # request writes anything.
    enforce_rate_limit("client", g.hotline_client.id, request_now())


def commit_signed() -> None:
    """Record the request's signature (a replay is 401 and leaves nothing), then commit; 409 if raced."""
    service.record_signature(db.session, g.hotline_client, g.hotline_signed, request_now())
    commit_or_conflict()


@blp.after_request
def nothing_stored_on_error(response):
    """A refused request leaves no trace (not even its webhook-id), whoever handles the session next."""
    if response.status_code >= 400:
        db.session.rollback()
    return response


# ---------------------------------------------------------------- schemas


class HotlineLocationSchema(ma.Schema):
    lat = ma.fields.Float(validate=ma.validate.Range(-90, 90), metadata={"example": 40.005})
    lon = ma.fields.Float(validate=ma.validate.Range(-180, 180), metadata={"example": 110.005})
    address = Str(validate=ma.validate.Length(max=300), load_default="")
    unit_code = Str(validate=ma.validate.Length(1, 32), metadata={"description": "Our unit code, when the hotline knows it"})

    @ma.validates_schema
    def point_complete(self, data, **kwargs):
        if ("lat" in data) != ("lon" in data):
            raise ma.ValidationError("lat 与 lon 须同时提供（give both lat and lon）", "lat")


class PetitionSchema(ma.Schema):
    petition_number = Str(required=True, validate=NUMBER, metadata={"description": "工单编号, unique per client"})
    received_at = LocalDateTime(load_default=None, metadata={
        "description": "When the hotline received it; the SLA starts then. Without it, when this service receives the petition"})
    channel = Str(required=True, validate=ma.validate.OneOf(CHANNELS))
    citizen_name = Str(validate=ma.validate.Length(1, 64))
    citizen_phone = Str(validate=PHONE)
    content = Str(required=True, validate=ma.validate.Length(1, 4000))
    category_code = Str(required=True, validate=ma.validate.Length(1, 32), metadata={"description": "The hotline's own category code"})
    urgency = Str(validate=ma.validate.OneOf(URGENCIES), load_default="normal")
    location = ma.fields.Nested(HotlineLocationSchema, load_default=dict)


class HotlineUnitSchema(UnitRefSchema):
    """A unit as the hotline sees it."""


class PetitionReceiptSchema(ma.Schema):
    petition_number = ma.fields.String(required=True)
    event_id = ma.fields.Function(lambda p: p.event.id, required=True)
    event_number = ma.fields.Function(lambda p: event_number(p.event, zone()), required=True)
    state = ma.fields.Function(lambda p: p.event.state, required=True)
    level = ma.fields.Function(lambda p: p.event.level, required=True)
    owner = ma.fields.Function(lambda p: HotlineUnitSchema().dump(p.event.owner), required=True,
                               metadata={"description": "责任单位: the unit holding the event"})
    category = ma.fields.Function(lambda p: {"code": p.event.category.code, "name": p.event.category.name}, required=True)
    external_category = ma.fields.String(required=True)
    category_mapped = ma.fields.Boolean(attribute="is_category_mapped", required=True)
    needs_triage = ma.fields.Function(lambda p: p.event.needs_triage, required=True)
    triage_reason = ma.fields.Function(lambda p: p.event.triage_reason, allow_none=True)
    received_at = ma.fields.Function(lambda p: p.event.received_at.astimezone(zone()).isoformat(), required=True)
    created_at = LocalDateTime(required=True)


class PetitionClockSchema(ma.Schema):
    state = ma.fields.String(required=True, metadata={"enum": ["running", "paused", "met", "breached", "cancelled"]})
    started_at = LocalDateTime(required=True)
    due_at = LocalDateTime(required=True)
    warn_at = LocalDateTime(required=True)
    breached_at = LocalDateTime(allow_none=True)
    stopped_at = LocalDateTime(allow_none=True)


class PetitionClocksSchema(ma.Schema):
    accept = ma.fields.Nested(PetitionClockSchema, allow_none=True, metadata={"description": "立案/签收"})
    level = ma.fields.Nested(PetitionClockSchema, allow_none=True, metadata={"description": "The current level's time"})
    resolve = ma.fields.Nested(PetitionClockSchema, allow_none=True, metadata={"description": "处置时限"})


class PetitionHistorySchema(ma.Schema):
    at = LocalDateTime(required=True)
    action = ma.fields.String(required=True)
    actor_role = ma.fields.String(required=True)
    from_state = ma.fields.String(allow_none=True)
    to_state = ma.fields.String(required=True)
    level = ma.fields.String(required=True)
    owner = ma.fields.Nested(HotlineUnitSchema, allow_none=True)
    note = ma.fields.String(required=True)


class PetitionFeedbackSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    verdict = ma.fields.String(required=True, metadata={"enum": list(VERDICTS)})
    note = ma.fields.String(required=True)
    visited_at = LocalDateTime(required=True)
    reopened = ma.fields.Boolean(required=True, metadata={"description": "This verdict reopened the closed event (重办)"})
    event_state = ma.fields.String(required=True, metadata={"description": "The event's state after the verdict"})
    created_at = LocalDateTime(required=True)


class PetitionStatusSchema(PetitionReceiptSchema):
    reopen_count = ma.fields.Function(lambda p: p.event.reopen_count, required=True)
    resolved_at = ma.fields.Function(lambda p: _local(p.event.resolved_at), allow_none=True)
    closed_at = ma.fields.Function(lambda p: _local(p.event.closed_at), allow_none=True)
    clocks = ma.fields.Nested(PetitionClocksSchema, required=True, metadata={"description": "The latest clock of each kind"})
    history = ma.fields.List(ma.fields.Nested(PetitionHistorySchema), required=True, metadata={"description": "Oldest first"})
    feedback = ma.fields.List(ma.fields.Nested(PetitionFeedbackSchema), required=True)


def _local(value):
    return value.astimezone(zone()).isoformat() if value is not None else None


class PetitionVerdictSchema(ma.Schema):
    petition_number = Str(required=True, validate=NUMBER, metadata={"description": "Repeats the number in the path (it binds the signature to the petition)"})
    verdict = Str(required=True, validate=ma.validate.OneOf(VERDICTS), metadata={"description": "满意 / 基本满意 / 不满意"})
    note = Str(validate=ma.validate.Length(max=2000), load_default="")
    visited_at = LocalDateTime(metadata={"description": "When the citizen was called back (回访); default now"})


# ---------------------------------------------------------------- views


def _sla():
    return current_app.extensions["sla"]


@blp.route("/petitions", parameters=SIGNED)
class Petitions(MethodView):
    @blp.arguments(PetitionSchema())
    @blp.response(201, PetitionReceiptSchema(), description="A new petition: the event it became")
    @blp.alt_response(200, schema=PetitionReceiptSchema, description="The same petition again: the same event")
    @blp.alt_response(400, schema=ErrorSchema, description="The body is not JSON")
    @blp.alt_response(401, schema=ErrorSchema, description="Missing or wrong signature, stale timestamp, replay")
    @blp.alt_response(409, schema=ErrorSchema, description="This petition number was used with other content")
    @blp.alt_response(413, schema=ErrorSchema)
    def post(self, data):
        """Push a petition (工单): routed to its grid (or unit, or the district), SLA from `received_at`."""
        location = data.pop("location")
        petition = service.PetitionIn(**data, lat=location.get("lat"), lon=location.get("lon"),
                                      address=location.get("address", ""), unit_code=location.get("unit_code"))
        record, created = service.receive_petition(
            db.session, g.hotline_client, petition, webhook_id=g.hotline_webhook_id,
            locator=current_app.extensions["locator"].get(db.session), sla=_sla(), now=request_now())
        commit_signed()
        return record, 201 if created else 200


@blp.route("/petitions/<string:number>", parameters=SIGNED)
class PetitionStatus(MethodView):
    @blp.response(200, PetitionStatusSchema())
    @blp.alt_response(401, schema=ErrorSchema, description="Missing or wrong signature (over `GET <path>`), stale timestamp, replay")
    @blp.alt_response(404, schema=ErrorSchema, description="No such petition of yours")
    def get(self, number):
        """A petition's status: state, owner and level, due times, history, verdicts (your own petitions only)."""
        status = service.petition_status(db.session, service.get_petition(db.session, g.hotline_client, number))
        commit_signed()  # the same signature cannot be replayed
        return status


@blp.route("/petitions/<string:number>/feedback", parameters=SIGNED)
class PetitionFeedback(MethodView):
    @blp.arguments(PetitionVerdictSchema())
    @blp.response(201, PetitionFeedbackSchema(), description="Recorded (and the event reopened when 不满意 on a closed one)")
    @blp.alt_response(200, schema=PetitionFeedbackSchema, description="This message (webhook-id) was already recorded")
    @blp.alt_response(400, schema=ErrorSchema, description="The body is not JSON")
    @blp.alt_response(401, schema=ErrorSchema, description="Missing or wrong signature, stale timestamp, replay")
    @blp.alt_response(404, schema=ErrorSchema, description="No such petition of yours")
    @blp.alt_response(409, schema=ErrorSchema, description="The event changed at the same moment; send again")
    @blp.alt_response(413, schema=ErrorSchema)
    def post(self, data, number):
        """The citizen's verdict (回访): 满意 / 基本满意 / 不满意; 不满意 on a closed event reopens it (重办)."""
        if data["petition_number"] != number:
            raise Invalid("请求体中的 petition_number 与路径不一致（the body's petition_number differs from the path）",
                          {"petition_number": ["应与路径中的工单编号一致（must equal the number in the path）"]})
        feedback, created = service.record_feedback(
            db.session, g.hotline_client, number, verdict=data["verdict"], note=data["note"],
            visited_at=data.get("visited_at"), webhook_id=g.hotline_webhook_id, sla=_sla(), now=request_now())
        commit_signed()
        return feedback, 201 if created else 200
