"""The sweeper: claim due clocks in batches and apply their effects exactly once.

Effects (DESIGN §5):
- a warning threshold crossed → one warning to the owner unit;
- a level clock overdue → the event moves to the parent unit (one level per pass), a `system`
  audit row, a new level clock from the escalation instant, a notification to the new owner;
  at the district the event stays and is flagged 督办;
- an accept or resolve clock overdue → marked breached, once.

Exactly once: on PostgreSQL the batch is claimed with FOR UPDATE SKIP LOCKED (and its events with
SKIP LOCKED too, so the sweeper never waits on a web request and can never deadlock with one); on
SQLite one sweeper holds a lease and every batch runs under the database's single write lock.
Whatever the database, each effect is a guarded UPDATE (… WHERE state = 'running' AND …) and
backed by a UNIQUE constraint (one escalation per clock, one notification per dedupe key), so a
second sweeper, a retry or a crash mid-batch can neither lose nor double anything: a batch
commits whole or not at all.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..events.models import Category, Event
from ..events.service import INSERT_HISTORY, history_values
from ..events.states import ESCALATABLE
from ..sla.engine import SlaEngine
from ..sla.models import Clock, Escalation, Notification
from ..territory.models import ServiceState, Unit

logger = logging.getLogger(__name__)

LEASE_KEY = "sweeper_lease"
LEASE_SECONDS = 120
BATCH_SIZE = 500

clocks_t = Clock.__table__
events_t = Event.__table__


@dataclass
class SweepResult:
    claimed: int = 0
    warned: int = 0
    breached: int = 0
    escalated: int = 0
    supervised: int = 0
    batches: int = 0
    skipped: str | None = None
    skipped_ids: set[int] = field(default_factory=set, repr=False)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("skipped_ids")
        return out


def sweeper_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# -- SQLite lease ---------------------------------------------------------------------------


def acquire_lease(session: Session, owner: str, wall_now: datetime) -> str | None:
    """Take or renew the sweeper lease; None when taken, else the current holder."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(sa.text("BEGIN IMMEDIATE"))
    row = session.get(ServiceState, LEASE_KEY)
    expires = wall_now + timedelta(seconds=LEASE_SECONDS)
    value = f"{owner}|{expires.isoformat()}"
    if row is None:
        session.add(ServiceState(key=LEASE_KEY, value=value, updated_at=wall_now))
    else:
        holder, _, until = row.value.partition("|")
        if holder != owner and until and datetime.fromisoformat(until) > wall_now:
            session.rollback()
            return holder
        row.value, row.updated_at = value, wall_now
    session.commit()
    return None


def release_lease(session: Session, owner: str) -> None:
    session.execute(sa.delete(ServiceState).where(ServiceState.key == LEASE_KEY, ServiceState.value.like(f"{owner}|%")))
    session.commit()


# -- one batch --------------------------------------------------------------------------------


def _claim(session: Session, now: datetime, limit: int, exclude: set[int]) -> list[sa.Row]:
    postgres = session.get_bind().dialect.name == "postgresql"
    if not postgres:
        # Take SQLite's write lock before reading, so the batch sees what no one else can change.
        session.execute(sa.text("BEGIN IMMEDIATE"))
    query = (
        sa.select(clocks_t)
        .where(clocks_t.c.state == "running", clocks_t.c.next_check_at <= now)
        .order_by(clocks_t.c.next_check_at, clocks_t.c.id)
        .limit(limit)
    )
    if exclude:
        query = query.where(clocks_t.c.id.not_in(exclude))
    if postgres:
        query = query.with_for_update(skip_locked=True)
    return list(session.execute(query))


def _events(session: Session, event_ids: list[int]) -> dict[int, sa.Row]:
    owner, parent = Unit.__table__.alias("owner"), Unit.__table__.alias("parent")
    query = (
        sa.select(events_t.c.id, events_t.c.state, events_t.c.level, events_t.c.owner_id, events_t.c.version,
                  events_t.c.category_id, events_t.c.priority, events_t.c.handler_id, events_t.c.is_supervised,
                  owner.c.name.label("owner_name"), parent.c.id.label("parent_id"), parent.c.level.label("parent_level"),
                  parent.c.name.label("parent_name"))
        .select_from(events_t.join(owner, owner.c.id == events_t.c.owner_id).outerjoin(parent, parent.c.id == owner.c.parent_id))
        .where(events_t.c.id.in_(event_ids))
    )
    if session.get_bind().dialect.name == "postgresql":
        # Skip events a web request is changing right now; their clocks stay due for the next pass.
        query = query.with_for_update(of=events_t, skip_locked=True)
    return {row.id: row for row in session.execute(query)}


