"""SLA API: the supervisor inbox, an event's clocks, the unit summary, policies and calendars."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta

import marshmallow as ma
import sqlalchemy as sa
from flask import current_app
from flask.views import MethodView

from ...auth.models import User
from ...events.queries import event_number
from ...events.scope import get_visible_event
from ...inbox import service as inbox
from ...inbox.models import NOTIFICATION_KINDS
from ...infra.db import db
from ...infra.errors import Conflict, Invalid, NotFound
from ...infra.timeutil import zone
from ...sla import calendars, policies, summary
from ...territory.models import LEVELS
from ..kit.blueprint import GridBlueprint
from ..kit.errors import ErrorSchema
from ..kit.fields import Id, LocalDateTime, Str
from ..kit.request import BEARER, current_user, request_now, require_role
from ..kit.schemas import PersonRefSchema

blp = GridBlueprint("sla", __name__, url_prefix="/api/v1",
                    description="SLA (时限): supervisor inbox, event clocks, unit summary, policies, working calendars")

DAY_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CALENDAR_NAME_MAX = 32
YEARS = (2000, 2200)


@blp.before_request
def _authenticate_first() -> None:
    # Every endpoint here needs a caller: a request without a valid token is 401 before its
    # arguments are even looked at (never a 422 that tells an anonymous client about the API).
    current_user()


def _sla():
    return current_app.extensions["sla"]


# ---------------------------------------------------------------- schemas: inbox


class InboxCategorySchema(ma.Schema):
    code = ma.fields.String(required=True)
    name = ma.fields.String(required=True)


class InboxUnitSchema(ma.Schema):
    code = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    level = ma.fields.String(required=True, metadata={"enum": list(LEVELS)})


class InboxEventSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    number = ma.fields.Function(lambda e: event_number(e, zone()), required=True)
    state = ma.fields.String(required=True)
    level = ma.fields.String(required=True, metadata={"enum": list(LEVELS)})
    priority = ma.fields.String(required=True)
    category = ma.fields.Nested(InboxCategorySchema, required=True)
    owner = ma.fields.Nested(InboxUnitSchema, required=True)


class InboxReaderSchema(PersonRefSchema):
    """Who read a notification first."""


class InboxItemSchema(ma.Schema):
    id = ma.fields.Integer(required=True, attribute="notification.id")
    kind = ma.fields.String(required=True, attribute="notification.kind", metadata={
        "enum": list(NOTIFICATION_KINDS),
        "description": "warning 即将超时, escalated 上报至本单位, breached 已超期, supervise 督办, urge 催办, "
                       "dispatched 派遣给我, rework 返工, extended 延期, returned 退单（请重新派遣）"})
    message = ma.fields.String(required=True, attribute="notification.message")
    metric = ma.fields.String(allow_none=True, metadata={"description": "The clock concerned (accept, level, resolve)"})
    created_at = LocalDateTime(required=True, attribute="notification.created_at")
    read_at = LocalDateTime(allow_none=True, attribute="notification.read_at")
    read_by = ma.fields.Nested(InboxReaderSchema, allow_none=True, attribute="notification.read_by")
    event = ma.fields.Nested(InboxEventSchema, required=True)


class InboxPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(InboxItemSchema), required=True)
    total = ma.fields.Integer(required=True, metadata={"description": "Items matching the filters"})
    unread = ma.fields.Integer(required=True, metadata={"description": "Unread items in your inbox (filters ignored)"})
    limit = ma.fields.Integer(required=True)
    offset = ma.fields.Integer(required=True)


class InboxQuerySchema(ma.Schema):
    unread = ma.fields.Boolean(metadata={"description": "true: only unread; false: only read"})
    kind = Str(validate=ma.validate.OneOf(NOTIFICATION_KINDS))
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(1, 200))
    offset = ma.fields.Integer(load_default=0, validate=ma.validate.Range(0, 10_000_000))


class MarkReadSchema(ma.Schema):
    ids = ma.fields.List(Id(), validate=ma.validate.Length(1, inbox.MAX_BULK_IDS),
                         metadata={"description": "These notifications (all must be in your inbox, else 404 and nothing changes)"})
    all_ = ma.fields.Boolean(data_key="all", metadata={"description": "true: every unread notification (of `kind`, when given)"})
    kind = Str(validate=ma.validate.OneOf(NOTIFICATION_KINDS), metadata={"description": "With all=true only"})

    @ma.validates_schema
    def one_way(self, data, **kwargs):
        if ("ids" in data) == bool(data.get("all_")):
            raise ma.ValidationError("请提供 ids 或 all=true（二者选一）", "ids")
        if "kind" in data and "ids" in data:
            raise ma.ValidationError("kind 只能与 all=true 一起使用，不能与 ids 一起使用", "kind")


class MarkedSchema(ma.Schema):
    marked = ma.fields.Integer(required=True, metadata={"description": "Notifications that were unread and are now read"})
    unread = ma.fields.Integer(required=True, metadata={"description": "Unread items left in your unit's inbox"})


# ---------------------------------------------------------------- schemas: event clocks and summary


class SlaClockSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    metric = ma.fields.String(required=True, metadata={"enum": ["accept", "level", "resolve"],
                                                       "description": "accept 立案, level 本级处置, resolve 处置时限"})
    seq = ma.fields.Integer(required=True, metadata={"description": "Cycle number per metric (a new level clock per level)"})
    level = ma.fields.String(allow_none=True, metadata={"description": "Level clocks: the level that held the event"})
    owner_code = ma.fields.String(allow_none=True, metadata={"description": "Level clocks: the unit that held the event"})
    state = ma.fields.String(required=True, metadata={"enum": ["running", "paused", "met", "breached", "cancelled"]})
    started_at = LocalDateTime(required=True)
    due_at = LocalDateTime(required=True)
    warn_at = LocalDateTime(required=True)
    limit_minutes = ma.fields.Integer(required=True, metadata={"description": "Working minutes allowed, extensions included"})
    extended_minutes = ma.fields.Integer(required=True, metadata={"description": "Minutes added by approved extensions (延期)"})
    used_minutes = ma.fields.Float(required=True, metadata={"description": "Working minutes used as of now (pauses excluded)"})
    remaining_minutes = ma.fields.Float(required=True, metadata={"description": "limit − used, never below 0"})
    overdue_minutes = ma.fields.Float(required=True, metadata={"description": "used − limit, never below 0"})
    is_overdue = ma.fields.Boolean(required=True, metadata={"description": "Live and past its limit"})
    warned_at = LocalDateTime(allow_none=True)
    breached_at = LocalDateTime(allow_none=True)
    stopped_at = LocalDateTime(allow_none=True)
    provisional = ma.fields.Boolean(required=True, metadata={
        "description": "The deadline falls in a year whose official holiday schedule is not confirmed yet"})
    policy_scope = ma.fields.String(required=True, metadata={"description": "<category code or *>|<priority or *>"})
    policy_version = ma.fields.Integer(required=True)
    calendar = ma.fields.String(required=True)


class EventSlaSchema(ma.Schema):
    event_id = ma.fields.Integer(required=True)
    number = ma.fields.String(required=True)
    as_of = LocalDateTime(required=True, metadata={"description": "The instant used and remaining minutes are computed at"})
    clocks = ma.fields.List(ma.fields.Nested(SlaClockSchema), required=True)


class SummaryQuerySchema(ma.Schema):
    unit = Str(validate=ma.validate.Length(1, 32), metadata={"description": "Unit code (default: your unit)"})
    from_ = LocalDateTime(data_key="from", metadata={
        "description": "Start (inclusive), before `to`; default the 1st of this month, local"})
    to = LocalDateTime(metadata={"description": "End (exclusive); default now"})

    @ma.validates_schema
    def ordered(self, data, **kwargs):
        if "from_" in data and "to" in data and data["from_"] >= data["to"]:
            raise ma.ValidationError("from 应早于 to", "from")


class SummaryRowSchema(ma.Schema):
    code = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    level = ma.fields.String(required=True, metadata={"enum": list(LEVELS)})
    received = ma.fields.Integer(required=True)
    resolved = ma.fields.Integer(required=True)
    resolved_on_time = ma.fields.Integer(required=True)
    on_time_rate = ma.fields.Float(allow_none=True, required=True, metadata={"description": "按期处置率, 0–1"})
    breached = ma.fields.Integer(required=True)
    open_overdue = ma.fields.Integer(required=True)
    escalations_out = ma.fields.Integer(required=True)
    escalations_out_timer = ma.fields.Integer(required=True)
    returns = ma.fields.Integer(required=True)
    reworks = ma.fields.Integer(required=True)
    median_resolve_minutes = ma.fields.Float(allow_none=True, required=True)


class SummarySchema(ma.Schema):
    from_ = LocalDateTime(data_key="from", attribute="from", required=True)
    to = LocalDateTime(required=True)
    as_of = LocalDateTime(required=True)
    unit = ma.fields.Nested(SummaryRowSchema, required=True, metadata={"description": "The unit's whole subtree"})
    children = ma.fields.List(ma.fields.Nested(SummaryRowSchema), required=True, metadata={"description": "One row per child unit, by code"})


# ---------------------------------------------------------------- schemas: policies and calendars


def _user_name(user_id: int | None) -> str | None:
    if user_id is None:
        return None
    user = db.session.get(User, user_id)
    return user.name if user else None


class SlaPolicySchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    scope = ma.fields.String(required=True, metadata={"description": "<category code or *>|<priority or *>"})
    category_code = ma.fields.Function(lambda p: p.scope.split("|")[0], required=True, metadata={"description": "大类/小类 code or *"})
    priority = ma.fields.Function(lambda p: p.priority or "*", required=True, metadata={"enum": list(policies.PRIORITY_SCOPES)})
    version = ma.fields.Integer(required=True)
    is_current = ma.fields.Boolean(required=True)
    accept_minutes = ma.fields.Integer(required=True)
    level_minutes = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer(), required=True)
    resolve_minutes = ma.fields.Integer(required=True)
    warn_ratio = ma.fields.Float(required=True)
    calendar = ma.fields.Function(lambda p: p.calendar.name, required=True)
    note = ma.fields.String(required=True)
    created_by = ma.fields.Function(lambda p: _user_name(p.created_by_id), allow_none=True)
    created_at = LocalDateTime(required=True)


class PolicyListQuerySchema(ma.Schema):
    all_ = ma.fields.Boolean(data_key="all", load_default=False, metadata={"description": "true: every version, not only the current ones"})


LIMIT = ma.validate.Range(1, policies.MAX_LIMIT_MINUTES)


class LevelMinutesSchema(ma.Schema):
    grid = ma.fields.Integer(strict=True, validate=LIMIT)
    community = ma.fields.Integer(strict=True, validate=LIMIT)
    street = ma.fields.Integer(strict=True, validate=LIMIT)
    district = ma.fields.Integer(strict=True, validate=LIMIT)


class PolicyInputSchema(ma.Schema):
    category_code = Str(load_default="*", validate=ma.validate.Length(1, 16), metadata={"description": "大类 or 小类 code, or * for every category"})
    priority = Str(load_default="*", validate=ma.validate.OneOf(policies.PRIORITY_SCOPES))
    accept_minutes = ma.fields.Integer(strict=True, validate=LIMIT, metadata={"description": "立案 limit (working minutes on a working calendar)"})
    level_minutes = ma.fields.Nested(LevelMinutesSchema, metadata={
        "description": "How long each level may hold the event before it escalates; a level left out has no limit"})
    resolve_minutes = ma.fields.Integer(strict=True, validate=LIMIT, metadata={"description": "处置时限 of the whole event"})
    warn_ratio = ma.fields.Float(validate=ma.validate.Range(0, 1, min_inclusive=False, max_inclusive=False),
                                 metadata={"description": "Warn when this share of a limit is used (default 0.8)",
                                           "exclusiveMinimum": True, "exclusiveMaximum": True})
    calendar = Str(validate=ma.validate.Length(1, CALENDAR_NAME_MAX), metadata={"description": "Calendar name (default: default)"})
    note = Str(load_default="", validate=ma.validate.Length(max=200))


class PolicySavedSchema(ma.Schema):
    policy = ma.fields.Nested(SlaPolicySchema, required=True)
    clocks_updated = ma.fields.Integer(required=True, metadata={"description": "Running or paused clocks given the new limits"})


class CalendarOverrideSchema(ma.Schema):
    day = ma.fields.String(required=True, metadata={"format": "date"})
    kind = ma.fields.String(required=True, metadata={"enum": ["holiday", "workday"]})
    note = ma.fields.String(required=True)


class CalendarStatusSchema(ma.Schema):
    name = ma.fields.String(required=True)
    kind = ma.fields.String(required=True, metadata={"enum": ["working", "natural"]})
    timezone = ma.fields.String(required=True)
    weekly = ma.fields.Dict(allow_none=True, required=True, metadata={"description": "Working hours per weekday; null: the default template"})
    source = ma.fields.String(allow_none=True, required=True, metadata={"description": "Where official holidays come from"})
    provisional_years = ma.fields.List(ma.fields.Integer(), required=True, metadata={
        "description": "Years (last year to two years ahead) whose official schedule is not confirmed: deadlines there are provisional"})
    confirmed_years = ma.fields.List(ma.fields.Integer(), required=True)
    overrides = ma.fields.List(ma.fields.Nested(CalendarOverrideSchema), required=True, metadata={"description": "Days an admin set"})


class DayInputSchema(ma.Schema):
    kind = Str(required=True, validate=ma.validate.OneOf(("holiday", "workday", "clear")),
               metadata={"description": "holiday, workday (e.g. a 调休 Saturday), or clear the override"})
    note = Str(load_default="", validate=ma.validate.Length(max=200))


class DaySetSchema(ma.Schema):
    calendar = ma.fields.String(required=True)
    day = ma.fields.Date(required=True)
    kind = ma.fields.String(required=True, metadata={"enum": ["holiday", "workday", "clear"]})
    note = ma.fields.String(required=True)
    recomputed = ma.fields.Integer(required=True, metadata={"description": "Running clocks whose deadlines were recomputed"})


class YearConfirmedSchema(ma.Schema):
    calendar = ma.fields.String(required=True)
    year = ma.fields.Integer(required=True)
    recomputed = ma.fields.Integer(required=True, metadata={"description": "Running clocks whose deadlines were recomputed"})


# ---------------------------------------------------------------- views: inbox


@blp.route("/inbox")
class Inbox(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(InboxQuerySchema(), location="query")
    @blp.response(200, InboxPageSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    def get(self, args):
        """Your notifications (待办提醒), newest first.

        Supervisors and admins read their own unit's inbox (warnings, escalations to the unit, breaches,
        督办, 催办, rework, 退单 to dispatch again); a grid worker reads their grid's (the grid owns the
        events reported in it). A handler reads what is addressed to them: work dispatched to them,
        催办 and 返工 on it, approved extensions, and deadline warnings and breaches on the events they
        hold. Limit ≤ 200.
        """
        return inbox.list_inbox(db.session, current_user(), unread=args.get("unread"), kind=args.get("kind"),
                                limit=args["limit"], offset=args["offset"])


@blp.route("/inbox/<int:notification_id>/read")
class InboxItemRead(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, InboxItemSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(404, schema=ErrorSchema, description="Not a notification of your inbox")
    def post(self, notification_id):
        """Mark one notification as read (again is harmless: the first reader and time are kept)."""
        item = inbox.mark_read(db.session, current_user(), notification_id, request_now())
        db.session.commit()
        return item


@blp.route("/inbox/read")
class InboxRead(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(MarkReadSchema())
    @blp.response(200, MarkedSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(404, schema=ErrorSchema, description="Some ids are not notifications of your inbox (nothing was marked)")
    def post(self, data):
        """Mark several notifications as read: `{"ids": [...]}`, or `{"all": true}` (optionally with a `kind`)."""
        result = inbox.mark_many_read(db.session, current_user(), ids=data.get("ids"), mark_all=bool(data.get("all_")),
                                      kind=data.get("kind"), now=request_now())
        db.session.commit()
        return result


# ---------------------------------------------------------------- views: event clocks and summary


@blp.route("/events/<int:event_id>/sla")
class EventSla(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, EventSlaSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(404, schema=ErrorSchema())
    def get(self, event_id):
        """The event's SLA clocks: deadlines, working minutes used and remaining as of now, state, provisional flag."""
        event = get_visible_event(db.session, current_user(), event_id)
        now = request_now()
        return {"event_id": event.id, "number": event_number(event, zone()), "as_of": now,
                "clocks": summary.event_clocks(db.session, _sla(), event, now)}


