"""Events API: intake, workflow actions, audit trail, photos and queries."""
from __future__ import annotations

from datetime import timedelta

import marshmallow as ma
from flask import current_app, send_file
from flask.views import MethodView
from webargs.fields import DelimitedList

from ...events import attachments as photos, intake, service
from ...events.actions import ACTIONS
from ...events.models import Event
from ...events.queries import EventFilter, event_number, filtered_events, page_of_events
from ...events.scope import get_visible_event
from ...events.states import PRIORITIES, SOURCES, STATES
from ...infra.db import db
from ...infra.errors import Forbidden, NotFound
from ...infra.timeutil import zone
from ...territory.models import LEVELS, Unit
from ..kit.blueprint import GridBlueprint
from ..kit.errors import ErrorSchema
from ..kit.fields import PHONE, Id, LocalDateTime, Str
from ..kit.request import BEARER, commit_or_conflict, current_user, request_now
from ..kit.schemas import CategoryRefSchema, PersonRefSchema, UnitRefSchema

blp = GridBlueprint("events", __name__, url_prefix="/api/v1", description="Events (事件): intake, workflow, audit trail")

# ---------------------------------------------------------------- schemas


class ReportSchema(ma.Schema):
    category_code = Str(required=True, validate=ma.validate.Length(1, 16), metadata={"description": "小类 code", "example": "01001"})
    description = Str(required=True, validate=ma.validate.Length(1, 4000))
    lat = ma.fields.Float(validate=ma.validate.Range(-90, 90), metadata={"example": 40.64})
    lon = ma.fields.Float(validate=ma.validate.Range(-180, 180), metadata={"example": 109.84})
    grid_code = Str(validate=ma.validate.Length(1, 32), metadata={"description": "The grid, when there is no GPS fix"})
    address = Str(validate=ma.validate.Length(max=300), load_default="")
    resident_name = Str(validate=ma.validate.Length(1, 64))
    resident_phone = Str(validate=PHONE)
    received_at = LocalDateTime(metadata={"description": (
        "When the problem was reported (a report queued offline); default now. Not in the future, not older "
        "than RECEIVED_AT_MAX_AGE_DAYS (default 7)")})
    priority = Str(validate=ma.validate.OneOf(PRIORITIES), load_default="normal")

    @ma.validates_schema
    def location_given(self, data, **kwargs):
        if ("lat" in data) != ("lon" in data):
            raise ma.ValidationError("lat 与 lon 须同时提供", "location")


class EventSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    number = ma.fields.Function(lambda e: event_number(e, zone()), required=True, metadata={"description": "Human-readable number"})
    state = ma.fields.String(required=True, metadata={"enum": list(STATES)})
    level = ma.fields.String(required=True, metadata={"enum": list(LEVELS)})
    source = ma.fields.String(required=True, metadata={"enum": list(SOURCES)})
    priority = ma.fields.String(required=True, metadata={"enum": list(PRIORITIES)})
    category = ma.fields.Nested(CategoryRefSchema, required=True)
    description = ma.fields.String(required=True)
    address = ma.fields.String(required=True)
    lat = ma.fields.Float(allow_none=True)
    lon = ma.fields.Float(allow_none=True)
    owner = ma.fields.Nested(UnitRefSchema, required=True, metadata={"description": "The unit holding the event (责任单位)"})
    grid = ma.fields.Nested(UnitRefSchema, allow_none=True)
    located_unit = ma.fields.Nested(UnitRefSchema, required=True, metadata={"description": "Lowest unit whose area holds the event"})
    handler = ma.fields.Nested(PersonRefSchema, allow_none=True)
    resident_name = ma.fields.String(allow_none=True)
    resident_phone = ma.fields.String(attribute="resident_phone_masked", allow_none=True, metadata={
        "description": "Masked: 138****1234 (the full number: POST …/resident-phone/reveal)"})
    needs_triage = ma.fields.Boolean(required=True)
    is_supervised = ma.fields.Boolean(required=True, metadata={"description": "督办: the district's own time ran out"})
    triage_reason = ma.fields.String(allow_none=True)
    merged_into_id = ma.fields.Integer(allow_none=True)
    return_count = ma.fields.Integer(required=True, metadata={"description": "退单 count"})
    rework_count = ma.fields.Integer(required=True, metadata={"description": "返工 count"})
    reopen_count = ma.fields.Integer(required=True, metadata={"description": "重办 count"})
    received_at = LocalDateTime(required=True)
    created_at = LocalDateTime(required=True)
    updated_at = LocalDateTime(required=True)
    resolved_at = LocalDateTime(allow_none=True)
    closed_at = LocalDateTime(allow_none=True)
    version = ma.fields.Integer(required=True, metadata={"description": "Send it back as `version` to detect concurrent changes"})
    allowed_actions = ma.fields.Function(lambda e: service.actions_for(current_user(), e), required=True,
                                         metadata={"description": "Actions the caller may take now"})


class EventPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(EventSchema), required=True)
    total = ma.fields.Integer(required=True)
    limit = ma.fields.Integer(required=True)
    offset = ma.fields.Integer(required=True)


class EventQuerySchema(ma.Schema):
    state = DelimitedList(Str(validate=ma.validate.OneOf(STATES)), metadata={"description": "Comma-separated states"})
    level = DelimitedList(Str(validate=ma.validate.OneOf(LEVELS)))
    source = DelimitedList(Str(validate=ma.validate.OneOf(SOURCES)))
    owner = Str(validate=ma.validate.Length(1, 32), metadata={"description": "Unit code: events owned in its subtree"})
    category = Str(validate=ma.validate.Length(1, 16), metadata={"description": "大类 or 小类 code"})
    received_from = LocalDateTime(metadata={"description": "Received at or after this instant; not after received_to"})
    received_to = LocalDateTime(metadata={"description": "Received at or before this instant"})
    needs_triage = ma.fields.Boolean()
    number = Str(validate=ma.validate.Length(1, 32))
    handler_id = Id()
    overdue = ma.fields.Boolean(metadata={"description": (
        "true: events whose live resolve clock (处置时限) is past due now — running with its due time passed, "
        "marked breached, or suspended after using up its limit; false: every other event (closed ones included)")})
    due_before = LocalDateTime(metadata={"description": "Events whose running resolve clock is due before this instant "
                                                        "(suspended events, whose clocks are paused, are left out)"})
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(1, 200))
    offset = ma.fields.Integer(load_default=0, validate=ma.validate.Range(0, 10_000_000))

    @ma.validates_schema
    def time_range(self, data, **kwargs):
        if "received_from" in data and "received_to" in data and data["received_from"] > data["received_to"]:
            raise ma.ValidationError("received_from 不能晚于 received_to", "received_from")


class GeoQuerySchema(EventQuerySchema):
    limit = ma.fields.Integer(load_default=1000, validate=ma.validate.Range(1, 5000))


class ActionSchema(ma.Schema):
    action = Str(required=True, validate=ma.validate.OneOf(ACTIONS))
    note = Str(validate=ma.validate.Length(max=2000), load_default="")
    version = ma.fields.Integer(validate=ma.validate.Range(1, 2**31 - 1), metadata={"description": "Expected current version"})
    handler_id = Id(metadata={"description": "dispatch: the handler"})
    into_event_id = Id(metadata={"description": "merge: the event to merge into"})
    category_code = Str(validate=ma.validate.Length(1, 16), metadata={"description": "reclassify: new 小类"})
    priority = Str(validate=ma.validate.OneOf(PRIORITIES), metadata={"description": "reclassify: new priority"})
    minutes = ma.fields.Integer(validate=ma.validate.Range(1, 100_000), metadata={"description": "extend: extra working minutes"})
    metric = Str(validate=ma.validate.OneOf(("accept", "level", "resolve")), metadata={"description": "extend: which clock (default resolve)"})
    to_unit = Str(validate=ma.validate.Length(1, 32), metadata={"description": (
        "escalate: the unit code to send the event up to — an ancestor of its owner, at most your own "
        "unit's parent (e.g. a community asks the street to coordinate); default: the owner's parent")})


class HistorySchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    at = LocalDateTime(required=True)
    actor = ma.fields.Nested(PersonRefSchema, allow_none=True, metadata={"description": "null when the system acted"})
    actor_role = ma.fields.String(required=True)
    actor_unit = ma.fields.Function(lambda h: _code(h.actor_unit), allow_none=True)
    action = ma.fields.String(required=True)
    from_state = ma.fields.String(allow_none=True)
    to_state = ma.fields.String(required=True)
    from_level = ma.fields.String(allow_none=True)
    to_level = ma.fields.String(required=True)
    from_owner = ma.fields.Function(lambda h: _code(h.from_owner), allow_none=True)
    to_owner = ma.fields.Function(lambda h: _code(h.to_owner), required=True)
    note = ma.fields.String(required=True)
    details = ma.fields.Dict(required=True)
    seq = ma.fields.Integer(required=True, metadata={"description": "The event's version after this change"})
    row_hash = ma.fields.String(required=True, metadata={
        "description": "HMAC-SHA256 over this row and the previous row's hash (`flask audit verify` checks the chain)"})


def _code(unit: Unit | None) -> str | None:
    return unit.code if unit is not None else None


class AttachmentSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    sha256 = ma.fields.String(required=True)
    content_type = ma.fields.String(required=True)
    size_bytes = ma.fields.Integer(required=True)
    kind = ma.fields.String(required=True, metadata={"enum": list(photos.KINDS)})
    created_at = LocalDateTime(required=True)


class UploadSchema(ma.Schema):
    file = ma.fields.Raw(required=True, metadata={"type": "string", "format": "binary"})
    kind = Str(required=True, validate=ma.validate.OneOf(photos.KINDS))


class FeatureCollectionSchema(ma.Schema):
    type = ma.fields.String(required=True, metadata={"enum": ["FeatureCollection"]})
    features = ma.fields.List(ma.fields.Dict(), required=True)


# ---------------------------------------------------------------- views


def _filter(args: dict) -> EventFilter:
    return EventFilter(
        states=args.get("state") or None, levels=args.get("level") or None, sources=args.get("source") or None,
        owner_code=args.get("owner"), category_code=args.get("category"), received_from=args.get("received_from"),
        received_to=args.get("received_to"), needs_triage=args.get("needs_triage"), number=args.get("number"),
        handler_id=args.get("handler_id"), overdue=args.get("overdue"), due_before=args.get("due_before"),
        now=request_now(),
    )


def _locator():
    return current_app.extensions["locator"].get(db.session)


def _sla():
    return current_app.extensions["sla"]


