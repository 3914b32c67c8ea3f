"""GET /healthz: is the database reachable, is the scheduler alive, which calendar years are provisional,
does the rate-limit counter store take writes."""
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
from ..kit.security import limiter

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


class RateLimitHealthSchema(ma.Schema):
    enabled = ma.fields.Boolean(required=True, metadata={"description": "Whether any rate limit applies"})
    store = ma.fields.String(required=True, metadata={
        "enum": ["database", "sidecar", "separate", "memory"],
        "description": "Where the counters live: the service's database (PostgreSQL), a SQLite file beside the "
                       "service's own (sidecar), RATE_LIMIT_STORAGE_URL (separate), or each process's memory"})
    status = ma.fields.String(required=True, metadata={
        "enum": ["ok", "failing"],
        "description": "failing: the store refused this check's probe write, or a count in this worker failed within "
                       "the last minute. Limits still hold, counted per worker process meanwhile (see counting). "
                       "Does not change the top-level status or the HTTP status"})
    counting = ma.fields.String(required=True, metadata={
        "enum": ["shared", "per_process"],
        "description": "shared: every worker sees the same counts; per_process: each worker counts alone (the "
                       "store is failing, or RATE_LIMIT_STORAGE=memory), so N workers admit up to N × a limit"})
    failures = ma.fields.Integer(required=True, metadata={"description": "Failed counts in this worker since it started"})
    last_failure_at = LocalDateTime(allow_none=True, required=True, metadata={"description": "This worker's latest failed count"})
    error = ma.fields.String(allow_none=True, required=True, metadata={"description": "Why it failed (while failing)"})


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True, metadata={"description": "ok or degraded"})
    database = ma.fields.String(required=True)
    time = LocalDateTime(required=True)
    calendar = ma.fields.Nested(CalendarHealthSchema, metadata={"description": "Absent when the database is unreachable"})
    scheduler = ma.fields.Nested(SchedulerHealthSchema, metadata={
        "description": "The scheduler's last heartbeat (absent when the database is unreachable). A dead scheduler "
                       "does not make this endpoint fail: the web workers still serve, but escalations wait."})
    rate_limits = ma.fields.Nested(RateLimitHealthSchema, required=True, metadata={
        "description": "The rate-limit counter store, as the worker that answers sees it (one probe write)"})


@blp.route("/healthz")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="A dependency is down")
    def get(self):
        """Health of the service and its dependencies."""
        body = {"status": "ok", "database": "ok", "time": request_now(), "rate_limits": limiter().health(request_now())}
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
