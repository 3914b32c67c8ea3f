"""flask-smorest's Api and Blueprint as every edge uses them: the service's error payload, strict
query parameters, multipart forms read with their files."""
from __future__ import annotations

import marshmallow as ma
from flask_smorest import Api, Blueprint
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import CombinedMultiDict

from .errors import ErrorSchema, handle_http_exception


class GridApi(Api):
    """flask-smorest's Api with the service's own error payload, documented and returned."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error):
        return handle_http_exception(error)


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
