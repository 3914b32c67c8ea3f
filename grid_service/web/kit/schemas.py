"""Response schemas every edge uses for the things an event names: a unit, a person, a category."""
from __future__ import annotations

import marshmallow as ma


class UnitRefSchema(ma.Schema):
    code = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    level = ma.fields.String(required=True)


class CategoryRefSchema(ma.Schema):
    code = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    major_code = ma.fields.Function(lambda c: c.parent.code if c.parent else None, allow_none=True)
    major_name = ma.fields.Function(lambda c: c.parent.name if c.parent else None, allow_none=True)


class PersonRefSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    name = ma.fields.String(required=True)
    display_name = ma.fields.String(required=True)
