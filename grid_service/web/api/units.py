"""Units API: one unit with its parent chain and children; units as GeoJSON for maps."""
from __future__ import annotations

import marshmallow as ma
import sqlalchemy as sa
from flask import current_app
from flask.views import MethodView

from ...infra.db import db
from ...infra.errors import NotFound
from ...territory.importer import CODE_PATTERN, export_units
from ...territory.models import LEVELS, Unit
from ..kit.blueprint import GridBlueprint
from ..kit.errors import ErrorSchema
from ..kit.fields import LocalDateTime, Str
from ..kit.request import BEARER, current_user

blp = GridBlueprint("units", __name__, url_prefix="/api/v1", description="Territory units (区/街道/社区/网格)")

GEOJSON = "application/geo+json"
LEVEL = {"enum": list(LEVELS), "description": "district (区) > street (街道) > community (社区) > grid (网格)"}


# ---------------------------------------------------------------- schemas


class UnitBriefSchema(ma.Schema):
    code = ma.fields.String(required=True, metadata={"example": "150204001"})
    name = ma.fields.String(required=True, metadata={"example": "富强路街道"})
    level = ma.fields.String(required=True, metadata=LEVEL)


class UnitDetailSchema(UnitBriefSchema):
    region = ma.fields.String(required=True, allow_none=True, metadata={"description": "区域集团, e.g. 东"})
    parent_code = ma.fields.String(required=True, allow_none=True, metadata={"description": "null for a district"})
    path = ma.fields.List(ma.fields.String(), required=True, metadata={"description": "Codes from the district down to this unit"})
    has_boundary = ma.fields.Boolean(required=True)
    updated_at = LocalDateTime(required=True)
    ancestors = ma.fields.List(ma.fields.Nested(UnitBriefSchema), required=True,
                               metadata={"description": "The parent chain: the parent first, the district last"})
    children = ma.fields.List(ma.fields.Nested(UnitBriefSchema), required=True, metadata={"description": "Ordered by code"})


class UnitMapQuerySchema(ma.Schema):
    level = Str(validate=ma.validate.OneOf(LEVELS), metadata={"description": "Only units of this level"})
    within = Str(validate=ma.validate.Regexp(f"^{CODE_PATTERN.pattern}$", error="不是有效的单位编码"),
                 metadata={"description": "Only this unit and the units under it (a code)", "example": "150299001"})


class UnitPropertiesSchema(ma.Schema):
    code = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    level = ma.fields.String(required=True, metadata=LEVEL)
    parent_code = ma.fields.String(required=True, allow_none=True)
    region = ma.fields.String(required=True, allow_none=True)


class BoundarySchema(ma.Schema):
    type = ma.fields.String(required=True, metadata={"enum": ["Polygon", "MultiPolygon"]})
    coordinates = ma.fields.List(ma.fields.Raw(), required=True, metadata={"description": "GeoJSON positions [lon, lat] (WGS 84)"})


class UnitFeatureSchema(ma.Schema):
    type = ma.fields.String(required=True, metadata={"enum": ["Feature"]})
    id = ma.fields.String(required=True, metadata={"description": "The unit's code"})
    properties = ma.fields.Nested(UnitPropertiesSchema, required=True)
    geometry = ma.fields.Nested(BoundarySchema, required=True, allow_none=True, metadata={"description": "null when the unit has no boundary"})


class UnitFeatureCollectionSchema(ma.Schema):
    type = ma.fields.String(required=True, metadata={"enum": ["FeatureCollection"]})
    features = ma.fields.List(ma.fields.Nested(UnitFeatureSchema), required=True)


# ---------------------------------------------------------------- views


def _unit_by_code(code: str) -> Unit:
    unit = db.session.scalar(sa.select(Unit).where(Unit.code == code)) if CODE_PATTERN.fullmatch(code) else None
    if unit is None:
        raise NotFound(f"未找到单位 {code}" if CODE_PATTERN.fullmatch(code) else "未找到该单位")
    return unit


def _brief(unit) -> dict[str, str]:
    return {"code": unit.code, "name": unit.name, "level": unit.level}


BRIEF_COLUMNS = (Unit.code, Unit.name, Unit.level, Unit.path)


@blp.route("/units.geojson")
class UnitsGeoJSON(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(UnitMapQuerySchema(), location="query")
    @blp.response(200, UnitFeatureCollectionSchema(), content_type=GEOJSON)
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(404, schema=ErrorSchema(), description="`within` names no unit")
    def get(self, args):
        """Units (optionally one level, under one unit) as a GeoJSON FeatureCollection, parents first."""
        current_user()
        collection = export_units(db.session, level=args.get("level"), within=args.get("within"))
        # Built as plain dicts and sent as is: dumping 100,000 polygons through marshmallow is slow.
        response = current_app.json.response(collection)
        response.mimetype = GEOJSON
        return response


@blp.route("/units/<code>")
class UnitDetail(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, UnitDetailSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(404, schema=ErrorSchema())
    def get(self, code: str):
        """One unit (区/街道/社区/网格) with its parent chain up to the district and its children."""
        current_user()
        unit = _unit_by_code(code)
        path = unit.path.strip("/").split("/")
        # Columns only: an ancestor's boundary can be large and is not shown here.
        ancestors = db.session.execute(sa.select(*BRIEF_COLUMNS).where(Unit.code.in_(path[:-1]))).all()
        ancestors.sort(key=lambda a: -len(a.path))
        children = db.session.execute(sa.select(*BRIEF_COLUMNS).where(Unit.parent_id == unit.id).order_by(Unit.code)).all()
        return {
            **_brief(unit),
            "region": unit.region,
            "parent_code": path[-2] if len(path) > 1 else None,
            "path": path,
            "has_boundary": unit.boundary is not None,
            "updated_at": unit.updated_at,
            "ancestors": [_brief(a) for a in ancestors],
            "children": [_brief(c) for c in children],
        }
