"""Editing SLA policies: every change is a new version, and it reaches the clocks already running.

A scope is "<category code or *>|<priority or *>". Changing a scope retires its current version
and inserts the next one in the same transaction (the partial unique index on the current row and
UNIQUE(scope, version) make two concurrent edits of one scope a conflict, never two current rows).
Then every live clock whose event would now resolve to a different policy version gets the new
limits through `SlaEngine.apply_policy`: measured from the clock's original start, so the working
time already used stays used and nothing restarts.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import set_committed_value

from ..auth.models import User
from ..events.models import Category, Event
from ..infra.cache import bump_version
from ..infra.errors import Conflict, Invalid, NotFound
from ..territory.models import LEVELS
from .calendars import get_calendar_row
from .engine import POLICY_VERSION_KEY, PolicyInfo, SlaEngine, candidate_scopes, scope_key
from .models import LIVE_STATES, Clock, Policy

logger = logging.getLogger(__name__)

PRIORITY_SCOPES: tuple[str, ...] = ("*", "urgent", "normal")
MAX_LIMIT_MINUTES = 100_000


@dataclass
class PolicyChange:
    """An admin's edit of one scope; None means "keep the current version's value"."""

    category_code: str = "*"
    priority: str = "*"
    accept_minutes: int | None = None
    level_minutes: dict[str, int] | None = None
    resolve_minutes: int | None = None
    warn_ratio: float | None = None
    calendar: str | None = None
    note: str = ""


def list_policies(session: Session, *, include_history: bool) -> list[Policy]:
    """Current versions (or every version), by scope then version."""
    query = sa.select(Policy).order_by(Policy.scope, Policy.version)
    if not include_history:
        query = query.where(Policy.is_current.is_(True))
    return list(session.scalars(query))


def _info(row: Policy) -> PolicyInfo:
    return PolicyInfo(row.id, row.scope, row.version, row.accept_minutes, dict(row.level_minutes),
                      row.resolve_minutes, row.warn_ratio, row.calendar_id)


def _validate(change: PolicyChange) -> None:
    errors: dict[str, list[str]] = {}
    if change.priority not in PRIORITY_SCOPES:
        errors["priority"] = ["应为 *、urgent 或 normal"]
    for name in ("accept_minutes", "resolve_minutes"):
        value = getattr(change, name)
        if value is not None and not 1 <= value <= MAX_LIMIT_MINUTES:
            errors[name] = [f"应在 1 到 {MAX_LIMIT_MINUTES} 之间"]
    if change.level_minutes is not None:
        bad = [k for k, v in change.level_minutes.items() if k not in LEVELS or not 1 <= int(v) <= MAX_LIMIT_MINUTES]
        if bad:
            errors["level_minutes"] = [f"键应为 {', '.join(LEVELS)} 之一，值应在 1 到 {MAX_LIMIT_MINUTES} 之间"]
    if change.warn_ratio is not None and not 0 < change.warn_ratio < 1:
        errors["warn_ratio"] = ["应大于 0 且小于 1"]
    if errors:
        raise Invalid("时限标准有误", errors)


