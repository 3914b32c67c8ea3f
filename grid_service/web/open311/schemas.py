"""Marshmallow schemas that document the JSON bodies of /open311/v2 in the OpenAPI document.

Documentation only: the views render XML and JSON themselves (documents.py). Field lists follow the
GeoReport v2 specification; ids and codes are strings (service codes keep their leading zeros).
"""
from __future__ import annotations

import marshmallow as ma

from ...open311.models import DATATYPES


def _text(description: str, **kwargs) -> ma.fields.String:
    return ma.fields.String(metadata={"description": description}, **kwargs)


def _instant(description: str, **kwargs) -> ma.fields.String:
    return ma.fields.String(metadata={"description": description + " (W3C datetime with offset)", "format": "date-time"},
                            **kwargs)


class Open311ErrorSchema(ma.Schema):
    code = ma.fields.Integer(required=True, metadata={"description": "The HTTP status (400, 403 or 404)"})
    description = _text("What went wrong, for a person to read", required=True)


class Open311EndpointSchema(ma.Schema):
    specification = _text("http://wiki.open311.org/GeoReport_v2", required=True)
    url = _text("Base URL of the endpoint", required=True)
    changeset = _text("When services or definitions last changed", required=True)
    type = ma.fields.String(required=True, metadata={"enum": ["production", "test"]})
    formats = ma.fields.List(ma.fields.String(), required=True, metadata={"description": "MIME types offered"})


class Open311DiscoverySchema(ma.Schema):
    changeset = _text("When services or definitions last changed", required=True)
    contact = _text("How to reach the maintainers", required=True)
    key_service = _text("How to get an API key", required=True)
    endpoints = ma.fields.List(ma.fields.Nested(Open311EndpointSchema), required=True)


class Open311ServiceSchema(ma.Schema):
    service_code = _text("The 小类 code", required=True)
    service_name = _text("The 小类 name", required=True)
    description = _text("What the service covers", required=True, allow_none=True)
    metadata = ma.fields.Boolean(required=True, metadata={"description": "true: GET the service definition for its attributes"})
    type = ma.fields.String(required=True, metadata={"enum": ["realtime", "batch", "blackbox"]})
    keywords = _text("Comma-separated keywords", required=True, allow_none=True)
    group = _text("The 大类 name", required=True, allow_none=True)


class Open311AttributeValueSchema(ma.Schema):
    key = _text("Value to send as attribute[code]", required=True)
    name = _text("What a person reads", required=True)


class Open311AttributeSchema(ma.Schema):
    variable = ma.fields.Boolean(required=True, metadata={"description": "false: information only, takes no input"})
    code = _text("Send the answer as attribute[code]", required=True)
    datatype = ma.fields.String(required=True, metadata={"enum": list(DATATYPES)})
    required = ma.fields.Boolean(required=True)
    datatype_description = _text("Help on the expected input", required=True, allow_none=True)
    order = ma.fields.Integer(required=True, metadata={"description": "1 is shown first"})
    description = _text("The question", required=True)
    values = ma.fields.List(ma.fields.Nested(Open311AttributeValueSchema), metadata={"description": "Only for the list datatypes"})


class Open311ServiceDefinitionSchema(ma.Schema):
    service_code = _text("The 小类 code", required=True)
    attributes = ma.fields.List(ma.fields.Nested(Open311AttributeSchema), required=True)


class Open311ServiceRequestSchema(ma.Schema):
    service_request_id = _text("The event id", required=True)
    status = ma.fields.String(required=True, metadata={"enum": ["open", "closed"]})
    status_notes = _text("The latest note on the request, or what its state means", required=True, allow_none=True)
    service_name = _text("The 小类 name", required=True)
    service_code = _text("The 小类 code", required=True)
    description = _text("The reporter's description", required=True, allow_none=True)
    agency_responsible = _text("The unit that holds the request (责任单位)", required=True, allow_none=True)
    service_notice = _text("What happens next; null once finished", required=True, allow_none=True)
    requested_datetime = _instant("When it was reported", required=True)
    updated_datetime = _instant("Last change; for closed requests, when they were closed", required=True, allow_none=True)
    expected_datetime = _instant("The resolve deadline (处置时限)", required=True, allow_none=True)
    address = _text("The address as reported", required=True, allow_none=True)
    address_id = _text("The address_id as posted", required=True, allow_none=True)
    zipcode = _text("Not recorded: always null", required=True, allow_none=True)
    lat = ma.fields.Float(required=True, allow_none=True)
    long = ma.fields.Float(required=True, allow_none=True)
    media_url = _text("The media_url as posted", required=True, allow_none=True)


class Open311CreatedSchema(ma.Schema):
    service_request_id = _text("The new event's id", required=True)
    service_notice = _text("What happens next", required=True, allow_none=True)
    account_id = _text("The account_id as posted", required=True, allow_none=True)


class Open311TokenSchema(ma.Schema):
    service_request_id = _text("The request the token stands for", required=True)
    token = _text("The token asked for", required=True)
