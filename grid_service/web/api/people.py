"""The people directory under /api/v1/users: whom a supervisor can dispatch to (no phone numbers)."""
from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView

from ...auth.directory import check_access, list_people
from ...auth.models import ROLES
from ...events.scope import get_visible_event
from ...events.service import dispatch_candidates
from ...infra.db import db
from ..kit.blueprint import GridBlueprint
from ..kit.errors import ErrorSchema
from ..kit.fields import Id, Str
from ..kit.request import BEARER, current_user
from ..kit.schemas import UnitRefSchema

blp = GridBlueprint("people", __name__, url_prefix="/api/v1", description="People (人员目录): whom to dispatch to")


class PersonSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    name = ma.fields.String(required=True, metadata={"description": "Login name"})
    display_name = ma.fields.String(required=True)
    role = ma.fields.String(required=True, metadata={"enum": list(ROLES)})
    unit = ma.fields.Nested(UnitRefSchema, required=True)
    is_active = ma.fields.Boolean(required=True)


class PeoplePageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(PersonSchema), required=True)
    total = ma.fields.Integer(required=True)
    limit = ma.fields.Integer(required=True)
    offset = ma.fields.Integer(required=True)


class PeopleQuerySchema(ma.Schema):
    role = Str(validate=ma.validate.OneOf(ROLES), metadata={"description": "handler: whom to dispatch to"})
    unit = Str(validate=ma.validate.Length(1, 32), metadata={"description": "Unit code: people of its subtree"})
    q = Str(validate=ma.validate.Length(1, 64), metadata={"description": "Part of the login or display name"})
    for_event = Id(metadata={"description": "Only the handlers this event (of your territory) can be dispatched to"})
    active = ma.fields.Boolean(load_default=True, metadata={"description": "false: only deactivated accounts"})
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(1, 200))
    offset = ma.fields.Integer(load_default=0, validate=ma.validate.Range(0, 10_000_000))


@blp.route("/users")
class People(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(PeopleQuerySchema(), location="query")
    @blp.response(200, PeoplePageSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(403, schema=ErrorSchema, description="Grid workers and handlers have no directory")
    @blp.alt_response(404, schema=ErrorSchema, description="for_event names no event of your territory")
    @blp.alt_response(422, schema=ErrorSchema)
    def get(self, args):
        """People in your territory, and the handlers of the units above it (whom you can dispatch to).

        Supervisors and admins only. `role=handler&for_event=ID` lists exactly the handlers a
        dispatch of that event accepts. Names, roles and units only: never phone numbers or secrets.
        """
        user = current_user()
        check_access(user)
        where = []
        if "for_event" in args:
            event = get_visible_event(db.session, user, args["for_event"])
            where.append(dispatch_candidates(event.owner))
        people, total = list_people(db.session, user, role=args.get("role"), unit_code=args.get("unit"),
                                    text=args.get("q"), active=args["active"], where=where,
                                    limit=args["limit"], offset=args["offset"])
        return {"items": people, "total": total, "limit": args["limit"], "offset": args["offset"]}
