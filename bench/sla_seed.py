"""Bulk seeding of open events with their SLA clocks, for the sweep benchmark and the durability tests.

Everything goes in with Core `insert()` executemany (COPY on PostgreSQL; no API, no ORM unit of
work), with primary keys taken up front (from the sequence on PostgreSQL), but the rows are
the ones the service would have written: each event gets its `report` audit row (and `register`
once registered), and its clocks are exactly what `SlaEngine.new_clock` computes from `received_at`;
an accept clock of a registered event is stopped as met, the way `SlaEngine.stop` leaves it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from grid_service.auth.models import User
from grid_service.events import audit
from grid_service.events.audit import history_values
from grid_service.events.models import Category, Event, EventHistory
from grid_service.sla.engine import PolicyInfo, SlaEngine
from grid_service.sla.models import Clock
from grid_service.territory.models import Unit

# Working minutes after receipt at which a registered event was registered (立案), within any accept limit.
REGISTER_AFTER = 20
CHUNK = 20_000  # rows per executemany call, to bound memory


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One event to seed: who holds it, since when, in which state."""

    owner_id: int
    level: str
    received_at: datetime
    state: str = "registered"  # reported | registered | dispatched | in_progress
    # The sweeper already sent the level clock's warning (it ran between warn_at and due_at).
    level_warned: bool = False


@dataclass(frozen=True)
class People:
    """Who reported, registered and handles the seeded events."""

    reporter: int
    supervisor: int
    handler: int


def ensure_people(session: Session, district_id: int, now: datetime) -> People:
    """A reporter, a supervisor and a handler (Core inserts; reused when present)."""
    users = User.__table__
    ids: dict[str, int] = {}
    roles = (("grid_worker", "seed-reporter"), ("supervisor", "seed-supervisor"), ("handler", "seed-handler"))
    for role, name in roles:
        found = session.scalar(sa.select(users.c.id).where(users.c.name == name))
        if found is None:
            found = session.execute(sa.insert(users).returning(users.c.id), {
                "name": name, "display_name": name, "role": role, "unit_id": district_id, "is_active": True,
                "created_at": now}).scalar_one()
        ids[role] = found
    return People(ids["grid_worker"], ids["supervisor"], ids["handler"])


