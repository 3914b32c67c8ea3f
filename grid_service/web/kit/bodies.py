"""Guards on the request itself, before any view reads it: its head (the URL's length, each header's
size, the number of headers) and its body (the content type the endpoint declares, how deep a JSON
body nests). Each refusal is the JSON error payload, in Chinese, naming the limit or the type expected.

The limits are app.config settings (config.py): MAX_URL_BYTES (414 beyond), MAX_HEADER_BYTES and
MAX_HEADER_COUNT (431), MAX_JSON_DEPTH (400). `flask serve` sets gunicorn's own limits above these, so
that a request the service refuses reaches it and gets this answer, not the server's page.
"""
from __future__ import annotations

import functools
import re
from array import array
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from flask import Flask, current_app, request
from flask_smorest import abort
from flask_smorest.spec.plugins import FlaskPlugin

from .blueprint import GridApi

DEFAULTS = {"MAX_URL_BYTES": 4096, "MAX_HEADER_BYTES": 8192, "MAX_HEADER_COUNT": 100, "MAX_JSON_DEPTH": 32}

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"


def _limit(name: str) -> int:
    return int(current_app.config.get(name, DEFAULTS[name]))


# ---------------------------------------------------------------- the head


def refuse_oversized_head() -> None:
    """before_request, first of all: 414 for a URL over MAX_URL_BYTES, 431 for a header over
    MAX_HEADER_BYTES (name and value) or more than MAX_HEADER_COUNT headers."""
    environ = request.environ
    # The request target as sent (still percent-encoded); servers put it in RAW_URI or REQUEST_URI.
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path.rstrip("?")
    max_url = _limit("MAX_URL_BYTES")
    if len(target) > max_url:
        abort(414, message=f"请求地址过长：最多 {max_url} 字节，收到 {len(target)} 字节（含查询参数）",
              errors={"url": [f"最多 {max_url} 字节"]})
    max_header, max_count = _limit("MAX_HEADER_BYTES"), _limit("MAX_HEADER_COUNT")
    count = 0
    for name, value in request.headers.items():  # WSGI strings are latin-1: one character per byte
        count += 1
        if len(name) + len(value) > max_header:
            abort(431, message=f"请求头 {name} 过长：名称和值最多 {max_header} 字节，收到 {len(name) + len(value)} 字节",
                  errors={name: [f"最多 {max_header} 字节"]})
    if count > max_count:
        abort(431, message=f"请求头过多：最多 {max_count} 个，收到 {count} 个", errors={})


# ---------------------------------------------------------------- the body


def is_json(mimetype: str) -> bool:
    """application/json and the application/…+json types (what the JSON parser reads)."""
    return mimetype == JSON or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def _accepts(declared: tuple[str, ...], mimetype: str) -> bool:
    if mimetype in declared:
        return True
    if JSON in declared and is_json(mimetype):
        return True
    return FORM in declared and mimetype == MULTIPART  # both fill the same form fields


class DeclaredBodies:
    """The content types each operation's request body takes, as the OpenAPI document declares them."""

    def __init__(self, api: GridApi) -> None:
        self.api = api
        self._types: dict[tuple[str, str], tuple[str, ...]] | None = None

    def types(self, rule: str, method: str) -> tuple[str, ...]:
        """() when the operation declares no body (or is not in the document)."""
        if self._types is None:  # first request: every blueprint is registered by now
            self._types = {
                (path, verb.upper()): tuple(operation["requestBody"].get("content", ()))
                for path, operations in self.api.spec.to_dict().get("paths", {}).items()
                for verb, operation in operations.items()
                if isinstance(operation, dict) and "requestBody" in operation
            }
        return self._types.get((FlaskPlugin.flaskpath2openapi(rule), method), ())


def _has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def check_body() -> None:
    """Before the view reads the body: a body the endpoint cannot read is 415 naming the type it
    takes; a JSON body nested deeper than MAX_JSON_DEPTH is 400, found without decoding it. A
    request without a body passes: the view says what is missing."""
    if request.url_rule is None or not _has_body():
        return
    declared = current_app.extensions["declared_bodies"].types(request.url_rule.rule, request.method)
    mimetype = request.mimetype
    if declared and not _accepts(declared, mimetype):
        expected = declared[0]
        got = f"收到的是 {mimetype}" if mimetype else "请求未声明 Content-Type"
        abort(415, message=f"请求体应为 {expected}（请设置 Content-Type: {expected}），{got}",
              errors={"Content-Type": [f"应为 {expected}"]})
    if is_json(mimetype):
        depth = _limit("MAX_JSON_DEPTH")
        if json_nests_deeper_than(request.get_data(cache=True), depth):
            abort(400, message=f"请求体的 JSON 嵌套过深：最多 {depth} 层", errors={"json": [f"嵌套不能超过 {depth} 层"]})


def _checking_body(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check_body()
        return view(*args, **kwargs)

    return checked


# A JSON string, escapes included; an unterminated one runs to the end. Possessive: linear on any input.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes


def json_nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether the arrays and objects of `body` (UTF-8 JSON, valid or not) nest more than `limit`
    deep: the brackets outside strings, counted in C, never by a recursive decoder."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False
    return max(accumulate(array("b", brackets.translate(_STEPS)))) > limit


# ---------------------------------------------------------------- install


def install_request_guards(app: Flask, api: GridApi) -> None:
    """The head's limits before anything else reads a header (CORS, body limits, authentication).
    The body's checks just before each view of `app` (call this once every blueprint is registered):
    after every gate — the rate limits, the hotline's signature over the raw body — and before the
    view's arguments are parsed."""
    # Flask has no "first" registration: put it at the head of the app-wide before_request list.
    app.before_request_funcs.setdefault(None, []).insert(0, refuse_oversized_head)
    app.extensions["declared_bodies"] = DeclaredBodies(api)
    for endpoint, view in list(app.view_functions.items()):
        app.view_functions[endpoint] = _checking_body(view)
