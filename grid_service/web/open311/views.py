"""The /open311/v2 endpoint: every GeoReport v2 method, as `.xml` and as `.json`.

Plain view functions (the formats are not marshmallow JSON): each parses the query or the form,
calls one service, commits when it wrote, and renders. Every failure is a GeoReport error list in
the format asked for: 403 for a missing or bad api_key, 404 for what does not exist, else 400.
Each method is registered once per format, so the OpenAPI document describes both exactly.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint as FlaskBlueprint, Flask, Response, current_app, request
from flask_smorest import Blueprint

from ...auth.clients import authenticate_api_key
from ...infra.db import db
from ...infra.errors import DomainError, Forbidden, RateLimited
from ...infra.timeutil import zone
from ...open311 import intake, service
from ..kit.request import request_now
from ..kit.security import enforce_rate_limit
from .documents import FORMATS, MIMETYPES, document, error_document
from .schemas import (
    Open311CreatedSchema,
    Open311DiscoverySchema,
    Open311ErrorSchema,
    Open311ServiceDefinitionSchema,
    Open311ServiceRequestSchema,
    Open311ServiceSchema,
    Open311TokenSchema,
)

logger = logging.getLogger(__name__)

blp = Blueprint(
    "open311", __name__, url_prefix="/open311/v2",
    description="Open311 GeoReport v2 (http://wiki.open311.org/GeoReport_v2): every method as .xml and .json. "
                "Services are the 小类 (group = 大类); a service request is an event.",
)

DEFAULT_CONTACT = "区网格化管理中心（12345 转网格化服务）"
DEFAULT_KEY_SERVICE = "API key 由区网格化管理中心发放（flask --app wsgi clients create --name NAME --kind open311）"


# ---------------------------------------------------------------- the edge


def _settings(name: str, default: Any) -> Any:
    value = current_app.config.get(name)
    return default if value in (None, "") else value


def _public_sources() -> tuple[str, ...]:
    value = _settings("OPEN311_PUBLIC_SOURCES", service.DEFAULT_PUBLIC_SOURCES)
    return tuple(s.strip() for s in value.split(",")) if isinstance(value, str) else tuple(value)


def _district():
    """The district the request's jurisdiction_id names (None for the whole endpoint), or 404."""
    return service.resolve_jurisdiction(db.session, request.values.get("jurisdiction_id", "").strip(),
                                        _settings("OPEN311_JURISDICTION_ID", None))


def _client():
    """The Open311 API client presenting `api_key` (form or query), else 403."""
    raw = request.values.get("api_key", "").strip()
    if not raw:
        raise Forbidden("缺少 api_key（api_key is required to create requests）")
    return authenticate_api_key(db.session, raw, kind="open311")


def _error_status(error: DomainError) -> int:
    """GeoReport's statuses: 403 for the key, 404 for what is missing, 400 for the rest; 413/429 stay."""
    if error.status in (401, 403):
        return 403
    return error.status if error.status in (404, 413, 429) else 400


def _descriptions(error: DomainError) -> list[str]:
    found = [f"{name}: {message}" for name, messages in (error.errors or {}).items()
             for message in (messages if isinstance(messages, list) else [messages])]
    return found or [error.message]


def _answer(fmt: str, produce: Callable[[], Response]) -> Response:
    try:
        return produce()
    except DomainError as error:
        db.session.rollback()
        response = error_document(fmt, _error_status(error), _descriptions(error))
        if isinstance(error, RateLimited):
            response.headers["Retry-After"] = str(error.retry_after)
        return response
    except LookupError:  # the locator has no district to fall back to
        db.session.rollback()
        logger.exception("open311: territory not configured")
        return error_document(fmt, 400, ["辖区尚未配置，暂不能受理（the territory is not configured）"])


def _args() -> dict[str, list[str]]:
    return request.args.to_dict(flat=False)


# ---------------------------------------------------------------- the methods


def get_discovery(fmt: str) -> Response:
    base = _settings("OPEN311_BASE_URL", request.url_root.rstrip("/") + blp.url_prefix)
    body = service.discovery(
        db.session, url=base, contact=_settings("OPEN311_CONTACT", DEFAULT_CONTACT),
        key_service=_settings("OPEN311_KEY_SERVICE", DEFAULT_KEY_SERVICE),
        endpoint_type=_settings("OPEN311_ENDPOINT_TYPE", "production"), zone=zone(),
    )
    return document(fmt, "discovery", body)


