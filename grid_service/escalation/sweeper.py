"""The sweeper: claim due clocks in batches and carry out their effects exactly once.

What each due clock calls for (warn, breach, escalate to the parent, 督办) is decided by
decide.py, a pure function; this module claims the clocks, writes the decided effects in
set-based statements — the clock updates, the events moved, the escalation rows, a `system` audit
row per move, the next level clocks — and publishes them as changes (events.changes), so that the
inbox notifies the owners and the outbox tells the hotline, in the batch's transaction.

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
UPDATE … FROM (infra/setwrite.py). Python only does what needs the working calendar (time used,
lateness) and builds tuples; the next level clock is computed once per policy and level, since
every escalation of a pass starts it at the same instant. The audit links are sealed (an HMAC each) on a thread of their
own while the batch's other statements run in the database. On PostgreSQL the server's work (index
and foreign-key upkeep) outweighs Python's, so a pass runs SWEEP_WORKERS batches at once, each in
its own thread and connection; they stay apart exactly as separate sweepers do.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..events import audit
from ..events.actions import lands_without_handler
from ..events.changes import Change, publish
from ..events.models import Category, Event, EventHistory
from ..events.states import PRIORITIES
from ..infra.db import begin_writing
from ..infra.setwrite import BIGINT, BOOL, FLOAT, JSON, TEXT, TIME, Columns, Consts, GuardFailed, SetWriter
from ..infra.timeutil import UTCDateTime, zone
from ..sla.engine import SlaEngine
from ..sla.models import Clock
from ..territory.models import Unit
from .decide import Decisions, Due, decide
from .lease import acquire_lease, release_lease, renew_lease, sweeper_id

logger = logging.getLogger(__name__)

# Clocks per batch (one transaction). A batch of 2,000 escalations takes about 0.1 s, which bounds
# how long a web request can wait on the SQLite write lock or on a claimed event's row lock.
BATCH_SIZE = 2000

clocks_t = Clock.__table__
events_t = Event.__table__
history_t = EventHistory.__table__
units_t = Unit.__table__


# A guarded write of a batch matched fewer rows than it claimed: the batch is rolled back whole.
SweepConflict = GuardFailed


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


# -- the batch's statements (infra/setwrite.py runs them) -------------------------------------

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
# the next link of the event's hash chain (grid_service.events.audit), sealed in Python.
_HISTORY = ("INSERT INTO event_history (event_id, seq, at, actor_id, actor_role, actor_unit_id, action, from_state, "
            "to_state, from_level, to_level, from_owner_id, to_owner_id, note, details, prev_hash, row_hash) "
            "SELECT r.event_id, r.seq, {now}, NULL, 'system', NULL, r.action, r.from_state, r.to_state, r.from_level, "
            "r.to_level, r.from_owner_id, r.to_owner_id, r.note, r.details, r.prev_hash, r.row_hash FROM r")
_HISTORY_FIELDS = tuple(name for name, _ in _HISTORY_COLUMNS[:-2])


def _sealed_histories(session: Session, out: SetWriter, now: datetime,
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
_NEW_CLOCKS = (f"INSERT INTO sla_clocks (event_id, seq, owner_id, {', '.join(n for n, _ in _CLOCK_CONSTS)}) "
               f"SELECT r.event_id, r.seq, r.owner_id, {', '.join('{' + n + '}' for n, _ in _CLOCK_CONSTS)} FROM r")


# -- one batch --------------------------------------------------------------------------------

_owner, _parent = units_t.alias("owner"), units_t.alias("parent")
_c = clocks_t.c


def _text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    # Instants come back raw (SQLite: text) and are parsed in one step, see _claim.
    return sa.type_coerce(column, sa.String()).label(column.name)


_head = history_t.alias("head")
_CLAIM = (
    sa.select(_c.id, _c.event_id, _c.metric, _c.seq, _c.owner_id.label("clock_owner_id"), _c.calendar_id,
              _c.used_minutes, _text(_c.segment_started_at), _text(_c.due_at), _text(_c.warn_at), _text(_c.warned_at),
              events_t.c.state, events_t.c.level, events_t.c.owner_id, events_t.c.version, events_t.c.category_id,
              events_t.c.priority, events_t.c.is_supervised, events_t.c.source, events_t.c.handler_id,
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
assert [column.name for column in _CLAIM.selected_columns] == list(Due._fields)
assert Due._fields[7:11] == ("segment_started_at", "due_at", "warn_at", "warned_at")  # the instants _claim parses
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


def _utc_text(value: str | None) -> datetime | None:
    """An aware UTC instant from SQLite's stored text (UTCDateTime's naive UTC)."""
    # Appending the offset parses several times faster than .replace(tzinfo=UTC) afterwards.
    return None if value is None else _fromiso(value + "+00:00")


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


_fromiso = datetime.fromisoformat


def _claim(session: Session, now: datetime, ids: list[int]) -> list[Due]:
    """The clocks of `ids` (a slice of the pass's snapshot) that are still due, with their events."""
    pg = session.get_bind().dialect.name == "postgresql"
    # The batch's writes start with WITH, for which sqlite3 opens no transaction: the batch must be one.
    begin_writing(session)
    at = _utc if pg else _utc_text
    # Plain named tuples: reading a field of a SQLAlchemy Row costs ~0.8 µs, of a namedtuple ~0.03 µs.
    # Instants come raw (SQLite: text) and are made aware UTC datetimes here, the four in one step.
    return [Due(*row[:7], at(row[7]), at(row[8]), at(row[9]), at(row[10]), *row[11:])
            for row in session.execute(_CLAIM_PG if pg else _CLAIM, {"now": now, "ids": ids})]


def sweep_batch(session: Session, sla: SlaEngine, now: datetime, categories: dict[int, Category],
                result: SweepResult, ids: list[int]) -> int:
    """Claim and process one batch — the clocks of `ids` still due — in the current transaction (the
    caller commits); returns how many it claimed."""
    claimed = _claim(session, now, ids)
    if not claimed:
        return 0
    policies = {}
    for category_id, priority in {(clock.category_id, clock.priority) for clock in claimed}:
        category = categories.get(category_id) or session.get(Category, category_id)  # one added mid-pass
        policies[(category_id, priority)] = sla.policy_for(session, category, priority, now)
    decisions = decide(claimed, now, sla.calendars(session), policies)
    changes = _write(session, decisions, now)
    publish(session, changes)  # the inbox and the hotline's outbox hear of it in this batch

    result.claimed += len(claimed)
    result.warned += len(decisions.warn)
    result.breached += len(decisions.breach) + len(decisions.close)
    result.escalated += len(decisions.escalate)
    result.supervised += len(decisions.supervise)
    result.batches += 1
    return len(claimed)


def _write(session: Session, decisions: Decisions, now: datetime) -> list[Change]:
    """Carry out a batch's decisions, one set-based statement per kind of write; returns the changes made."""
    out = SetWriter(session)
    at_now: Consts = {"now": (TIME, out.instant(now))}
    escalations, supervisions = decisions.escalate, decisions.supervise
    tz = zone()  # the audit row's deadline as people read every other instant
    # The events' changes: each an audit row (the next link of its chain) and a published change.
    moved = [_change(e.clock, "escalate", now, to_state=e.to_state, to_parent=True, note=_escalation_note(e.clock),
                     details=_details(e.clock, e.late_minutes, tz)) for e in escalations]
    moved += [_change(s.clock, "supervise", now, note=SUPERVISE_NOTE, details=_details(s.clock, s.late_minutes, tz))
              for s in supervisions]
    heads = [e.clock.head_hash for e in escalations] + [s.clock.head_hash for s in supervisions]
    histories = [(_audit_row(change), head) for change, head in zip(moved, heads)]
    sealed = _sealed_histories(session, out, now, histories)
    # Clocks first: a closed level clock must leave the live index before the next one goes in.
    out.update(_WARN, [(clock.id,) for clock in decisions.warn], _IDS, "warnings", at_now)
    out.update(_BREACH, [(clock.id,) for clock in decisions.breach], _IDS, "breaches", at_now)
    out.update(_CLOSE, [(clock.id, "running", used) for clock, used in decisions.close], _CLOSE_COLUMNS,
               "level clocks", at_now)
    out.update(_RECHECK, [(clock.id,) for clock in decisions.recheck], _IDS, "rechecks")
    moves: dict[bool, list[tuple[Any, ...]]] = {False: [], True: []}
    for e in escalations:
        moves[lands_without_handler(e.to_state)].append(
            (e.clock.event_id, e.clock.version, e.clock.parent_id, e.clock.parent_level))
    out.update(_MOVE, moves[False], _MOVE_COLUMNS, "escalated events", at_now)
    out.update(_MOVE_BACK, moves[True], _MOVE_COLUMNS, "escalated dispatched events", at_now)
    out.update(_SUPERVISE, [(s.clock.event_id, s.clock.version) for s in supervisions], _SUPERVISE_COLUMNS,
               "supervised events", at_now)
    out.run(_ESCALATE, [(e.clock.event_id, e.clock.id, e.clock.level, e.clock.parent_level, e.clock.owner_id,
                         e.clock.parent_id, out.instant(e.clock.due_at), e.late_minutes) for e in escalations],
            _ESCALATION_COLUMNS, at_now)  # UNIQUE(clock_id): a double fails the batch
    out.run(_HISTORY, sealed.result(), _HISTORY_COLUMNS, at_now)
    new_clocks: dict[int, tuple[dict[str, Any], list[tuple[int, int, int]]]] = {}
    for e in escalations:
        if e.new_clock is not None:
            new_clocks.setdefault(id(e.new_clock), (e.new_clock, []))[1].append(
                (e.clock.event_id, e.clock.seq + 1, e.clock.parent_id))
    for template, rows in new_clocks.values():
        out.run(_NEW_CLOCKS, rows, _CLOCK_COLUMNS, _clock_consts(out, template))
    return ([_change(clock, "warn", now, new_version=False) for clock in decisions.warn]
            + [_change(clock, "breach", now, new_version=False) for clock in decisions.breach] + moved)


def _details(clock: Due, late: float, tz: ZoneInfo) -> dict[str, Any]:
    return {"clock_id": clock.id, "due_at": clock.due_at.astimezone(tz).isoformat(), "late_minutes": round(late, 2)}


def _escalation_note(clock: Due) -> str:
    return f"{clock.owner_name}处置超时，自动上报至{clock.parent_name}"


SUPERVISE_NOTE = "区级处置超时，列入督办"


def _change(c: Due, action: str, now: datetime, *, new_version: bool = True, to_state: str | None = None,
            to_parent: bool = False, note: str = "", details: dict[str, Any] | None = None) -> Change:
    """What the sweeper did to the event of clock `c`. A warning or a breach leaves the event as it is
    (no new version, no audit row); an escalation moves it to the parent unit."""
    to_state = to_state or c.state
    to_owner_id, to_level, to_owner_name = ((c.parent_id, c.parent_level, c.parent_name) if to_parent
                                            else (c.owner_id, c.level, c.owner_name))
    return Change(event_id=c.event_id, version=c.version + new_version, action=action, at=now, source=c.source,
                  from_state=c.state, to_state=to_state, from_level=c.level, to_level=to_level,
                  from_owner_id=c.owner_id, to_owner_id=to_owner_id,
                  handler_id=None if lands_without_handler(to_state) else c.handler_id, note=note, clock_id=c.id,
                  metric=c.metric, due_at=c.due_at, from_owner_name=c.owner_name, to_owner_name=to_owner_name,
                  details=details or {})


def _audit_row(change: Change) -> tuple[Any, ...]:
    """The `system` audit row of a change (its values in _HISTORY_FIELDS order, but for the chain's hashes)."""
    return (change.event_id, change.version, change.action, change.from_state, change.to_state, change.from_level,
            change.to_level, change.from_owner_id, change.to_owner_id, change.note, change.details)


def _clock_consts(out: SetWriter, template: dict[str, Any]) -> Consts:
    """The values every new level clock of one policy and level shares, as the statement's constants."""
    unwritten = set(template) - {name for name, _ in _CLOCK_CONSTS + _CLOCK_COLUMNS}
    assert all(template[name] is None for name in unwritten), f"new_clock sets {unwritten}: write them"
    return {name: (pg_type, out.instant(template[name]) if pg_type == TIME else template[name])
            for name, pg_type in _CLOCK_CONSTS}


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
                            if not renew_lease(session, owner, wall()):
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