def _insert_ignoring_duplicates(session: Session, table: sa.Table, rows: list[dict[str, Any]], key: str) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    session.execute(insert(table).on_conflict_do_nothing(index_elements=[key]), rows)


def sweep_batch(session: Session, sla: SlaEngine, now: datetime, categories: dict[int, Category],
                result: SweepResult, batch_size: int = BATCH_SIZE) -> int:
    """Claim and process one batch in the current transaction (the caller commits); returns its size."""
    claimed = _claim(session, now, batch_size, result.skipped_ids)
    if not claimed:
        return 0
    events = _events(session, sorted({c.event_id for c in claimed}))
    warn_ids, breach_ids, level_done, new_clocks = [], [], [], []
    escalations, event_moves, supervise, histories, notes = [], [], [], [], []
    moved: set[int] = set()
    for clock in claimed:
        event = events.get(clock.event_id)
        if event is None:  # locked by a web request (PostgreSQL): try again next pass
            result.skipped_ids.add(clock.id)
            continue
        calendar = sla.calendar(session, clock.calendar_id)
        if now >= clock.due_at:
            if clock.metric != "level":
                breach_ids.append({"b_id": clock.id, "b_now": now})
                notes.append(_note(f"breached:{clock.id}", event.owner_id, event.id, clock.id, "breached",
                                   f"{'立案' if clock.metric == 'accept' else '处置'}时限已超期", now))
                continue
            used = clock.used_minutes + calendar.between(clock.segment_started_at, now)
            level_done.append({"b_id": clock.id, "b_now": now, "b_used": used})
            late = max(0.0, calendar.between(clock.due_at, now))
            stale = event.state not in ESCALATABLE or event.owner_id != clock.owner_id or event.id in moved
            if stale:
                continue  # the event moved on by hand; this clock only ends
            moved.add(event.id)
            if event.parent_id is None:
                supervise.append({"b_id": event.id, "b_version": event.version, "b_now": now})
                histories.append(history_values(
                    event_id=event.id, actor=None, action="supervise", now=now, from_state=event.state,
                    to_state=event.state, from_level=event.level, to_level=event.level, from_owner_id=event.owner_id,
                    to_owner_id=event.owner_id, note="区级处置超时，列入督办",
                    details={"clock_id": clock.id, "due_at": clock.due_at.isoformat(), "late_minutes": round(late, 2)}))
                notes.append(_note(f"supervise:{clock.id}", event.owner_id, event.id, clock.id, "supervise",
                                   "区级处置时限已到，事件列入督办", now))
                continue
            to_state = "registered" if event.state == "dispatched" else event.state
            event_moves.append({"b_id": event.id, "b_version": event.version, "b_owner_id": event.parent_id,
                                "b_level": event.parent_level, "b_state": to_state,
                                "b_handler_id": None if to_state == "registered" else event.handler_id, "b_now": now})
            escalations.append({"event_id": event.id, "clock_id": clock.id, "reason": "timer", "from_level": event.level,
                                "to_level": event.parent_level, "from_owner_id": event.owner_id,
                                "to_owner_id": event.parent_id, "due_at": clock.due_at, "escalated_at": now,
                                "late_minutes": late})
            histories.append(history_values(
                event_id=event.id, actor=None, action="escalate", now=now, from_state=event.state, to_state=to_state,
                from_level=event.level, to_level=event.parent_level, from_owner_id=event.owner_id,
                to_owner_id=event.parent_id, note=f"{event.owner_name}处置超时，自动上报至{event.parent_name}",
                details={"clock_id": clock.id, "due_at": clock.due_at.isoformat(), "late_minutes": round(late, 2)}))
            policy = sla.policy_for(session, categories[event.category_id], event.priority, now)
            row = sla.new_clock(session, event.id, policy, "level", start=now, seq=clock.seq + 1,
                                level=event.parent_level, owner_id=event.parent_id)
            if row is not None:
                new_clocks.append(row)
            notes.append(_note(f"escalated:{clock.id}", event.parent_id, event.id, clock.id, "escalated",
                               f"{event.owner_name}处置超时，事件已自动上报至本单位", now))
        elif clock.warned_at is None and now >= clock.warn_at:
            warn_ids.append({"b_id": clock.id, "b_now": now})
            notes.append(_note(f"warning:{clock.id}", event.owner_id, event.id, clock.id, "warning",
                               f"{_METRIC_NAMES[clock.metric]}时限即将到期（{_local(clock.due_at)}）", now))
        else:
            # Nothing is due after all (a stale check instant): look again when something is.
            session.execute(sa.update(clocks_t).where(clocks_t.c.id == clock.id, clocks_t.c.state == "running")
                            .values(next_check_at=clock.warn_at if clock.warned_at is None else clock.due_at))

    c = clocks_t.c
    if warn_ids:
        session.execute(sa.update(clocks_t).where(c.id == sa.bindparam("b_id"), c.state == "running", c.warned_at.is_(None))
                        .values(warned_at=sa.bindparam("b_now"), next_check_at=c.due_at), warn_ids)
    if breach_ids:
        session.execute(sa.update(clocks_t).where(c.id == sa.bindparam("b_id"), c.state == "running", c.breached_at.is_(None))
                        .values(breached_at=sa.bindparam("b_now"), next_check_at=None), breach_ids)
    if level_done:
        session.execute(sa.update(clocks_t).where(c.id == sa.bindparam("b_id"), c.state == "running")
                        .values(state="breached", breached_at=sa.bindparam("b_now"), stopped_at=sa.bindparam("b_now"),
                                used_minutes=sa.bindparam("b_used"), segment_started_at=None, next_check_at=None), level_done)
    e = events_t.c
    if event_moves:
        session.execute(sa.update(events_t).where(e.id == sa.bindparam("b_id"), e.version == sa.bindparam("b_version"))
                        .values(owner_id=sa.bindparam("b_owner_id"), level=sa.bindparam("b_level"), state=sa.bindparam("b_state"),
                                handler_id=sa.bindparam("b_handler_id"), needs_triage=False, updated_at=sa.bindparam("b_now"),
                                version=e.version + 1), event_moves)
    if supervise:
        session.execute(sa.update(events_t).where(e.id == sa.bindparam("b_id"), e.version == sa.bindparam("b_version"))
                        .values(is_supervised=True, updated_at=sa.bindparam("b_now"), version=e.version + 1), supervise)
    if escalations:
        session.execute(sa.insert(Escalation.__table__), escalations)  # UNIQUE(clock_id): a double fails the batch
    if histories:
        session.execute(INSERT_HISTORY, histories)
    if new_clocks:
        session.execute(sa.insert(clocks_t), new_clocks)
    _insert_ignoring_duplicates(session, Notification.__table__, notes, "dedupe_key")

    result.claimed += len(claimed)
    result.warned += len(warn_ids)
    result.breached += len(breach_ids) + len(level_done)
    result.escalated += len(escalations)
    result.supervised += len(supervise)
    result.batches += 1
    return len(claimed)


