"""GET /healthz: is the database reachable (and, later, the scheduler alive)."""
from __future__ import annotations

import logging

import marshmallow as ma
import sqlalchemy as sa
from flask.views import MethodView
from flask_smorest import Blueprint

from ..extensions import db
from .common import LocalDateTime, request_now

logger = logging.getLogger(__name__)
blp = Blueprint("health", __name__, description="Liveness and readiness")


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True, metadata={"description": "ok or degraded"})
    database = ma.fields.String(required=True)
    time = LocalDateTime(required=True)


@blp.route("/healthz")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="A dependency is down")
    def get(self):
        """Health of the service and its dependencies."""
        body = {"status": "ok", "database": "ok", "time": request_now()}
        try:
            db.session.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            logger.exception("health check: database unreachable")
            body.update(status="degraded", database="unreachable")
            return body, 503
        return body
