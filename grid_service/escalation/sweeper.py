"""The sweeper: claim due clocks in batches and apply their effects exactly once.

Effects (DESIGN §5):
- a warning threshold crossed → one warning to the owner unit;
- a level clock overdue → the event moves to the parent unit (one level per pass), a `system`
  audit row, a new level clock from the escalation instant, a notification to the new owner;
  at the district the event stays and is flagged 督办 (once);
- an accept or resolve clock overdue → marked breached, once.

A pass reads the ids of the clocks due at `now` (a snapshot, in event order) and works through it
in batches; each batch claims the clocks of its slice that are still due. When the snapshot is used
up the pass reads another, and it ends when one is empty or yielded nothing.

Exactly once. On PostgreSQL a batch is claimed with one query that locks its clocks and their
events FOR UPDATE SKIP LOCKED: concurrent sweepers take disjoint batches, and a clock whose event a
web request (or another sweeper) holds is left for a later batch or pass — the sweeper never
waits on a row lock, so it can never deadlock with a request. On SQLite one sweeper holds a lease
(renewed with every batch, so a sweeper that lost it stops; taken over at once from a process on
this host that died) and every batch runs under the database's single write lock (BEGIN
IMMEDIATE). Whatever the database, every update is guarded — compare-and-set against the state or
version read — and its row count is checked, and every effect that must happen once is backed by a
UNIQUE constraint (one escalation per clock, one notification per dedupe key): a batch commits
whole or not at all, so a second sweeper, a retry or a crash mid-batch can neither lose nor double
anything.

Speed (bench/sweep.py). A batch is one claim query plus one set-based statement per kind of write,
whatever its size: the batch's rows reach the database as one table `r` (a JSON document read by
json_to_recordset on PostgreSQL, a multi-row VALUES list on SQLite) in an INSERT … SELECT or
UPDATE … FROM. Python only does what needs the working calendar (time used, lateness) and builds
tuples; the next level clock is computed once per policy and level, since every escalation of a
pass starts it at the same instant. The audit links are sealed (an HMAC each) on a thread of their
own while the batch's other statements run in the database. On PostgreSQL the server's work (index
and foreign-key upkeep) outweighs Python's, so a pass runs SWEEP_WORKERS batches at once, each in
its own thread and connection; they stay apart exactly as separate sweepers do.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import re
import socket
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .. import audit
from ..events.models import Category, Event, EventHistory
from ..events.states import ESCALATABLE, PRIORITIES
from ..extensions import begin_writing
from ..notify.outbox import outbox_rows_for_escalations
from ..sla.engine import SlaEngine
from ..sla.models import Clock
from ..territory.models import ServiceState, Unit
from ..timeutil import UTCDateTime

logger = logging.getLogger(__name__)

LEASE_KEY = "sweeper_lease"
LEASE_SECONDS = 120
# Clocks per batch (one transaction). A batch of 2,000 escalations takes about 0.1 s, which bounds
# how long a web request can wait on the SQLite write lock or on a claimed event's row lock.
BATCH_SIZE = 2000

clocks_t = Clock.__table__
events_t = Event.__table__
history_t = EventHistory.__table__
units_t = Unit.__table__


class SweepConflict(RuntimeError):
    """A guarded write matched fewer rows than the batch claimed: the batch is rolled back whole."""


@dataclass
class SweepResult:
    claimed: int = 0
    warned: int = 0
    breached: int = 0
    escalated: int = 0
    supervised: int = 0
    batches: int = 0
    skipped: str | None = None

    def summary(self) -> dict[str, Any]:
        return asdict(self)

    def add(self, other: SweepResult) -> None:
        """Count `other`'s work (a batch run elsewhere) in this one."""
        for field in fields(self):
            mine = getattr(self, field.name)
            if isinstance(mine, int):  # the counts (not `skipped`)
                setattr(self, field.name, mine + getattr(other, field.name))


def sweeper_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# -- SQLite lease ---------------------------------------------------------------------------


def _lease_value(owner: str, wall_now: datetime) -> str:
    return f"{owner}|{(wall_now + timedelta(seconds=LEASE_SECONDS)).isoformat()}"