_METRIC_NAMES = {"accept": "立案", "level": "本级处置", "resolve": "处置"}


def _local(value: datetime) -> str:
    from zoneinfo import ZoneInfo

    return value.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%m-%d %H:%M")


def _note(key: str, unit_id: int, event_id: int, clock_id: int, kind: str, message: str, now: datetime) -> dict[str, Any]:
    return {"dedupe_key": key, "unit_id": unit_id, "event_id": event_id, "clock_id": clock_id, "kind": kind,
            "message": message, "created_at": now, "read_at": None, "read_by_id": None}


def sweep(session: Session, sla: SlaEngine, now: datetime, *, batch_size: int = BATCH_SIZE,
          wall_clock: Callable[[], datetime] | None = None, owner: str | None = None,
          max_batches: int | None = None) -> SweepResult:
    """One pass over everything due at `now`, in committed batches; each event moves at most one level."""
    result = SweepResult()
    owner = owner or sweeper_id()
    sqlite = session.get_bind().dialect.name == "sqlite"
    if sqlite:
        holder = acquire_lease(session, owner, (wall_clock or (lambda: now))())
        if holder is not None:
            result.skipped = f"lease held by {holder}"
            return result
    categories = {c.id: c for c in session.scalars(sa.select(Category).options(sa.orm.joinedload(Category.parent)))}
    try:
        while max_batches is None or result.batches < max_batches:
            try:
                size = sweep_batch(session, sla, now, categories, result, batch_size)
                session.commit()
            except Exception:
                session.rollback()
                raise
            if size == 0:
                break
    finally:
        if sqlite:
            release_lease(session, owner)
    return result
