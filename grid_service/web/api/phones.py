"""Citizens' phone numbers: the audited reveal, the search by number, and the access log."""
from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView

from ...infra.db import db
from ...infra.errors import DomainError
from ...infra.timeutil import zone
from ...privacy import pii
from ..kit.blueprint import GridBlueprint
from ..kit.errors import ErrorSchema
from ..kit.fields import PHONE, Id, LocalDateTime, Str
from ..kit.request import BEARER, current_user, request_now, require_role
from ..kit.schemas import PersonRefSchema
from .events import EventPageSchema

blp = GridBlueprint("phones", __name__, url_prefix="/api/v1",
                    description="Citizens' phone numbers: audited reveal, search by number, access log")

NO_STORE = {"Cache-Control": "no-store"}


class RevealSchema(ma.Schema):
    reason = Str(required=True, validate=ma.validate.Length(1, 500),
                 metadata={"description": "Why you need the full number (recorded in the access log)", "example": "回访核实处置结果"})


class RevealedSchema(ma.Schema):
    phone = ma.fields.String(required=True, allow_none=True, metadata={
        "description": "The full number, digits only (null when the event has none)", "example": "13812341234"})


class PhoneSearchSchema(ma.Schema):
    phone = Str(required=True, validate=PHONE, metadata={"description": "The caller's number, any usual spelling", "example": "138 1234 1234"})
    reason = Str(validate=ma.validate.Length(max=500), load_default="", metadata={"description": "Recorded in the access log"})
    limit = ma.fields.Integer(strict=True, load_default=50, validate=ma.validate.Range(1, 200))
    offset = ma.fields.Integer(strict=True, load_default=0, validate=ma.validate.Range(0, 10_000_000))


class AccessQuerySchema(ma.Schema):
    event_id = Id()
    action = Str(validate=ma.validate.OneOf(pii.ACCESS_ACTIONS))
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(1, 200))
    offset = ma.fields.Integer(load_default=0, validate=ma.validate.Range(0, 10_000_000))


class AccessSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    at = LocalDateTime(required=True)
    actor = ma.fields.Nested(PersonRefSchema, required=True)
    actor_role = ma.fields.String(required=True)
    actor_unit = ma.fields.Function(lambda row: row.actor_unit.code if row.actor_unit else None, allow_none=True)
    action = ma.fields.String(required=True, metadata={"enum": list(pii.ACCESS_ACTIONS)})
    event_id = ma.fields.Integer(allow_none=True)
    reason = ma.fields.String(required=True)
    outcome = ma.fields.String(required=True, metadata={"enum": list(pii.OUTCOMES)})
    phone_masked = ma.fields.String(allow_none=True)
    matches = ma.fields.Integer(allow_none=True, metadata={"description": "search: events found"})


class AccessPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(AccessSchema), required=True)
    total = ma.fields.Integer(required=True)
    limit = ma.fields.Integer(required=True)
    offset = ma.fields.Integer(required=True)


@blp.route("/events/<int:event_id>/resident-phone/reveal")
class RevealPhone(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(RevealSchema())
    @blp.response(200, RevealedSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(403, schema=ErrorSchema, description="Your role may not see full numbers (recorded)")
    @blp.alt_response(404, schema=ErrorSchema, description="No such event in your scope (recorded)")
    def post(self, data, event_id):
        """The resident's full number, for supervisors and admins in scope and the handler it is dispatched to.

        Every call, granted or refused, is recorded with its reason in the PII access log.
        """
        user = current_user()
        try:
            phone = pii.reveal_phone(db.session, user, event_id, reason=data["reason"], now=request_now(),
                                     keys=pii.current_keys())
        except DomainError:
            db.session.commit()  # the refused attempt stays on the record
            raise
        db.session.commit()
        return {"phone": phone}, 200, NO_STORE


@blp.route("/events/search/by-phone")
class SearchByPhone(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(PhoneSearchSchema())
    @blp.response(200, EventPageSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    def post(self, data):
        """Events in your territory reported from one number, newest first (POST: the number stays out of URLs)."""
        user = current_user()
        items, total = pii.events_by_phone(db.session, user, data["phone"], zone=zone(), now=request_now(),
                                           keys=pii.current_keys(), limit=data["limit"], offset=data["offset"],
                                           reason=data["reason"])
        db.session.commit()
        return {"items": items, "total": total, "limit": data["limit"], "offset": data["offset"]}, 200, NO_STORE


@blp.route("/pii-access-log")
class AccessLog(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(AccessQuerySchema(), location="query")
    @blp.response(200, AccessPageSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(403, schema=ErrorSchema, description="Admins only")
    def get(self, args):
        """Who looked at citizens' numbers, newest first: reveals and searches by people of your territory
        or about its events (admins)."""
        user = require_role("admin")
        items, total = pii.access_log_page(db.session, user, limit=args["limit"], offset=args["offset"],
                                           event_id=args.get("event_id"), action=args.get("action"))
        return {"items": items, "total": total, "limit": args["limit"], "offset": args["offset"]}