def get_services(fmt: str) -> Response:
    _district()
    return document(fmt, "services", service.list_services(db.session))


def get_service_definition(fmt: str, service_code: str) -> Response:
    _district()
    return document(fmt, "service_definition", service.service_definition(db.session, service_code))


def post_request(fmt: str) -> Response:
    client = _client()
    now = request_now()
    enforce_rate_limit("client", client.id, now)  # per API client, shared by every worker
    district = _district()
    new = intake.parse_new_request(request.form.to_dict(flat=False))
    event, extra = intake.create_request(
        db.session, client.id, new, locator=current_app.extensions["locator"].get(db.session),
        sla=current_app.extensions["sla"], now=now, zone=zone(), district=district,
        fallback_unit=client.unit, categories=current_app.extensions["categories"],
    )
    body = [intake.created_view(db.session, event, extra, zone())]
    db.session.commit()
    return document(fmt, "service_requests", body)


def get_requests(fmt: str) -> Response:
    district = _district()
    query = service.parse_request_query(_args(), now=request_now(), zone=zone())
    found = service.find_requests(db.session, query, public_sources=_public_sources(), district=district)
    return document(fmt, "service_requests", service.request_views(db.session, found, zone(), now=request_now()))


def get_request(fmt: str, service_request_id: str) -> Response:
    district = _district()
    event = service.get_request(db.session, service_request_id, public_sources=_public_sources(), district=district)
    return document(fmt, "service_requests", service.request_views(db.session, [event], zone(), now=request_now()))


def get_token(fmt: str, token: str) -> Response:
    _district()
    return document(fmt, "service_requests", [service.resolve_token(db.session, token)])


# ---------------------------------------------------------------- documentation and registration


