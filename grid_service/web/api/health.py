"""GET /healthz: is the database reachable, is the scheduler alive, which calendar years are provisional."""
from __future__ import annotations

import logging

import marshmallow as ma
import sqlalchemy as sa
from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from ...infra.db import db
from ...ops.jobs import scheduler_status
from ..kit.fields import LocalDateTime
from ..kit.request import request_now

logger = logging.getLogger(__name__)
blp = Blueprint("health", __name__, description="Liveness and readiness")


class CalendarHealthSchema(ma.Schema):
    unconfirmed_years = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.List(ma.fields.Integer()), required=True,
                                       metadata={"description": "Per working calendar, this year or next if its official holiday "
                                                                "schedule is not confirmed (deadlines there are provisional; a warning, not an outage)"})


class JobRunSchema(ma.Schema):
    last_run = LocalDateTime(required=True, metadata={"description": "When the job's latest run ended"})
    ok = ma.fields.Boolean(required=True)
    seconds = ma.fields.Float(allow_none=True, required=True, metadata={"description": "How long it took"})
    summary = ma.fields.Dict(allow_none=True, required=True, metadata={
        "description": "What it did (the sweep: claimed, warned, breached, escalated, supervised, batches, skipped)"})
    error = ma.fields.String(allow_none=True, required=True, metadata={"description": "Why it failed"})


class SchedulerHealthSchema(ma.Schema):
    status = ma.fields.String(required=True, metadata={
        "enum": ["ok", "failing", "stale", "never_seen"],
        "description": "ok (a heartbeat within three sweep intervals and every job's latest run succeeded), failing "
                       "(the scheduler lives but a job's latest run failed: see jobs), stale (no heartbeat: down or "
                       "stuck), never_seen — alert on anything but ok"})
    last_heartbeat = LocalDateTime(allow_none=True, required=True)
    age_seconds = ma.fields.Float(allow_none=True, required=True)
    jobs = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(JobRunSchema), required=True,
                          metadata={"description": "Per job (sla-sweep, outbox-delivery): its latest run"})


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True, metadata={"description": "ok or degraded"})
    database = ma.fields.String(required=True)
    time = LocalDateTime(required=True)
    calendar = ma.fields.Nested(CalendarHealthSchema, metadata={"description": "Absent when the database is unreachable"})
    scheduler = ma.fields.Nested(SchedulerHealthSchema, metadata={
        "description": "The scheduler's last heartbeat (absent when the database is unreachable). A dead scheduler "
                       "does not make this endpoint fail: the web workers still serve, but escalations wait."})


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
        body["calendar"] = _calendar_health()
        body["scheduler"] = scheduler_status(db.session, request_now(), current_app.config["SWEEP_INTERVAL_SECONDS"])
        return body


def _calendar_health() -> dict:
    """Years whose deadlines are provisional; reported, but the service stays ok."""
    from ...sla.calendars import unconfirmed_years

    return {"unconfirmed_years": unconfirmed_years(db.session, current_app.extensions["sla"], request_now())}