def acquire_lease(session: Session, owner: str, wall_now: datetime) -> str | None:
    """Take or renew the sweeper lease; None when taken, else the current holder."""
    begin_writing(session)
    # populate_existing: the session keeps objects across commits (expire_on_commit=False), and a
    # lease row it remembers may have been taken over by another sweeper since.
    row = session.get(ServiceState, LEASE_KEY, populate_existing=True)
    value = _lease_value(owner, wall_now)
    if row is None:
        session.add(ServiceState(key=LEASE_KEY, value=value, updated_at=wall_now))
    else:
        holder, _, until = row.value.partition("|")
        if holder != owner and until and datetime.fromisoformat(until) > wall_now and not _holder_is_gone(holder):
            session.rollback()
            return holder
        row.value, row.updated_at = value, wall_now
    session.commit()
    return None


def _holder_is_gone(holder: str) -> bool:
    """Whether the lease holder was a process on this host that no longer exists (killed, crashed)."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        logger.warning("sweeper lease holder %s is gone; taking the lease over", holder)
        return True
    except PermissionError:
        return False
    return False


def _held_by(owner: str) -> sa.ColumnElement[bool]:
    return ServiceState.value.startswith(f"{owner}|", autoescape=True)


def _renew_lease(session: Session, owner: str, wall_now: datetime) -> bool:
    """Extend our lease inside the batch's transaction; False when another sweeper has taken it."""
    updated = session.execute(
        sa.update(ServiceState).where(ServiceState.key == LEASE_KEY, _held_by(owner))
        .values(value=_lease_value(owner, wall_now), updated_at=wall_now))
    return updated.rowcount == 1


def release_lease(session: Session, owner: str) -> None:
    session.execute(sa.delete(ServiceState).where(ServiceState.key == LEASE_KEY, _held_by(owner)))
    session.commit()


# -- set-based writes: the batch's rows as a table `r`, one statement per kind of write ------------

TIME, BIGINT, FLOAT, TEXT, JSON, BOOL = "timestamptz", "bigint", "double precision", "text", "json", "boolean"
Columns = tuple[tuple[str, str], ...]  # (name, PostgreSQL type) of each per-row value
Consts = dict[str, tuple[str, Any]]  # {name: (PostgreSQL type, value)} for the {name} slots of a statement
_SLOT = re.compile(r"\{(\w+)\}")
_to_json = json.JSONEncoder().encode  # what SQLAlchemy's JSON type stores (json.dumps' defaults)