def _query(name: str, description: str, example: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if example is not None:
        schema["example"] = example
    return {"in": "query", "name": name, "required": False, "schema": schema, "description": description}


JURISDICTION = _query("jurisdiction_id", "Optional: the district code (or the configured OPEN311_JURISDICTION_ID); "
                                         "an unknown one is 404. Empty means absent.")
REQUEST_FILTERS = [
    JURISDICTION,
    _query("service_request_id", "Comma-separated ids; overrides every other filter", "1,2,3"),
    _query("service_code", "Comma-separated service codes", "01001"),
    _query("start_date", "W3C datetime; default end_date − 90 days (or the last 90 days)", "2026-03-01T00:00:00+08:00"),
    _query("end_date", "W3C datetime; default start_date + 90 days (or now); at most 90 days after start_date",
           "2026-03-31T00:00:00+08:00"),
    _query("status", "open, closed, or both comma-separated; default both", "open"),
]

POST_FORM = {
    "type": "object",
    "required": ["api_key", "service_code"],
    "properties": {
        "api_key": {"type": "string", "description": "Your Open311 API key (also accepted in the query string)"},
        "jurisdiction_id": {"type": "string"},
        "service_code": {"type": "string", "description": "From GET services", "example": "01001"},
        "lat": {"type": "number", "minimum": -90, "maximum": 90, "description": "WGS84; with long"},
        "long": {"type": "number", "minimum": -180, "maximum": 180, "description": "WGS84; with lat"},
        "address_string": {"type": "string", "maxLength": 300, "description": "Needed when there is no lat/long or address_id"},
        "address_id": {"type": "string", "maxLength": 64, "description": "A unit code of the territory (网格编码)"},
        "description": {"type": "string", "maxLength": 4000},
        "media_url": {"type": "string", "format": "uri"},
        "email": {"type": "string", "format": "email", "description": "Private: never returned"},
        "phone": {"type": "string", "description": "Private: never returned"},
        "first_name": {"type": "string", "maxLength": 32, "description": "Private: never returned"},
        "last_name": {"type": "string", "maxLength": 32, "description": "Private: never returned"},
        "device_id": {"type": "string", "maxLength": 100},
        "account_id": {"type": "string", "maxLength": 100},
    },
    "additionalProperties": {"type": "string", "description": "attribute[CODE] (or attribute[CODE][] for multivaluelist)"},
}

XML_BODY = {"type": "string", "description": "An XML document (UTF-8, with declaration)"}


def _route(rule: str, name: str, method: str, handler: Callable[..., Response], *, summary: str,
           json_schema: Any, errors: tuple[int, ...], parameters: list[dict] | None = None,
           form: dict | None = None) -> None:
    """Register `handler` at `rule.json` and `rule.xml`, each documented with its own response bodies."""
    for fmt in FORMATS:
        def view(_fmt: str = fmt, **kwargs: Any) -> Response:
            return _answer(_fmt, lambda: handler(_fmt, **kwargs))

        view.__name__ = f"{name}_{fmt}"
        view.__doc__ = f"{summary} ({fmt.upper()})"
        success = json_schema if fmt == "json" else XML_BODY
        documented = blp.alt_response(200, schema=success, content_type=MIMETYPES[fmt].split(";")[0], success=True)(view)
        for status in errors:
            body = Open311ErrorSchema(many=True) if fmt == "json" else XML_BODY
            documented = blp.alt_response(status, schema=body, content_type=MIMETYPES[fmt].split(";")[0],
                                          description=_ERROR_TEXT[status])(documented)
        doc: dict[str, Any] = {}
        if parameters:
            doc["parameters"] = parameters
        if form:
            doc["requestBody"] = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": form}}}
        if doc:
            documented = blp.doc(**doc)(documented)
        blp.route(f"{rule}.{fmt}", methods=[method], endpoint=f"{name}_{fmt}")(documented)


_ERROR_TEXT = {
    400: "Invalid request: a GeoReport error list",
    403: "Missing or invalid api_key: a GeoReport error list",
    404: "Unknown service, request, token or jurisdiction_id: a GeoReport error list",
    429: "Too many requests from this API client (RATE_LIMIT_CLIENT); see Retry-After: a GeoReport error list",
}

_route("/discovery", "discovery", "GET", get_discovery, summary="Service discovery: where the endpoint is, formats, contact",
       json_schema=Open311DiscoverySchema, errors=())
_route("/services", "services", "GET", get_services, summary="Services: one per 小类, grouped by 大类",
       json_schema=Open311ServiceSchema(many=True), errors=(404,), parameters=[JURISDICTION])
_route("/services/<service_code>", "service_definition", "GET", get_service_definition,
       summary="A service definition: the questions (attributes) the service asks",
       json_schema=Open311ServiceDefinitionSchema, errors=(404,), parameters=[JURISDICTION])
_route("/requests", "post_request", "POST", post_request,
       summary="Create a service request (form-encoded, api_key required): an event, routed like any other",
       json_schema=Open311CreatedSchema(many=True), errors=(400, 403, 404, 429), form=POST_FORM)
_route("/requests", "requests", "GET", get_requests,
       summary="Service requests: newest first, at most 1000, at most 90 days (default: the last 90 days)",
       json_schema=Open311ServiceRequestSchema(many=True), errors=(400, 404), parameters=REQUEST_FILTERS)
_route("/requests/<service_request_id>", "request", "GET", get_request, summary="One service request",
       json_schema=Open311ServiceRequestSchema(many=True), errors=(404,), parameters=[JURISDICTION])
_route("/tokens/<token>", "token", "GET", get_token,
       summary="The request a token stands for (requests are created synchronously: POST answers with the id)",
       json_schema=Open311TokenSchema(many=True), errors=(404,), parameters=[JURISDICTION])


# Anything else under the prefix is a GeoReport 404 in the format its extension asks for (JSON by default).
fallback = FlaskBlueprint("open311_fallback", __name__, url_prefix=blp.url_prefix)


@fallback.get("/", defaults={"rest": ""})
@fallback.get("/<path:rest>")
def not_found(rest: str) -> Response:
    fmt = "xml" if rest.endswith(".xml") else "json"
    return error_document(fmt, 404, [f"没有这个资源：{request.path}（no such GeoReport v2 resource）"])


def register_open311(app: Flask, api) -> None:
    """Serve /open311/v2 and describe it in the OpenAPI document."""
    api.register_blueprint(blp)
    app.register_blueprint(fallback)