def save_policy(session: Session, sla: SlaEngine, change: PolicyChange, *, actor: User | None,
                now: datetime) -> tuple[Policy, int]:
    """Create or change the policy of one scope; returns the new version and how many live clocks changed."""
    _validate(change)
    category: Category | None = None
    if change.category_code != "*":
        category = session.scalar(sa.select(Category).where(Category.code == change.category_code))
        if category is None:
            raise Invalid(f"未知的事件类别 {change.category_code}", {"category_code": ["没有使用此编码的类别"]})
    scope = scope_key(category.code if category else None, None if change.priority == "*" else change.priority)

    current_query = sa.select(Policy).where(Policy.scope == scope, Policy.is_current.is_(True))
    if session.get_bind().dialect.name == "postgresql":
        current_query = current_query.with_for_update(of=Policy)  # a concurrent edit of this scope waits, then conflicts
    current = session.scalar(current_query)
    if current is None and session.scalar(sa.select(Policy.id).where(Policy.scope == scope, Policy.is_current.is_(True))):
        # We waited on a concurrent edit that has just committed a new current version.
        raise Conflict("该时限标准刚被他人修改，请刷新后重试", {"scope": [scope]})
    if current is None:
        missing = [n for n in ("accept_minutes", "level_minutes", "resolve_minutes") if getattr(change, n) is None]
        if missing:
            raise Invalid("新的适用范围须填写全部时限", {n: ["新的适用范围必须填写"] for n in missing})
    calendar_id = current.calendar_id if current is not None else None
    if change.calendar is not None or calendar_id is None:
        try:
            calendar_id = get_calendar_row(session, change.calendar or "default", now).id
        except NotFound:
            raise Invalid(f"未找到工作日历 {change.calendar}", {"calendar": ["没有此名称的工作日历"]}) from None
    last_version = session.scalar(sa.select(sa.func.max(Policy.version)).where(Policy.scope == scope)) or 0

    def pick(name: str) -> Any:
        value = getattr(change, name)
        return value if value is not None else getattr(current, name)

    levels = pick("level_minutes")
    warn_ratio = change.warn_ratio if change.warn_ratio is not None else (current.warn_ratio if current is not None else 0.8)
    new = Policy(
        scope=scope, category_id=category.id if category else None,
        priority=None if change.priority == "*" else change.priority, version=last_version + 1, is_current=True,
        accept_minutes=pick("accept_minutes"), level_minutes={k: int(v) for k, v in dict(levels).items()},
        resolve_minutes=pick("resolve_minutes"), warn_ratio=warn_ratio,
        calendar_id=calendar_id, note=change.note, created_by_id=actor.id if actor else None, created_at=now,
    )
    if current is not None:
        # Retire first: the partial unique index allows one current row per scope. Guarded, so an
        # edit that raced ours finds nothing to retire and its insert then conflicts.
        retired = session.execute(sa.update(Policy).where(Policy.id == current.id, Policy.is_current.is_(True))
                                  .values(is_current=False).execution_options(synchronize_session=False)).rowcount
        set_committed_value(current, "is_current", False)
        if retired != 1:
            raise Conflict("该时限标准刚被他人修改，请刷新后重试", {"scope": [scope]})
    session.add(new)
    try:
        session.flush()
    except sa.exc.IntegrityError:
        # The transaction is unusable now; the edge rolls it back.
        raise Conflict("该时限标准刚被他人修改，请刷新后重试", {"scope": [scope]}) from None
    bump_version(session, POLICY_VERSION_KEY, now)
    changed = apply_to_running_clocks(session, sla, scope)
    logger.info("policy %s v%s saved by %s; %d live clock(s) changed", scope, new.version,
                actor.name if actor else "system", changed)
    return new, changed


def _current_policies(session: Session) -> dict[str, PolicyInfo]:
    rows = session.scalars(sa.select(Policy).where(Policy.is_current.is_(True)))
    return {row.scope: _info(row) for row in rows}


def apply_to_running_clocks(session: Session, sla: SlaEngine, scope: str) -> int:
    """Apply the policy each live clock's event now resolves to, where it differs; returns clocks changed.

    Only events the changed scope can reach are looked at (its category, or a 小类 under it, and
    its priority); the resolution reads the session, not the per-process cache, so an edit that
    is rolled back leaves no trace in any cache.
    """
    code, priority = scope.split("|")
    policies = _current_policies(session)
    parent = aliased(Category)
    combos = sa.select(Event.category_id, Event.priority).distinct().where(
        sa.exists().where(Clock.event_id == Event.id, Clock.state.in_(LIVE_STATES)))
    if code != "*":
        combos = combos.join(Category, Category.id == Event.category_id).outerjoin(parent, parent.id == Category.parent_id) \
            .where(sa.or_(Category.code == code, parent.code == code))
    if priority != "*":
        combos = combos.where(Event.priority == priority)
    changed = 0
    postgres = session.get_bind().dialect.name == "postgresql"
    for category_id, event_priority in session.execute(combos).all():
        category = session.get(Category, category_id)
        resolved = next((policies[s] for s in candidate_scopes(category, event_priority) if s in policies), None)
        if resolved is None:
            continue
        clocks = (
            sa.select(Clock).join(Event, Event.id == Clock.event_id)
            .where(Clock.state.in_(LIVE_STATES), Clock.policy_id != resolved.id,
                   Event.category_id == category_id, Event.priority == event_priority)
            .order_by(Clock.id)
        )
        if postgres:
            clocks = clocks.with_for_update(of=Clock)  # wait for a sweeper batch holding them, then read fresh
        for clock in session.scalars(clocks):
            before = clock.policy_id
            sla.apply_policy(session, clock, resolved)
            changed += clock.policy_id != before
    session.flush()
    return changed
