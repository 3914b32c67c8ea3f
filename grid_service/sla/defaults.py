"""The calendars and policies every installation starts with.

Figures follow the digital-urban-management practice collected in research/domain.md: 立案 within
1 working hour; 暴露垃圾 4 working hours, 道路不洁 2, 占道经营 1 working day, 私搭乱建 20 working days;
urgent cases on the natural (24×7) clock (12345: emergencies fed back within 2 hours).
"""
from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..infra.db import savepoint
from .models import CalendarRow, Policy

logger = logging.getLogger(__name__)

DEFAULT_CALENDAR = "default"
NATURAL_CALENDAR = "24x7"
WORKING_DAY = 420  # minutes in the default template's day (09:00–12:00, 13:30–17:30)

DEFAULT_LEVELS = {"grid": 240, "community": 480, "street": 2 * WORKING_DAY, "district": 4 * WORKING_DAY}
URGENT_LEVELS = {"grid": 30, "community": 30, "street": 60, "district": 120}

# (scope, accept, levels, resolve, calendar)
DEFAULT_POLICIES: list[tuple[str, int, dict[str, int], int, str]] = [
    ("*|*", 60, DEFAULT_LEVELS, 5 * WORKING_DAY, DEFAULT_CALENDAR),
    ("*|urgent", 30, URGENT_LEVELS, 120, NATURAL_CALENDAR),
]

# Per 小类 name (the demo catalogue's names), resolve limit in working minutes and level limits.
CATEGORY_LIMITS: dict[str, tuple[int, dict[str, int]]] = {
    "暴露垃圾": (240, {"grid": 60, "community": 60, "street": 60, "district": 60}),
    "道路不洁": (120, {"grid": 30, "community": 30, "street": 30, "district": 30}),
    "路面积水": (240, {"grid": 60, "community": 60, "street": 60, "district": 60}),
    "占道经营": (WORKING_DAY, {"grid": 120, "community": 120, "street": 120, "district": 90}),
    "私搭乱建": (20 * WORKING_DAY, {"grid": 2 * WORKING_DAY, "community": 4 * WORKING_DAY,
                              "street": 7 * WORKING_DAY, "district": 7 * WORKING_DAY}),
    "渣土": (2 * WORKING_DAY, {"grid": 240, "community": 240, "street": WORKING_DAY, "district": WORKING_DAY}),
    "绿地养护": (5 * WORKING_DAY, DEFAULT_LEVELS),
}


def _add_unless_raced(session: Session, rows: list[object]) -> None:
    """Insert `rows` in a savepoint; if another process inserted the same keys first (a fresh
    installation whose sweepers and requests all start at once), keep theirs: after the savepoint
    is rolled back the other transaction's committed rows are what the next query reads."""
    if not rows:
        return
    try:
        with savepoint(session):
            session.add_all(rows)
    except sa.exc.IntegrityError:
        logger.info("default SLA rows were created by another process at the same time; using theirs")


def _calendars(session: Session) -> dict[str, CalendarRow]:
    return {row.name: row for row in session.scalars(sa.select(CalendarRow))}


def ensure_calendars(session: Session, now: datetime) -> dict[str, CalendarRow]:
    """The default working calendar (China, Asia/Shanghai) and the natural one, created if missing."""
    rows = _calendars(session)
    missing = [CalendarRow(name=name, kind=kind, timezone="Asia/Shanghai", weekly=None, source=source, created_at=now)
               for name, kind, source in ((DEFAULT_CALENDAR, "working", "cn"), (NATURAL_CALENDAR, "natural", None))
               if name not in rows]
    if missing:
        _add_unless_raced(session, missing)
        rows = _calendars(session)
    return rows


def ensure_default_policies(session: Session, now: datetime) -> None:
    """The catch-all policies ('*|*' and '*|urgent'), created if missing."""
    calendars = ensure_calendars(session, now)
    existing = set(session.scalars(sa.select(Policy.scope).where(Policy.is_current.is_(True))))
    _add_unless_raced(session, [
        Policy(scope=scope, category_id=None, priority=scope.split("|")[1] if scope != "*|*" else None,
               version=1, is_current=True, accept_minutes=accept, level_minutes=dict(levels),
               resolve_minutes=resolve, warn_ratio=0.8, calendar_id=calendars[calendar].id,
               note="默认时限", created_at=now)
        for scope, accept, levels, resolve, calendar in DEFAULT_POLICIES if scope not in existing])