def _month_start(now: datetime) -> datetime:
    local = now.astimezone(zone())
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@blp.route("/sla/summary")
class SlaSummary(MethodView):
    @blp.doc(security=BEARER, description=summary.DEFINITIONS)
    @blp.arguments(SummaryQuerySchema(), location="query")
    @blp.response(200, SummarySchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(403, schema=ErrorSchema, description="Handlers have no territory to report on")
    @blp.alt_response(404, schema=ErrorSchema, description="No such unit in your territory")
    def get(self, args):
        """SLA figures of a unit and of each of its child units (按期处置率, breaches, escalations …)."""
        user = current_user()
        now = request_now()
        unit = summary.summary_unit(db.session, user, args.get("unit"))
        end = args.get("to") or now
        # Default start: the first of the month the period ends in (an end at midnight on the 1st closes the month before).
        start = args.get("from_") or _month_start(min(now, end) - timedelta(microseconds=1))
        if start >= end:
            raise Invalid("from 应早于 to", {"from": ["应早于 to（to 默认为当前时间）"]})
        return summary.unit_summary(db.session, unit, start=start, end=end, now=now)


# ---------------------------------------------------------------- views: policies


@blp.route("/sla/policies")
class Policies(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(PolicyListQuerySchema(), location="query")
    @blp.response(200, SlaPolicySchema(many=True))
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(403, schema=ErrorSchema, description="Admins only")
    def get(self, args):
        """SLA policies (时限标准): the current version of each scope, or every version with all=true (admins)."""
        require_role("admin")
        return policies.list_policies(db.session, include_history=args["all_"])

    @blp.doc(security=BEARER)
    @blp.arguments(PolicyInputSchema())
    @blp.response(201, PolicySavedSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(403, schema=ErrorSchema, description="Admins only")
    @blp.alt_response(409, schema=ErrorSchema, description="Another admin changed this scope at the same time")
    def post(self, data):
        """Create or change the policy of a scope (a category or *, a priority or *) as a new version (admins).

        Fields left out keep the current version's values (a new scope needs accept_minutes,
        level_minutes and resolve_minutes). The change applies at once to every running or
        paused clock whose event now falls under a different policy version: the new limits are
        measured from the clock's original start, so the working time already used stays used.
        """
        user = require_role("admin")
        sla = _sla()
        change = policies.PolicyChange(**data)
        try:
            policy, changed = policies.save_policy(db.session, sla, change, actor=user, now=request_now())
            db.session.commit()
        except sa.exc.IntegrityError:
            db.session.rollback()
            raise Conflict("该时限标准刚被他人修改，请刷新后重试") from None
        finally:
            sla.invalidate()  # this process sees the new version (or forgets a rolled-back one) at once
        return {"policy": policy, "clocks_updated": changed}


# ---------------------------------------------------------------- views: calendars


def _calendar_name(name: str) -> str:
    # A name no calendar can have is simply not found (and never reaches the database).
    if not 0 < len(name) <= CALENDAR_NAME_MAX or "\x00" in name:
        raise NotFound(f"未找到工作日历 {name[:40]}")
    return name


def _day(text: str) -> date:
    try:
        if not DAY_PATTERN.match(text):
            raise ValueError(text)
        day = date.fromisoformat(text)
    except ValueError:
        raise Invalid("日期格式不正确，应为 YYYY-MM-DD", {"day": ["应为 YYYY-MM-DD"]}) from None
    if not YEARS[0] <= day.year <= YEARS[1]:
        raise Invalid("日期超出范围", {"day": [f"年份应在 {YEARS[0]}–{YEARS[1]} 之间"]})
    return day


@blp.route("/calendars/<name>")
class CalendarView(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, CalendarStatusSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(404, schema=ErrorSchema, description="No calendar of that name")
    def get(self, name):
        """A working calendar (工作日历): hours, the days an admin set, and which years are still provisional."""
        current_user()
        status = calendars.calendar_status(db.session, _sla(), _calendar_name(name), request_now())
        db.session.commit()  # the built-in calendars are created on first use
        return status


@blp.route("/calendars/<name>/days/<day>",
           parameters=[{"in": "path", "name": "day", "required": True, "schema": {"type": "string", "format": "date"},
                        "description": "The local date, YYYY-MM-DD"}])
class CalendarDayView(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(DayInputSchema())
    @blp.response(200, DaySetSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(403, schema=ErrorSchema, description="Admins only")
    @blp.alt_response(404, schema=ErrorSchema, description="No calendar of that name")
    def put(self, data, name, day):
        """Make one day a holiday or a working day, or clear the override (admins); running clocks it touches are recomputed."""
        user = require_role("admin")
        the_day = _day(day)
        sla = _sla()
        try:
            touched = calendars.set_day(db.session, sla, _calendar_name(name), the_day, data["kind"], note=data["note"],
                                        actor=user, now=request_now())
            db.session.commit()
        finally:
            sla.invalidate()
        return {"calendar": name, "day": the_day, "kind": data["kind"], "note": data["note"], "recomputed": touched}


@blp.route("/calendars/<name>/years/<int:year>/confirm")
class CalendarYearConfirm(MethodView):
    @blp.doc(security=BEARER)
    @blp.response(200, YearConfirmedSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(403, schema=ErrorSchema, description="Admins only")
    @blp.alt_response(404, schema=ErrorSchema, description="No calendar of that name")
    @blp.alt_response(422, schema=ErrorSchema, description="Year out of range")
    def post(self, name, year):
        """Confirm a year's official schedule (admins): its deadlines stop being provisional and are recomputed."""
        user = require_role("admin")
        if not YEARS[0] <= year <= YEARS[1]:
            raise Invalid("年份超出范围", {"year": [f"应在 {YEARS[0]} 到 {YEARS[1]} 之间"]})
        sla = _sla()
        try:
            touched = calendars.confirm_year(db.session, sla, _calendar_name(name), year, actor=user, now=request_now())
            db.session.commit()
        finally:
            sla.invalidate()
        return {"calendar": name, "year": year, "recomputed": touched}