@blp.route("/events")
class Events(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(EventQuerySchema(), location="query")
    @blp.response(200, EventPageSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    def get(self, args):
        """List events in your territory, newest first (limit ≤ 200)."""
        user = current_user()
        items, total = page_of_events(db.session, user, _filter(args), zone(), limit=args["limit"], offset=args["offset"])
        return {"items": items, "total": total, "limit": args["limit"], "offset": args["offset"]}

    @blp.doc(security=BEARER)
    @blp.arguments(ReportSchema())
    @blp.response(201, EventSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(403, schema=ErrorSchema())
    def post(self, data):
        """Report an event (grid workers; supervisors too). It is routed to its grid, which owns it."""
        user = current_user()
        if user.role not in ("grid_worker", "supervisor", "admin"):
            raise Forbidden("只有网格员和监督员可以上报事件")
        source = "grid_worker" if user.role == "grid_worker" else "supervisor"
        max_age = timedelta(days=float(current_app.config.get("RECEIVED_AT_MAX_AGE_DAYS", 7)))
        event = intake.report_event(db.session, user, intake.Report(**data), locator=_locator(), sla=_sla(),
                                    now=request_now(), source=source, categories=current_app.extensions["categories"],
                                    max_age=max_age)
        db.session.commit()
        return event


@blp.route("/events.geojson")
class EventsGeoJSON(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(GeoQuerySchema(), location="query")
    @blp.response(200, FeatureCollectionSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    def get(self, args):
        """Events in your territory as a GeoJSON FeatureCollection of points (same filters as the list)."""
        user = current_user()
        query = filtered_events(db.session, user, _filter(args), zone()).order_by(Event.received_at.desc(), Event.id.desc())
        rows = db.session.scalars(query.limit(args["limit"]).offset(args["offset"])).unique()
        tz = zone()
        features = [
            {
                "type": "Feature",
                "id": e.id,
                "geometry": {"type": "Point", "coordinates": [e.lon, e.lat]} if e.lat is not None else None,
                "properties": {
                    "number": event_number(e, tz), "state": e.state, "level": e.level, "priority": e.priority,
                    "category_code": e.category.code, "category_name": e.category.name, "owner_code": e.owner.code,
                    "grid_code": e.grid.code if e.grid else None, "received_at": e.received_at.astimezone(tz).isoformat(),
                    "needs_triage": e.needs_triage,
                },
            }
            for e in rows
        ]
        return {"type": "FeatureCollection", "features": features}


@blp.route("/events/<int:event_id>")
class EventDetail(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, EventSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(404, schema=ErrorSchema())
    def get(self, event_id):
        """One event (404 when it does not exist or is outside your territory)."""
        return get_visible_event(db.session, current_user(), event_id)


@blp.route("/events/<int:event_id>/actions")
class EventActions(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(ActionSchema())
    @blp.response(200, EventSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(403, schema=ErrorSchema, description="Your role or unit may not take this action")
    @blp.alt_response(404, schema=ErrorSchema())
    @blp.alt_response(409, schema=ErrorSchema, description="Not allowed in the current state (see allowed_actions), or a concurrent change")
    def post(self, data, event_id):
        """Take a workflow action: register, dispatch, accept, resolve, verify, rework, return, escalate …"""
        user = current_user()
        event = get_visible_event(db.session, user, event_id)
        request = service.ActionRequest(
            action=data["action"], note=data["note"], expected_version=data.get("version"),
            handler_id=data.get("handler_id"), into_event_id=data.get("into_event_id"),
            category_code=data.get("category_code"), priority=data.get("priority"),
            minutes=data.get("minutes"), metric=data.get("metric"), to_unit=data.get("to_unit"),
        )
        service.apply_action(db.session, event, user, request, sla=_sla(), now=request_now())
        commit_or_conflict()
        return event


@blp.route("/events/<int:event_id>/history")
class EventHistoryView(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, HistorySchema(many=True))
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(404, schema=ErrorSchema())
    def get(self, event_id):
        """The event's audit trail, oldest first: who did what, when, from which state/level/owner to which."""
        event = get_visible_event(db.session, current_user(), event_id)
        return service.history(db.session, event)


@blp.route("/events/<int:event_id>/attachments")
class EventAttachments(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, AttachmentSchema(many=True))
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(404, schema=ErrorSchema())
    def get(self, event_id):
        """Photos of the event."""
        event = get_visible_event(db.session, current_user(), event_id)
        return photos.list_attachments(db.session, event)

    @blp.doc(security=BEARER)
    @blp.arguments(UploadSchema(), location="files")
    @blp.response(201, AttachmentSchema())
    @blp.alt_response(200, schema=AttachmentSchema, description="The same photo was already attached")
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(404, schema=ErrorSchema())
    @blp.alt_response(409, schema=ErrorSchema, description="The event has ended (closed, rejected, merged, cancelled)")
    @blp.alt_response(413, schema=ErrorSchema())
    @blp.alt_response(422, schema=ErrorSchema, description="Not a decodable JPEG/PNG/WebP image, or too many pixels")
    def post(self, data, event_id):
        """Attach a photo (JPEG/PNG/WebP, checked by content) marked `before` or `after` the work."""
        user = current_user()
        event = get_visible_event(db.session, user, event_id)
        upload = data["file"]
        payload = upload.read(current_app.config["MAX_ATTACHMENT_BYTES"] + 1) if hasattr(upload, "read") else b""
        attachment, created = photos.add_attachment(
            db.session, event, user, data=payload, kind=data["kind"], root=current_app.config["UPLOAD_FOLDER"],
            max_bytes=current_app.config["MAX_ATTACHMENT_BYTES"], now=request_now(),
        )
        db.session.commit()
        return attachment, 201 if created else 200


@blp.route("/events/<int:event_id>/attachments/<int:attachment_id>")
class EventAttachmentFile(MethodView):
    @blp.doc(security=BEARER, responses={"200": {"description": "The image", "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}}})
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(404, schema=ErrorSchema())
    def get(self, event_id, attachment_id):
        """Download a photo."""
        event = get_visible_event(db.session, current_user(), event_id)
        attachment = photos.get_attachment(db.session, event, attachment_id)
        path = photos.blob_path(current_app.config["UPLOAD_FOLDER"], attachment.sha256)
        if not path.exists():
            raise NotFound("照片文件已丢失，请联系管理员")
        return send_file(path, mimetype=attachment.content_type, max_age=3600)
