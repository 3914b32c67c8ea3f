"""Helpers shared by the blueprints: the caller, the request's instant, common schemas."""
from __future__ import annotations

from datetime import datetime

import marshmallow as ma
from flask import g, request
from flask_smorest import Blueprint
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import CombinedMultiDict

from ..auth.models import User
from ..auth.service import authenticate
from ..errors import Forbidden, Unauthorized
from ..extensions import db
from ..fields import LocalDateTime, zone  # noqa: F401  (re-exported for the blueprints)
from ..timeutil import utcnow

BEARER = [{"bearerAuth": []}]


def request_now() -> datetime:
    """The instant this request is handled at, read once."""
    if "now" not in g:
        g.now = utcnow()
    return g.now


def current_user() -> User:
    """The authenticated caller, or 401."""
    if "user" not in g:
        header = request.headers.get("Authorization", "")
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise Unauthorized("缺少访问令牌（Authorization: Bearer …）")
        g.user = authenticate(db.session, raw.strip(), request_now())
    return g.user


def require_role(*roles: str) -> User:
    user = current_user()
    if user.role not in roles:
        raise Forbidden(f"此操作仅限以下角色：{', '.join(roles)}")
    return user


ERROR_RESPONSES = (401, 404, 422)


class GridParser(FlaskParser):
    """webargs' Flask parser, with the `files` location also reading the form fields of the multipart body."""

    def load_files(self, req, schema):
        return self._makeproxy(CombinedMultiDict([req.files, req.form]), schema)


class GridBlueprint(Blueprint):
    """Blueprint whose query parameters are strict: a misspelt filter is a 422, not silently ignored."""

    ARGUMENTS_PARSER = GridParser()

    def arguments(self, schema, *, location="json", **kwargs):
        if location == "query":
            kwargs.setdefault("unknown", ma.RAISE)
        return super().arguments(schema, location=location, **kwargs)