class _Writer:
    """Runs one batch's statements: each reads the batch's rows as a table `r`, in one round trip.

    On PostgreSQL the rows travel as one JSON document read by json_to_recordset; on SQLite as one
    multi-row VALUES list (binding a parameter costs far less there than extracting a JSON field).
    The statements are the same SQL on both; `{name}` slots take constants (the instant, a clock's
    limits) as parameters.
    """

    SQLITE_MAX_PARAMS = 32766  # SQLite's default limit since 3.32

    def __init__(self, session: Session) -> None:
        self.connection = session.connection()
        self.pg = self.connection.dialect.name == "postgresql"

    def instant(self, value: datetime) -> str:
        """An instant as the text each database reads back exactly (on SQLite: what UTCDateTime stores)."""
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the sweeper")
        if self.pg:
            return value.isoformat()
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")

    def json(self, value: dict[str, Any]) -> Any:
        """A JSON column's value: nested as is in PostgreSQL's document, serialised text on SQLite."""
        return value if self.pg else _to_json(value)

    def raw_instant(self, value: Any) -> str:
        """`instant` of a value as the claim query returned it (SQLite's stored text is already right)."""
        return value if isinstance(value, str) else self.instant(value)

    def run(self, body: str, rows: list[tuple[Any, ...]], columns: Columns, consts: Consts | None = None) -> int:
        """Execute `body` with `WITH r(…)` in front; returns how many rows it changed or inserted."""
        if not rows:
            return 0
        slots = [consts[name] for name in _SLOT.findall(body)] if consts else []
        if self.pg:
            spec = ", ".join(f'"{name}" {pg_type}' for name, pg_type in columns)
            keys = [name for name, _ in columns]
            document = json.dumps([dict(zip(keys, row)) for row in rows], ensure_ascii=False, separators=(",", ":"))
            types = iter(pg_type for pg_type, _ in slots)
            sql = (f"WITH r AS (SELECT * FROM json_to_recordset(CAST(%s AS json)) AS x({spec})) "
                   + _SLOT.sub(lambda _: f"CAST(%s AS {next(types)})", body))
            return self.connection.exec_driver_sql(sql, (document, *(value for _, value in slots))).rowcount
        names = ", ".join(f'"{name}"' for name, _ in columns)
        row_marks = f"({', '.join('?' * len(columns))})"
        statement = _SLOT.sub("?", body)
        step = max(1, (self.SQLITE_MAX_PARAMS - len(slots)) // len(columns))
        total = 0
        for lo in range(0, len(rows), step):
            chunk = rows[lo:lo + step]
            sql = f"WITH r({names}) AS (VALUES {', '.join([row_marks] * len(chunk))}) {statement}"
            params = (*itertools.chain.from_iterable(chunk), *(value for _, value in slots))
            self.connection.exec_driver_sql(sql, params)
            # sqlite3 reports no rowcount for a statement that starts with WITH; SQLite itself knows.
            total += self.connection.exec_driver_sql("SELECT changes()").scalar_one()
        return total

    def update(self, body: str, rows: list[tuple[Any, ...]], columns: Columns, what: str,
               consts: Consts | None = None) -> None:
        """A guarded UPDATE: every row must pass its guard, or the whole batch fails."""
        count = self.run(body, rows, columns, consts)
        if count != len(rows):
            raise SweepConflict(f"{what}: {count} of {len(rows)} rows passed their guard; the batch is rolled back")


# A guard on the target alone goes in `id IN (SELECT id FROM r) AND …`, never in an UPDATE … FROM r
# (there SQLite 3.38+ first builds a Bloom filter over the whole table: ~80 ms a statement); a guard
# against a value of r (the state or version read) is fine in both.
_IDS: Columns = (("id", BIGINT),)
_WARN = ("UPDATE sla_clocks SET warned_at = {now}, next_check_at = due_at "
         "WHERE id IN (SELECT id FROM r) AND state = 'running' AND warned_at IS NULL")
_BREACH = ("UPDATE sla_clocks SET breached_at = {now}, next_check_at = NULL "
           "WHERE id IN (SELECT id FROM r) AND state = 'running' AND breached_at IS NULL")
_CLOSE_SET = ("state = 'breached', breached_at = {now}, stopped_at = {now}, segment_started_at = NULL, "
              "next_check_at = NULL")
_CLOSE_COLUMNS: Columns = (("id", BIGINT), ("state", TEXT), ("used_minutes", FLOAT))
# Compare-and-set against the state read (r.state), like the events' version guard.
_CLOSE = (f"UPDATE sla_clocks SET {_CLOSE_SET}, used_minutes = r.used_minutes FROM r "
          "WHERE sla_clocks.id = r.id AND sla_clocks.state = r.state")
# A stale check instant (nothing due after all): look again at the next threshold.
_RECHECK = ("UPDATE sla_clocks SET next_check_at = CASE WHEN warned_at IS NULL AND warn_at < due_at "
            "THEN warn_at ELSE due_at END WHERE id IN (SELECT id FROM r) AND state = 'running'")
_MOVE_COLUMNS: Columns = (("id", BIGINT), ("version", BIGINT), ("owner_id", BIGINT), ("level", TEXT))
# Only the columns that change are set: SQLite rewrites every index on a SET column, changed or not.
_MOVE_SET = ("owner_id = r.owner_id, level = r.level, needs_triage = false, updated_at = {now}, "
             "version = events.version + 1")
_MOVE = f"UPDATE events SET {_MOVE_SET} FROM r WHERE events.id = r.id AND events.version = r.version"
# The version read guards the state read too (every change bumps it): here, that it is still dispatched.
_MOVE_BACK = (f"UPDATE events SET {_MOVE_SET}, state = 'registered', handler_id = NULL FROM r "
              "WHERE events.id = r.id AND events.version = r.version")
_SUPERVISE_COLUMNS: Columns = (("id", BIGINT), ("version", BIGINT))
_SUPERVISE = ("UPDATE events SET is_supervised = true, updated_at = {now}, version = events.version + 1 FROM r "
              "WHERE events.id = r.id AND events.version = r.version")
_ESCALATION_COLUMNS: Columns = (("event_id", BIGINT), ("clock_id", BIGINT), ("from_level", TEXT), ("to_level", TEXT),
                                ("from_owner_id", BIGINT), ("to_owner_id", BIGINT), ("due_at", TIME),
                                ("late_minutes", FLOAT))
_ESCALATE = ("INSERT INTO escalations (event_id, clock_id, reason, from_level, to_level, from_owner_id, to_owner_id, "
             "due_at, escalated_at, late_minutes) SELECT r.event_id, r.clock_id, 'timer', r.from_level, r.to_level, "
             "r.from_owner_id, r.to_owner_id, r.due_at, {now}, r.late_minutes FROM r")
_HISTORY_COLUMNS: Columns = (("event_id", BIGINT), ("seq", BIGINT), ("action", TEXT), ("from_state", TEXT),
                             ("to_state", TEXT), ("from_level", TEXT), ("to_level", TEXT), ("from_owner_id", BIGINT),
                             ("to_owner_id", BIGINT), ("note", TEXT), ("details", JSON), ("prev_hash", TEXT),
                             ("row_hash", TEXT))
# The audit row of `events.service.history_values(actor=None, …)`: the system, no user, no unit;
# the next link of the event's hash chain (grid_service.audit), sealed in Python.
_HISTORY = ("INSERT INTO event_history (event_id, seq, at, actor_id, actor_role, actor_unit_id, action, from_state, "
            "to_state, from_level, to_level, from_owner_id, to_owner_id, note, details, prev_hash, row_hash) "
            "SELECT r.event_id, r.seq, {now}, NULL, 'system', NULL, r.action, r.from_state, r.to_state, r.from_level, "
            "r.to_level, r.from_owner_id, r.to_owner_id, r.note, r.details, r.prev_hash, r.row_hash FROM r")
_HISTORY_FIELDS = tuple(name for name, _ in _HISTORY_COLUMNS[:-2])


def _sealed_histories(session: Session, out: _Writer, now: datetime,
                      histories: list[tuple[tuple[Any, ...], str | None]]) -> Future[list[tuple[Any, ...]]]:
    """The batch's audit rows as the next links of their events' chains, sealed on another thread.

    The heads the claim did not read are looked up here (one query); the sealing itself (canonical
    JSON and an HMAC per row, pure Python) then runs while this thread's statements run in the
    database, which releases the GIL while it works.
    """
    key = audit.current_key()
    # The claim read each event's head at seq = version; an event whose trail ends elsewhere (written
    # before versions and seqs were one) is looked up by its last seq instead.
    missing = [row[0] for row, head in histories if head is None]
    heads = {event_id: digest for event_id, (_, digest) in audit.heads(session, missing).items()}

    def seal() -> list[tuple[Any, ...]]:
        sealed = []
        for values, head in histories:
            row = dict(zip(_HISTORY_FIELDS, values)) | {"at": now, "actor_id": None, "actor_role": "system",
                                                         "actor_unit_id": None}
            audit.seal(key, row, head or heads.get(row["event_id"], audit.GENESIS))
            sealed.append((*values[:-1], out.json(row["details"]), row["prev_hash"], row["row_hash"]))
        return sealed

    return _sealer().submit(seal)


_SEALER: tuple[int, ThreadPoolExecutor] | None = None  # (pid, executor): a forked child needs its own thread
_SEALER_LOCK = threading.Lock()


def _sealer() -> ThreadPoolExecutor:
    """This process's sealing thread."""
    global _SEALER
    with _SEALER_LOCK:
        if _SEALER is None or _SEALER[0] != os.getpid():
            _SEALER = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-seal"))
        return _SEALER[1]


_CLOCK_COLUMNS: Columns = (("event_id", BIGINT), ("seq", BIGINT), ("owner_id", BIGINT))
# Everything else of a new level clock is the same for one policy and level at this instant.
_CLOCK_CONSTS: Columns = (("metric", TEXT), ("level", TEXT), ("policy_id", BIGINT), ("calendar_id", BIGINT),
                          ("limit_minutes", BIGINT), ("extended_minutes", BIGINT), ("warn_minutes", BIGINT),
                          ("state", TEXT), ("started_at", TIME), ("used_minutes", FLOAT), ("segment_started_at", TIME),
                          ("due_at", TIME), ("warn_at", TIME), ("next_check_at", TIME), ("provisional", BOOL))
_Template = tuple[int, tuple[tuple[str, tuple[str, Any]], ...]]  # (number, the consts of a new level clock)
_NEW_CLOCKS = (f"INSERT INTO sla_clocks (event_id, seq, owner_id, {', '.join(n for n, _ in _CLOCK_CONSTS)}) "
               f"SELECT r.event_id, r.seq, r.owner_id, {', '.join('{' + n + '}' for n, _ in _CLOCK_CONSTS)} FROM r")
_NOTE_COLUMNS: Columns = (("dedupe_key", TEXT), ("unit_id", BIGINT), ("event_id", BIGINT), ("clock_id", BIGINT),
                          ("kind", TEXT), ("message", TEXT))
# WHERE true: SQLite's parser needs it between INSERT … SELECT and ON CONFLICT.
_NOTIFY = ("INSERT INTO notifications (dedupe_key, unit_id, event_id, clock_id, kind, message, created_at) "
           "SELECT r.dedupe_key, r.unit_id, r.event_id, r.clock_id, r.kind, r.message, {now} FROM r WHERE true "
           "ON CONFLICT (dedupe_key) DO NOTHING")


# -- one batch --------------------------------------------------------------------------------

_owner, _parent = units_t.alias("owner"), units_t.alias("parent")
_c = clocks_t.c


def _text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    # Instants come back raw (SQLite: text) and are parsed only where needed, see _at.
    return sa.type_coerce(column, sa.String()).label(column.name)


class _Due(NamedTuple):
    """A claimed clock with what its effects need of its event and units: the claim's columns, in order."""

    id: int
    event_id: int
    metric: str
    seq: int
    clock_owner_id: int | None
    calendar_id: int
    used_minutes: float
    segment_started_at: Any  # instants raw: SQLite's text, PostgreSQL's datetime (see _at)
    due_at: Any
    warn_at: Any
    warned_at: Any
    state: str
    level: str
    owner_id: int
    version: int
    category_id: int
    priority: str
    is_supervised: bool
    source: str
    owner_name: str
    parent_id: int | None
    parent_level: str | None
    parent_name: str | None
    head_hash: str | None  # the event's last audit row (seq = version): the link an escalation extends


_head = history_t.alias("head")
_CLAIM = (
    sa.select(_c.id, _c.event_id, _c.metric, _c.seq, _c.owner_id.label("clock_owner_id"), _c.calendar_id,
              _c.used_minutes, _text(_c.segment_started_at), _text(_c.due_at), _text(_c.warn_at), _text(_c.warned_at),
              events_t.c.state, events_t.c.level, events_t.c.owner_id, events_t.c.version, events_t.c.category_id,
              events_t.c.priority, events_t.c.is_supervised, events_t.c.source,
              _owner.c.name.label("owner_name"), _parent.c.id.label("parent_id"),
              _parent.c.level.label("parent_level"), _parent.c.name.label("parent_name"),
              _head.c.row_hash.label("head_hash"))
    .select_from(clocks_t.join(events_t, events_t.c.id == _c.event_id)
                 .join(_owner, _owner.c.id == events_t.c.owner_id)
                 .outerjoin(_parent, _parent.c.id == _owner.c.parent_id)
                 .outerjoin(_head, sa.and_(_head.c.event_id == events_t.c.id, _head.c.seq == events_t.c.version)))
    .where(_c.state == "running", _c.next_check_at <= sa.bindparam("now", type_=UTCDateTime()),
           _c.id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(_c.event_id, _c.id)
)
assert [column.name for column in _CLAIM.selected_columns] == list(_Due._fields)
# A pass works through a snapshot of the due clocks in the order their events are stored (ids):
# consecutive batches then write neighbouring rows and index entries — the same pages again rather
# than new random ones (on PostgreSQL: fewer full-page images in the WAL) — which makes the writes
# about a quarter cheaper than in due-time order. `+ 0` keeps SQLite on the due index for the filter.
_DUE_SNAPSHOT = (sa.select(_c.id, _c.event_id)
                 .where(_c.state == "running", _c.next_check_at <= sa.bindparam("now", type_=UTCDateTime()))
                 .order_by(_c.event_id + 0, _c.id).limit(sa.bindparam("limit")))
SNAPSHOT_SIZE = 50_000  # clock ids a pass reads at a time (a few hundred kB)
# Lock the clocks and their events; skip what anyone else holds (it stays due for a later batch).
_CLAIM_PG = _CLAIM.with_for_update(of=[clocks_t, events_t], skip_locked=True)


def _at(value: Any) -> datetime:
    """An aware UTC instant from a raw column value (SQLite: UTCDateTime's naive UTC text)."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _claim(session: Session, now: datetime, ids: list[int]) -> list[_Due]:
    """The clocks of `ids` (a slice of the pass's snapshot) that are still due, with their events."""
    pg = session.get_bind().dialect.name == "postgresql"
    # The batch's writes start with WITH, for which sqlite3 opens no transaction: the batch must be one.
    begin_writing(session)
    # Plain named tuples: reading a field of a SQLAlchemy Row costs ~0.8 µs, of a namedtuple ~0.03 µs.
    return [_Due._make(row) for row in session.execute(_CLAIM_PG if pg else _CLAIM, {"now": now, "ids": ids})]


def sweep_batch(session: Session, sla: SlaEngine, now: datetime, categories: dict[int, Category],
                result: SweepResult, ids: list[int]) -> int:
    """Claim and process one batch — the clocks of `ids` still due — in the current transaction (the
    caller commits); returns how many it claimed."""
    claimed = _claim(session, now, ids)
    if not claimed:
        return 0
    out = _Writer(session)
    now_text = out.instant(now)
    # Instants come back raw: SQLite's text sorts as time does, so it compares with now's text.
    now_raw = now if out.pg else now_text
    calendars: dict[int, Any] = {}
    since: dict[tuple[int, Any], float] = {}
    templates: dict[tuple[int, str, str], _Template | None] = {}

    def minutes_to_now(calendar_id: int, raw: Any) -> float:
        """Working minutes from a raw instant to now (memoised: many clocks share their instants)."""
        key = (calendar_id, raw)
        if key not in since:
            if calendar_id not in calendars:
                calendars[calendar_id] = sla.calendar(session, calendar_id)
            since[key] = calendars[calendar_id].between(_at(raw), now)
        return since[key]

    def next_level_clock(category_id: int, priority: str, level: str) -> _Template | None:
        """The new level clock's values, the same for every event of a policy and level at this instant."""
        key = (category_id, priority, level)
        if key not in templates:
            category = categories.get(category_id) or session.get(Category, category_id)  # one added mid-pass
            policy = sla.policy_for(session, category, priority, now)
            row = sla.new_clock(session, 0, policy, "level", start=now, level=level)
            if row is not None:
                unwritten = set(row) - {name for name, _ in _CLOCK_CONSTS + _CLOCK_COLUMNS}
                assert all(row[name] is None for name in unwritten), f"new_clock sets {unwritten}: write them"
            templates[key] = None if row is None else (len(templates), tuple(
                (name, (pg_type, out.instant(row[name]) if pg_type == TIME else row[name]))
                for name, pg_type in _CLOCK_CONSTS))
        return templates[key]

    warns, breaches, closes, rechecks = [], [], [], []
    moves, moves_back, supervise = [], [], []
    escalations, hotline, histories, notes = [], [], [], []
    new_clocks: dict[_Template, list[tuple[int, int, int]]] = {}
    moved: set[int] = set()
    for clock in claimed:
        if clock.due_at <= now_raw:
            if clock.metric != "level":
                breaches.append((clock.id,))
                notes.append((f"breached:{clock.id}", clock.owner_id, clock.event_id, clock.id, "breached",
                              f"{'立案' if clock.metric == 'accept' else '处置'}时限已超期"))
                continue
            used = clock.used_minutes + minutes_to_now(clock.calendar_id, clock.segment_started_at)
            closes.append((clock.id, "running", used))
            stale = clock.state not in ESCALATABLE or clock.owner_id != clock.clock_owner_id or clock.event_id in moved
            if stale:
                continue  # the event moved on by hand; this clock only ends
            moved.add(clock.event_id)
            late = max(0.0, minutes_to_now(clock.calendar_id, clock.due_at))
            details = {"clock_id": clock.id, "due_at": _at(clock.due_at).isoformat(), "late_minutes": round(late, 2)}
            if clock.parent_id is None:
                if clock.is_supervised:
                    continue  # already 督办: flagged once
                supervise.append((clock.event_id, clock.version))
                histories.append(((clock.event_id, clock.version + 1, "supervise", clock.state, clock.state, clock.level,
                                   clock.level, clock.owner_id, clock.owner_id, "区级处置超时，列入督办", details),
                                  clock.head_hash))
                notes.append((f"supervise:{clock.id}", clock.owner_id, clock.event_id, clock.id, "supervise",
                              "区级处置时限已到，事件列入督办"))
                continue
            to_state = "registered" if clock.state == "dispatched" else clock.state
            (moves_back if to_state != clock.state else moves).append(
                (clock.event_id, clock.version, clock.parent_id, clock.parent_level))
            escalations.append((clock.event_id, clock.id, clock.level, clock.parent_level, clock.owner_id,
                                clock.parent_id, out.raw_instant(clock.due_at), late))
            if clock.source == "hotline":  # only hotline petitions subscribe (notify/outbox.py)
                hotline.append({"event_id": clock.event_id, "to_owner_id": clock.parent_id, "late_minutes": late})
            histories.append(((clock.event_id, clock.version + 1, "escalate", clock.state, to_state, clock.level,
                               clock.parent_level, clock.owner_id, clock.parent_id,
                               f"{clock.owner_name}处置超时，自动上报至{clock.parent_name}", details), clock.head_hash))
            template = next_level_clock(clock.category_id, clock.priority, clock.parent_level)
            if template is not None:
                new_clocks.setdefault(template, []).append((clock.event_id, clock.seq + 1, clock.parent_id))
            notes.append((f"escalated:{clock.id}", clock.parent_id, clock.event_id, clock.id, "escalated",
                          f"{clock.owner_name}处置超时，事件已自动上报至本单位"))
        elif clock.warned_at is None and clock.warn_at <= now_raw:
            warns.append((clock.id,))
            notes.append((f"warning:{clock.id}", clock.owner_id, clock.event_id, clock.id, "warning",
                          f"{_METRIC_NAMES[clock.metric]}时限即将到期（{_local(_at(clock.due_at))}）"))
        else:
            rechecks.append((clock.id,))

    at_now: Consts = {"now": (TIME, now_text)}
    # Clocks first: a closed level clock must leave the live index before the next one goes in.
    sealed = _sealed_histories(session, out, now, histories)
    out.update(_WARN, warns, _IDS, "warnings", at_now)
    out.update(_BREACH, breaches, _IDS, "breaches", at_now)
    out.update(_CLOSE, closes, _CLOSE_COLUMNS, "level clocks", at_now)
    out.update(_RECHECK, rechecks, _IDS, "rechecks")
    out.update(_MOVE, moves, _MOVE_COLUMNS, "escalated events", at_now)
    out.update(_MOVE_BACK, moves_back, _MOVE_COLUMNS, "escalated dispatched events", at_now)
    out.update(_SUPERVISE, supervise, _SUPERVISE_COLUMNS, "supervised events", at_now)
    out.run(_ESCALATE, escalations, _ESCALATION_COLUMNS, at_now)  # UNIQUE(clock_id): a double fails the batch
    outbox_rows_for_escalations(session, hotline, now)  # the hotline hears of it in this batch (after the moves)
    out.run(_HISTORY, sealed.result(), _HISTORY_COLUMNS, at_now)
    for (_, consts), rows in new_clocks.items():
        out.run(_NEW_CLOCKS, rows, _CLOCK_COLUMNS, dict(consts))
    out.run(_NOTIFY, notes, _NOTE_COLUMNS, at_now)

    result.claimed += len(claimed)
    result.warned += len(warns)
    result.breached += len(breaches) + len(closes)
    result.escalated += len(escalations)
    result.supervised += len(supervise)
    result.batches += 1
    return len(claimed)


_METRIC_NAMES = {"accept": "立案", "level": "本级处置", "resolve": "处置"}


def _local(value: datetime) -> str:
    from zoneinfo import ZoneInfo

    return value.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%m-%d %H:%M")


MAX_WORKERS = 8  # parallel batches stay well inside the engine's connection pool (5 + 10 overflow)


def sweep(session: Session, sla: SlaEngine, now: datetime, *, batch_size: int = BATCH_SIZE,
          wall_clock: Callable[[], datetime] | None = None, owner: str | None = None,
          max_batches: int | None = None, workers: int = 1) -> SweepResult:
    """One pass over everything due at `now`, in committed batches; each event moves at most one level.

    On PostgreSQL, `workers` > 1 (at most MAX_WORKERS) runs that many batches at once, each in its
    own thread, connection and transaction (the claims' row locks keep them apart, as they keep
    separate sweepers apart). On SQLite batches run one at a time whatever `workers` says: there is
    one writer. A batch that fails is rolled back; the pass stops there (batches already running
    finish) and raises its error.
    """
    result = SweepResult()
    owner = owner or sweeper_id()
    wall = wall_clock or (lambda: now)
    sqlite = session.get_bind().dialect.name == "sqlite"
    if sqlite:
        holder = acquire_lease(session, owner, wall())
        if holder is not None:
            result.skipped = f"lease held by {holder}"
            return result
    categories = {c.id: c for c in session.scalars(sa.select(Category).options(sa.orm.joinedload(Category.parent)))}
    parallel = None
    if not sqlite and workers > 1 and max_batches is None:
        # Resolved here, once: a missing default policy is then created by this session, not raced
        # for by several batches.
        for category in categories.values():
            for priority in PRIORITIES:
                sla.policy_for(session, category, priority, now)
        parallel = _Parallel(session, min(workers, MAX_WORKERS))
    session.commit()
    try:
        for snapshot in _snapshots(session, now):
            chunks = _chunks(snapshot, batch_size)
            if parallel is not None and len(chunks) > 1:
                claimed = parallel.run(chunks, lambda batch_session, part, chunk: sweep_batch(
                    batch_session, sla, now, categories, part, chunk), result)
            else:
                claimed = 0
                for chunk in chunks:
                    if max_batches is not None and result.batches >= max_batches:
                        return result
                    try:
                        if sqlite:
                            # The write lock before reading: the batch sees what no one else can change.
                            begin_writing(session)
                            if not _renew_lease(session, owner, wall()):
                                session.rollback()
                                result.skipped = "lease lost"
                                logger.warning("sweeper %s lost its lease after %d batches; stopping", owner,
                                               result.batches)
                                return result
                        claimed += sweep_batch(session, sla, now, categories, result, chunk)
                        session.commit()
                    except Exception:
                        session.rollback()
                        raise
            # A whole snapshot that yielded nothing: what is left is held by other sweepers or
            # requests, and a later pass takes it.
            if claimed == 0:
                break
    finally:
        if parallel is not None:
            parallel.close()
        if sqlite:
            release_lease(session, owner)
    return result


def _snapshots(session: Session, now: datetime):
    """Successive snapshots of the clocks due at `now` ((id, event id), in event order), until one is empty."""
    while True:
        snapshot = [tuple(row) for row in session.execute(_DUE_SNAPSHOT, {"now": now, "limit": SNAPSHOT_SIZE})]
        session.commit()
        if not snapshot:
            return
        yield snapshot


def _chunks(snapshot: list[tuple[int, int]], size: int) -> list[list[int]]:
    """The snapshot's clock ids in batches of about `size`, never splitting an event's clocks: a batch
    claims all of an event's due clocks together, so none is left to a neighbouring batch that would
    find the event locked (and skip it) or already moved (and address its notice to the new owner)."""
    chunks: list[list[int]] = []
    chunk: list[int] = []
    last_event = None
    for clock_id, event_id in snapshot:
        if len(chunk) >= size and event_id != last_event:
            chunks.append(chunk)
            chunk = []
        chunk.append(clock_id)
        last_event = event_id
    if chunk:
        chunks.append(chunk)
    return chunks


class _Parallel:
    """Runs batches on a pool of threads, each batch in a session of its own that it commits."""

    def __init__(self, session: Session, workers: int) -> None:
        from flask import current_app

        self.engine = session.get_bind()
        self.app = current_app._get_current_object()  # audit keys and settings come from the app
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sweep")
        self.lock = threading.Lock()

    def run(self, chunks: list[list[int]], batch: Callable[[Session, SweepResult, list[int]], int],
            result: SweepResult) -> int:
        """Every chunk as one batch; returns how many clocks they claimed.

        At the first failure (or an interrupt) the batches not yet started are dropped and those
        running finish (each commits whole or rolls back); then the first error is raised, and any
        other is logged.
        """
        def one(chunk: list[int]) -> int:
            part = SweepResult()
            with self.app.app_context(), Session(self.engine, expire_on_commit=False) as batch_session:
                claimed = batch(batch_session, part, chunk)
                batch_session.commit()
            with self.lock:
                result.add(part)
            return claimed

        futures = [self.pool.submit(one, chunk) for chunk in chunks]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            for future in futures:
                future.cancel()  # only those not started
            wait(futures)
        errors = [future.exception() for future in futures if not future.cancelled() and future.exception()]
        for error in errors[1:]:
            logger.error("another sweep batch failed in the same round", exc_info=error)
        if errors:
            raise errors[0]
        return sum(future.result() for future in futures)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