def build_territory(session: Session, now: datetime, *, streets: int, communities: int, grids: int,
                    district_code: str = "150299") -> dict[str, list[tuple[int, str]]]:
    """A district → streets → communities → grids tree (Core inserts); (id, code) per level."""
    units = Unit.__table__
    out: dict[str, list[tuple[int, str]]] = {}

    def insert(rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
        statement = sa.insert(units).returning(units.c.id, sort_by_parameter_order=True)
        ids = session.execute(statement, rows).scalars().all()
        return list(zip(ids, [r["code"] for r in rows]))

    base = {"region": None, "boundary": None, "created_at": now, "updated_at": now}
    out["district"] = insert([{"code": district_code, "name": "压测区", "level": "district", "parent_id": None,
                               "path": f"/{district_code}/", **base}])
    plan = (("street", streets, 3), ("community", communities, 3), ("grid", grids, 2))
    parents = [(out["district"][0][0], district_code, f"/{district_code}/")]
    for level, per_parent, digits in plan:
        rows = [{"code": f"{code}{i + 1:0{digits}d}", "name": f"{level}-{code}{i + 1:0{digits}d}", "level": level,
                 "parent_id": pid, "path": f"{path}{code}{i + 1:0{digits}d}/", **base}
                for pid, code, path in parents for i in range(per_parent)]
        out[level] = insert(rows)
        parents = [(uid, code, row["path"]) for (uid, code), row in zip(out[level], rows)]
    return out


class ClockFactory:
    """`SlaEngine.new_clock` rows, memoised per (policy, metric, level, start): seeding needs thousands alike."""

    def __init__(self, session: Session, sla: SlaEngine) -> None:
        self.session, self.sla = session, sla
        self._memo: dict[tuple[Any, ...], dict[str, Any] | None] = {}

    def new(self, policy: PolicyInfo, metric: str, start: datetime, level: str | None = None) -> dict[str, Any] | None:
        """A running clock from `start` (event_id and owner_id are the caller's to fill in)."""
        key = (policy.id, metric, level, start)
        if key not in self._memo:
            self._memo[key] = self.sla.new_clock(self.session, 0, policy, metric, start=start, level=level,
                                                 owner_id=None)
        return self._memo[key]

    def met(self, policy: PolicyInfo, metric: str, start: datetime, stop_after: int) -> dict[str, Any] | None:
        """A clock stopped as met `stop_after` working minutes after `start` (what `SlaEngine.stop` leaves)."""
        key = (policy.id, metric, "met", start, stop_after)
        if key not in self._memo:
            row = self.new(policy, metric, start)
            if row is None:
                self._memo[key] = None
            else:
                calendar = self.sla.calendar(self.session, policy.calendar_id)
                stopped = calendar.add(start, min(stop_after, row["limit_minutes"] - 1))
                self._memo[key] = row | {"state": "met", "used_minutes": calendar.between(start, stopped),
                                         "segment_started_at": None, "next_check_at": None, "stopped_at": stopped}
        return self._memo[key]


def bulk_insert(session: Session, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows in bulk: Core `insert()` executemany; on PostgreSQL COPY, several times faster there."""
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(sa.insert(table), rows)
        return
    from psycopg.types.json import Json

    names = list(rows[0])
    json_columns = {name for name in names if isinstance(table.c[name].type, sa.JSON)}
    cursor = session.connection().connection.driver_connection.cursor()
    with cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([Json(row[name]) if name in json_columns else row[name] for name in names])


def allocate_ids(session: Session, table: sa.Table, count: int) -> list[int]:
    """`count` fresh primary keys for `table` (from its sequence on PostgreSQL), so rows can be inserted with them."""
    if session.get_bind().dialect.name == "postgresql":
        return list(session.scalars(sa.text(f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) "
                                            "FROM generate_series(1, :n)"), {"n": count}))
    first = (session.scalar(sa.select(sa.func.max(table.c.id))) or 0) + 1
    return list(range(first, first + count))


def seed_events(session: Session, sla: SlaEngine, category: Category, specs: Sequence[EventSpec], people: People,
                *, priority: str = "normal", description: str = "路边暴露垃圾，请尽快清运") -> list[int]:
    """Insert the events, their audit rows and their clocks; returns the event ids in `specs` order."""
    now = max(spec.received_at for spec in specs)
    policy = sla.policy_for(session, category, priority, now)
    factory = ClockFactory(session, sla)
    key = audit.current_key()
    ids = allocate_ids(session, Event.__table__, len(specs))
    for lo in range(0, len(specs), CHUNK):
        chunk, chunk_ids = specs[lo:lo + CHUNK], ids[lo:lo + CHUNK]
        bulk_insert(session, Event.__table__, [_event_row(event_id, spec, category.id, priority, description, people)
                                               for event_id, spec in zip(chunk_ids, chunk)])
        history: list[dict[str, Any]] = []
        clock_rows: list[dict[str, Any]] = []
        for event_id, spec in zip(chunk_ids, chunk):
            trail_start = len(history)
            history.append(history_values(
                event_id=event_id, actor=None, action="report", now=spec.received_at, from_state=None,
                to_state="reported", from_level=None, to_level=spec.level, from_owner_id=None,
                to_owner_id=spec.owner_id)
                | {"actor_id": people.reporter, "actor_role": "grid_worker"})
            if spec.state == "reported":
                accept = factory.new(policy, "accept", spec.received_at)
            else:
                accept = factory.met(policy, "accept", spec.received_at, REGISTER_AFTER)
                history.append(history_values(
                    event_id=event_id, actor=None, action="register",
                    now=accept["stopped_at"] if accept else spec.received_at,
                    from_state="reported", to_state="registered", from_level=spec.level, to_level=spec.level,
                    from_owner_id=spec.owner_id, to_owner_id=spec.owner_id)
                    | {"actor_id": people.supervisor, "actor_role": "supervisor"})
            audit.seal_trail(key, history[trail_start:])  # seq 1.., chained: the event's version is its length
            level = factory.new(policy, "level", spec.received_at, spec.level)
            resolve = factory.new(policy, "resolve", spec.received_at)
            if accept is not None:
                clock_rows.append(accept | {"event_id": event_id})
            if level is not None:
                row = level | {"event_id": event_id, "owner_id": spec.owner_id}
                if spec.level_warned and level["warn_at"] < level["due_at"]:
                    row |= {"warned_at": level["warn_at"], "next_check_at": level["due_at"]}
                clock_rows.append(row)
            if resolve is not None:
                clock_rows.append(resolve | {"event_id": event_id})
        bulk_insert(session, EventHistory.__table__, history)
        bulk_insert(session, Clock.__table__, clock_rows)
    return ids


def _event_row(event_id: int, spec: EventSpec, category_id: int, priority: str, description: str,
               people: People) -> dict[str, Any]:
    handled = spec.state in ("dispatched", "in_progress")
    return {
        "id": event_id, "source": "grid_worker", "category_id": category_id, "priority": priority, "state": spec.state,
        "level": spec.level, "owner_id": spec.owner_id, "located_unit_id": spec.owner_id, "grid_id": None,
        "handler_id": people.handler if handled else None, "reporter_id": people.reporter, "merged_into_id": None,
        "description": description, "address": "", "lat": None, "lon": None, "resident_name": None,
        "resident_phone_enc": None, "resident_phone_index": None, "resident_phone_masked": None,
        "needs_triage": False, "is_supervised": False, "triage_reason": None,
        "return_count": 0, "rework_count": 0, "reopen_count": 0, "received_at": spec.received_at,
        "created_at": spec.received_at, "updated_at": spec.received_at, "resolved_at": None, "closed_at": None,
        "version": 1 if spec.state == "reported" else 2,  # report (and register): one version per audit row
    }


def spread(count: int, first: int, last: int) -> list[int]:
    """`count` integers spread evenly over [first, last] (deterministic, no randomness needed)."""
    if count <= 1:
        return [first] * count
    step = (last - first) / (count - 1)
    return [first + math.floor(i * step) for i in range(count)]
