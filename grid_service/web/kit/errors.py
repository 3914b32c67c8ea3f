"""The one JSON error payload, {"code", "message", "errors", "status"}, for every error an edge meets:
domain errors, HTTP errors, and database refusals (409 / 503, never a 500)."""
from __future__ import annotations

import logging
from typing import Any

import marshmallow as ma
import sqlalchemy as sa
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from ...infra.errors import DomainError
from .messages import in_chinese

logger = logging.getLogger(__name__)


class ErrorSchema(ma.Schema):
    """The error payload every endpoint answers with on 4xx/5xx."""

    code = ma.fields.String(required=True, metadata={"description": "Machine-readable error code"})
    message = ma.fields.String(required=True, metadata={"description": "Human-readable message"})
    errors = ma.fields.Dict(metadata={"description": "Per-field or per-item details"})
    status = ma.fields.Integer(metadata={"description": "HTTP status"})
    allowed_actions = ma.fields.List(ma.fields.String(), metadata={"description": "Actions allowed now (409 on a forbidden action)"})


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    431: "request_header_fields_too_large",
}
# What people read when an HTTP error carries no message of ours (Werkzeug's descriptions are English).
_HTTP_MESSAGES = {
    400: "请求格式有误",
    401: "未登录或登录已失效",
    403: "没有访问权限",
    404: "请求的地址不存在",
    405: "不支持该请求方法",
    409: "请求与当前数据冲突",
    413: "请求内容过大",
    414: "请求地址过长",
    415: "不支持的请求内容类型",
    422: "请求参数未通过校验",
    429: "请求过于频繁，请稍后再试",
    431: "请求头过大",
}


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None):
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def handle_domain_error(error: DomainError):
    return _json(error.payload(), error.status)


def handle_http_exception(error: HTTPException):
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    errors = in_chinese(data.get("errors") or data.get("messages") or {})
    message = data.get("message") or _HTTP_MESSAGES.get(status) or ("服务器错误" if status >= 500 else "请求无法处理")
    body = {
        "code": _HTTP_CODES.get(status, "error" if status >= 500 else "bad_request"),
        "message": message,
        "errors": errors,
        "status": status,
    }
    headers = dict(data.get("headers") or {})
    if status == 405 and getattr(error, "valid_methods", None):
        headers["Allow"] = ", ".join(error.valid_methods)
    return _json(body, status, headers)


def handle_unexpected(error: Exception):
    logger.exception("unhandled error")
    return _json(
        {"code": "internal_error", "message": "服务器内部错误，已记录，请稍后再试", "errors": {}, "status": 500},
        500,
    )


def _rollback() -> None:
    """Leave the request's session usable for whatever runs after the handler (the transaction failed)."""
    from ...infra.db import db

    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the connection itself may be gone; teardown discards it
        logger.warning("rollback after a database error failed", exc_info=True)


def handle_write_conflict(error: sa.exc.IntegrityError):
    """A unique key or reference another request changed between our read and our write: nothing was
    written, and the same request again sees the other one's result."""
    _rollback()
    logger.warning("concurrent write answered 409: %s", error.orig)
    return _json({"code": "conflict", "message": "数据已被其他请求同时修改，请刷新后重试", "errors": {}, "status": 409}, 409)


def handle_database_unavailable(error: sa.exc.OperationalError | sa.exc.TimeoutError):
    """The database is unreachable, or busy beyond its bounds (the connect timeout, SQLite's busy
    timeout, a PostgreSQL deadlock, lock or statement timeout, no free connection in the pool):
    nothing was written; the client may retry."""
    _rollback()
    logger.error("database unavailable or busy, answered 503: %s", getattr(error, "orig", None) or error)
    return _json({"code": "database_unavailable", "message": "数据库繁忙或暂时不可用，请稍后重试", "errors": {},
                  "status": 503}, 503, {"Retry-After": "2"})


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(sa.exc.IntegrityError, handle_write_conflict)
    app.register_error_handler(sa.exc.OperationalError, handle_database_unavailable)
    app.register_error_handler(sa.exc.TimeoutError, handle_database_unavailable)  # the pool's wait
    app.register_error_handler(Exception, handle_unexpected)
