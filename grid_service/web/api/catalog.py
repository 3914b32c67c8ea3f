"""Reference data for clients: the category tree and the caller's own identity."""
from __future__ import annotations

import marshmallow as ma
import sqlalchemy as sa
from flask.views import MethodView

from ...events.models import Category
from ...infra.db import db
from ..kit.blueprint import GridBlueprint
from ..kit.errors import ErrorSchema
from ..kit.request import BEARER, current_user

blp = GridBlueprint("catalog", __name__, url_prefix="/api/v1", description="Categories (大类/小类) and the caller")


class MinorSchema(ma.Schema):
    code = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    description = ma.fields.String(required=True)


class MajorSchema(MinorSchema):
    minors = ma.fields.List(ma.fields.Nested(MinorSchema), required=True)


class MeSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    name = ma.fields.String(required=True)
    display_name = ma.fields.String(required=True)
    role = ma.fields.String(required=True)
    unit_code = ma.fields.Function(lambda u: u.unit.code, required=True)
    unit_name = ma.fields.Function(lambda u: u.unit.name, required=True)
    unit_level = ma.fields.Function(lambda u: u.unit.level, required=True)


@blp.route("/categories")
class Categories(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, MajorSchema(many=True))
    @blp.alt_response(401, schema=ErrorSchema)
    def get(self):
        """Active categories: each 大类 with its 小类 (events are reported with a 小类 code)."""
        current_user()
        rows = db.session.scalars(
            sa.select(Category).where(Category.is_active.is_(True)).order_by(Category.sort_order, Category.code)
        ).all()
        majors = [{"code": c.code, "name": c.name, "description": c.description, "minors": []} for c in rows if c.level == "major"]
        by_code = {m["code"]: m for m in majors}
        for c in rows:
            if c.level == "minor" and c.parent and c.parent.code in by_code:
                by_code[c.parent.code]["minors"].append(c)
        return majors


@blp.route("/me")
class Me(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, MeSchema)
    @blp.alt_response(401, schema=ErrorSchema)
    def get(self):
        """Who the bearer token belongs to: role and unit."""
        return current_user()
