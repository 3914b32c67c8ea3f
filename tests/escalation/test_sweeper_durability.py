"""Durability of the escalation sweeper: four sweeper processes at once, a sweeper killed mid-batch, a
three-day outage, a failed guard, a row a request holds, and the SQLite lease.

Real processes (`flask --app wsgi sla sweep --once --now …`) on a real database file or server.
Scenarios built on row locks (FOR UPDATE SKIP LOCKED) run on PostgreSQL only; on SQLite one
sweeper works at a time under a lease, which has its own tests here. Thousands of due clocks are
seeded in bulk (bench/sla_seed.py: Core insert() executemany, COPY on PostgreSQL), rows exactly as
the service writes them.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from bench.sla_seed import EventSpec, ensure_people, seed_events
from config import TestConfig
from grid_service.escalation import sweeper
from grid_service.escalation.lease import LEASE_KEY, LEASE_SECONDS
from grid_service.escalation.sweeper import SweepConflict, sweep
from grid_service.events.models import Event, EventHistory
from grid_service.inbox.models import Notification
from grid_service.infra.db import db
from grid_service.infra.state import ServiceState
from grid_service.sla.models import Clock, Escalation
from grid_service.territory.models import LEVEL_RANK
from tests.helpers import ROOT, T0, sh

pytestmark = pytest.mark.slow

ROW_LOCKS = ("needs PostgreSQL row locks (FOR UPDATE SKIP LOCKED); on SQLite one sweeper works at a time "
             "under a lease (see the SQLite tests in this file)")
SQLITE_LEASE = "the lease exists on SQLite only; PostgreSQL sweepers share the work through row locks"
N = 5000  # due level clocks in the process tests
GRIDS = ("g111", "g112", "g121", "g122", "g211", "g212", "g221", "g222")
STATES = ("registered", "dispatched", "in_progress", "reported")  # a quarter still unregistered
DEADLINE_SECONDS = 120


RECEIVED = sh("2026-03-02T09:00")  # a Monday: accept and every level due at 10:00, resolve at 14:30
SWEEP_AT = "2026-03-02T10:30:00+08:00"
NOW = datetime.fromisoformat(SWEEP_AT).astimezone(UTC)


@pytest.fixture
def seed(app, territory, categories, policies) -> Callable[[list[EventSpec]], list[int]]:
    people = ensure_people(db.session, territory["d"].id, T0)
    db.session.commit()

    def insert(specs: list[EventSpec]) -> list[int]:
        ids = seed_events(db.session, app.extensions["sla"], categories["01001"], specs, people)
        db.session.commit()
        return ids

    return insert


def grid_specs(territory, count: int, received: datetime = RECEIVED) -> list[EventSpec]:
    return [EventSpec(territory[GRIDS[i % len(GRIDS)]].id, "grid", received, STATES[i % len(STATES)])
            for i in range(count)]


# -- helpers ----------------------------------------------------------------------------------


def scalar(statement: sa.Executable, **params):
    """One fresh read (the transaction ends, so the next read sees what others committed since)."""
    value = db.session.execute(statement, params).scalar()
    db.session.commit()
    return value


def count(model, *where) -> int:
    return scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def due_clocks(now: datetime = NOW) -> int:
    return count(Clock, Clock.state == "running", Clock.next_check_at <= now)


def start_sweeper(database_url: str, now: str, *, batch_size: int, name: str, workers: int = 2) -> subprocess.Popen:
    # The test app's SECRET_KEY, so the sweeper seals its audit rows with the key the trail is checked with.
    env = dict(os.environ, DATABASE_URL=database_url, LOG_LEVEL="WARNING", PGAPPNAME=name, SECRET_KEY=TestConfig.SECRET_KEY)
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "sla", "sweep", "--once", "--now", now,
               "--batch-size", str(batch_size), "--workers", str(workers)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def summary_of(proc: subprocess.Popen) -> dict:
    """The JSON summary a sweeper prints on its last line."""
    out, err = proc.communicate(timeout=DEADLINE_SECONDS)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def wait_for(condition: Callable[[], bool], what: str, procs: list[subprocess.Popen] = ()) -> None:
    """Poll the database until `condition` holds; fail fast if a sweeper died, or at the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"a sweeper exited ({proc.returncode}) while waiting for {what}: "
                            f"{proc.stdout.read()} {proc.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {DEADLINE_SECONDS} s")


def parents(territory) -> dict[int, int]:
    return {unit.id: unit.parent_id for unit in territory.values()}


def assert_escalated_exactly_once(ids: list[int], specs: list[EventSpec], territory, now: datetime = NOW) -> None:
    """Each event one level up with one escalation, one system audit row, one notification, one new clock."""
    parent_of = parents(territory)
    expected_owner = {event_id: parent_of[spec.owner_id] for event_id, spec in zip(ids, specs)}
    rows = db.session.execute(sa.select(Event.id, Event.level, Event.owner_id, Event.version, Event.state,
                                        Event.handler_id).where(Event.id.in_(ids))).all()
    assert {r.id: r.owner_id for r in rows} == expected_owner
    assert {r.level for r in rows} == {"community"}
    # One new version each: seeded at 1 (reported) or 2 (reported, then registered).
    assert {r.id: r.version for r in rows} == {i: (1 if spec.state == "reported" else 2) + 1 for i, spec in zip(ids, specs)}
    # A dispatched event goes back to registered at its new owner, who dispatches again; others keep their state.
    expected_state = {i: "registered" if spec.state == "dispatched" else spec.state for i, spec in zip(ids, specs)}
    assert {r.id: r.state for r in rows} == expected_state
    assert {r.handler_id for r in rows if r.state in ("registered", "reported")} == {None}

    escalations = db.session.execute(sa.select(Escalation.event_id, Escalation.clock_id, Escalation.to_owner_id,
                                               Escalation.escalated_at, Escalation.late_minutes)).all()
    assert len(escalations) == len(ids)
    assert len({e.clock_id for e in escalations}) == len({e.event_id for e in escalations}) == len(ids)
    assert {e.event_id: e.to_owner_id for e in escalations} == expected_owner
    assert {(e.escalated_at, e.late_minutes) for e in escalations} == {(now, 30.0)}  # due 10:00, swept 10:30

    audit = db.session.execute(sa.select(EventHistory.event_id, EventHistory.details).where(
        EventHistory.actor_role == "system", EventHistory.action == "escalate")).all()
    assert Counter(a.event_id for a in audit) == Counter(ids)
    assert {a.details["late_minutes"] for a in audit} == {30.0}
    notes = db.session.execute(sa.select(Notification.event_id, Notification.unit_id)
                               .where(Notification.kind == "escalated")).all()
    assert Counter(n.event_id for n in notes) == Counter(ids)
    assert {n.event_id: n.unit_id for n in notes} == expected_owner

    level = db.session.execute(
        sa.select(Clock.event_id, Clock.seq, Clock.state, Clock.level, Clock.started_at, Clock.stopped_at)
        .where(Clock.metric == "level", Clock.event_id.in_(ids))).all()
    first = {c.event_id: c for c in level if c.seq == 1}
    second = {c.event_id: c for c in level if c.seq == 2}
    assert len(level) == 2 * len(ids) and set(first) == set(second) == set(ids)
    assert {(c.state, c.stopped_at) for c in first.values()} == {("breached", now)}
    assert {(c.state, c.level, c.started_at) for c in second.values()} == {("running", "community", now)}
    reported = sum(spec.state == "reported" for spec in specs)
    assert count(Clock, Clock.metric == "accept", Clock.breached_at == now) == reported
    assert count(Notification, Notification.kind == "breached") == reported
    assert due_clocks(now) == 0
    db.session.commit()


# -- four processes at once (PostgreSQL) and two on SQLite ----------------------------------------


def test_four_sweeper_processes_escalate_every_clock_exactly_once(app, backend, database_url, seed, territory):
    """Four processes, each running two batches at once (SWEEP_WORKERS' default): eight claims at a time."""
    if backend == "sqlite":
        pytest.skip(ROW_LOCKS)
    specs = grid_specs(territory, N)
    ids = seed(specs)
    reported = sum(spec.state == "reported" for spec in specs)
    assert due_clocks() == N + reported

    # A starting line: the four wait on a table lock until all of them are at their first claim.
    barrier = db.engine.connect()
    barrier.begin()
    barrier.exec_driver_sql("LOCK TABLE sla_clocks IN ACCESS EXCLUSIVE MODE")
    procs = [start_sweeper(database_url, SWEEP_AT, batch_size=100, name=f"durability-sweeper-{i}") for i in range(4)]
    try:
        waiting = sa.text("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                          "WHERE c.relname = 'sla_clocks' AND NOT l.granted")
        wait_for(lambda: scalar(waiting) >= 4, "four sweepers waiting at the start", procs)
        barrier.rollback()
        summaries = [summary_of(proc) for proc in procs]
    finally:
        barrier.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert all(s["claimed"] > 0 for s in summaries), summaries  # all four took part
    assert sum(s["claimed"] for s in summaries) == N + reported
    assert sum(s["escalated"] for s in summaries) == N
    assert sum(s["breached"] for s in summaries) == N + reported  # every level clock closed, every accept breached
    assert sum(s["warned"] for s in summaries) == 0
    assert_escalated_exactly_once(ids, specs, territory)


def test_two_sweepers_on_sqlite_one_holds_the_lease_and_the_other_does_nothing(app, backend, database_url, seed,
                                                                                territory):
    if backend != "sqlite":
        pytest.skip(SQLITE_LEASE)
    specs = grid_specs(territory, N)
    ids = seed(specs)
    reported = sum(spec.state == "reported" for spec in specs)

    # Another live sweeper's lease: a sweeper started now sees it and touches nothing.
    db.session.add(ServiceState(key=LEASE_KEY, value=f"elsewhere:4242|{datetime.now(UTC) + timedelta(minutes=2)}",
                                updated_at=T0))
    db.session.commit()
    blocked = summary_of(start_sweeper(database_url, SWEEP_AT, batch_size=100, name="blocked"))
    assert blocked["skipped"] == "lease held by elsewhere:4242" and blocked["claimed"] == 0
    assert count(Escalation) == 0 and due_clocks() == N + reported
    db.session.execute(sa.delete(ServiceState).where(ServiceState.key == LEASE_KEY))
    db.session.commit()

    # Two at once: whichever comes second finds the lease taken, or nothing left to do.
    procs = [start_sweeper(database_url, SWEEP_AT, batch_size=100, name=f"sweeper-{i}") for i in range(2)]
    summaries = sorted((summary_of(proc) for proc in procs), key=lambda s: s["claimed"])
    assert summaries[0]["claimed"] == 0 and summaries[0]["escalated"] == 0
    assert summaries[1]["claimed"] == N + reported and summaries[1]["escalated"] == N
    assert_escalated_exactly_once(ids, specs, territory)
    assert count(ServiceState, ServiceState.key == LEASE_KEY) == 0  # released


# -- SIGKILL mid-batch ----------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sweeper_killed_mid_batch_loses_nothing_and_doubles_nothing(app, backend, database_url, seed, territory,
                                                                      workers):
    if backend == "sqlite" and workers > 1:
        pytest.skip("SQLite sweeps one batch at a time whatever SWEEP_WORKERS says")
    specs = grid_specs(territory, N)
    ids = seed(specs)
    name = f"durability-killed-{os.getpid()}"
    blocker = None
    if backend == "postgresql":
        # Make the sweeper stop inside batches: an uncommitted notification holds the dedupe key that
        # a batch inserts last, after its clocks, events, escalations and audit rows. One worker stops
        # in the 11th batch; two workers stop in the 11th and (the other thread having gone on) the 21st.
        snapshot = [tuple(row) for row in db.session.execute(
            sweeper._DUE_SNAPSHOT, {"now": NOW, "limit": sweeper.SNAPSHOT_SIZE})]
        metric = dict(db.session.execute(sa.select(Clock.id, Clock.metric)).all())
        owner = dict(db.session.execute(sa.select(Event.id, Event.owner_id)).all())
        event_of = dict(snapshot)
        db.session.commit()
        chunks = sweeper._chunks(snapshot, 100)
        held = [10] if workers == 1 else [10, 20]
        targets = [next(clock for clock in chunks[i] if metric[clock] == "level") for i in held]
        committed_before = sum(metric[clock] == "level" for i, chunk in enumerate(chunks[:held[-1]]) if i not in held
                               for clock in chunk)
        # Its row points at an event with nothing due: a key-share lock on one being swept would only make
        # the sweeper skip that event (SKIP LOCKED), not wait.
        bystander = seed([EventSpec(territory["g111"].id, "grid", NOW, "registered")])[0]
        blocker = db.engine.connect()
        blocker.begin()
        for target in targets:
            blocker.execute(sa.insert(Notification.__table__).values(
                dedupe_key=f"escalated:{target}", unit_id=owner[event_of[target]], event_id=bystander,
                clock_id=None, kind="escalated", message="held by the test", created_at=NOW))
    proc = start_sweeper(database_url, SWEEP_AT, batch_size=100 if blocker else 25, name=name, workers=workers)
    try:
        if blocker is not None:
            state = sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                            "AND wait_event_type = 'Lock' AND xact_start IS NOT NULL")
            wait_for(lambda: scalar(state, name=name) == len(held), "the sweeper blocked inside its batches", [proc])
        else:
            wait_for(lambda: count(Escalation) >= N // 10, "some committed batches", [proc])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if blocker is not None:
            blocker.rollback()
            blocker.close()
    if backend == "postgresql":
        gone = sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
        wait_for(lambda: scalar(gone, name=name) == 0, "the killed sweeper's connection to end")

    # Committed batches are whole; the batch that was cut off left nothing behind.
    done = count(Escalation)
    assert 0 < done < N
    assert count(EventHistory, EventHistory.actor_role == "system") == done
    assert count(Notification, Notification.kind == "escalated") == done
    assert count(Event, Event.level == "community") == done
    assert count(Clock, Clock.metric == "level", Clock.seq == 2) == done
    if backend == "postgresql":
        assert done == committed_before  # exactly the batches before and between those cut off
        for target in targets:
            clock = db.session.get(Clock, target)
            assert clock.state == "running" and clock.next_check_at <= NOW
            assert db.session.get(Event, clock.event_id).level == "grid"
        db.session.commit()
    else:
        # SQLite: the dead sweeper still holds the lease; a sweeper on this host sees it is gone.
        lease = scalar(sa.select(ServiceState.value).where(ServiceState.key == LEASE_KEY))
        assert lease.startswith(f"{socket.gethostname()}:{proc.pid}|")

    rest = sweep(db.session, app.extensions["sla"], NOW, wall_clock=lambda: datetime.now(UTC))
    assert rest.skipped is None and rest.escalated == N - done
    assert_escalated_exactly_once(ids, specs, territory)


# -- a three-day outage ---------------------------------------------------------------------------


def test_after_a_three_day_outage_each_pass_moves_an_event_one_level(app, seed, territory):
    """Monday 09:00 reports at every level, the sweeper down until Thursday 09:00, then passes walk them up."""
    start_units = {"grid": GRIDS, "community": ("c11", "c12", "c21", "c22"), "street": ("s1", "s2"), "district": ("d",)}
    specs = [EventSpec(territory[keys[i % len(keys)]].id, level, RECEIVED, STATES[i % 3])
             for level, keys in start_units.items() for i in range(50)]
    ids = seed(specs)
    start_rank = {event_id: LEVEL_RANK[spec.level] for event_id, spec in zip(ids, specs)}
    sla = app.extensions["sla"]

    def levels() -> dict[int, int]:
        rows = db.session.execute(sa.select(Event.id, Event.level)).all()
        db.session.commit()
        return {r.id: LEVEL_RANK[r.level] for r in rows}

    def sweep_at(text: str) -> dict:
        before = levels()
        result = sweep(db.session, sla, sh(text)).summary()
        after = levels()
        assert all(before[i] - after[i] in (0, 1) for i in ids), "an event moved more than one level in a pass"
        again = sweep(db.session, sla, sh(text)).summary()  # the same instant again: nothing at all
        assert again["claimed"] == 0 and levels() == after
        return result

    first = sweep_at("2026-03-05T09:00")
    assert (first["escalated"], first["supervised"], first["warned"]) == (150, 50, 0)
    assert first["breached"] == 200 + 200  # every level clock ended, every resolve clock (due Monday 14:30) breached
    late = db.session.scalars(sa.select(Escalation.late_minutes)).all()
    # Monday 10:00 → Thursday 09:00: Monday 360 + Tuesday 420 + Wednesday 420 working minutes.
    assert set(late) == {1200.0}
    restarted = db.session.scalars(sa.select(Clock.started_at)
                                   .where(Clock.metric == "level", Clock.state == "running")).all()
    assert len(restarted) == 150 and set(restarted) == {sh("2026-03-05T09:00")}  # the new levels start at the pass

    assert sweep_at("2026-03-05T09:47")["claimed"] == 0
    assert sweep_at("2026-03-05T09:48")["warned"] == 150  # 80 % of the new levels' hour
    second = sweep_at("2026-03-05T10:00")
    assert (second["escalated"], second["supervised"]) == (100, 50)
    assert set(db.session.scalars(sa.select(Escalation.late_minutes)
                                  .where(Escalation.escalated_at == sh("2026-03-05T10:00")))) == {0.0}
    third = sweep_at("2026-03-05T11:00")
    assert (third["escalated"], third["supervised"]) == (50, 50)
    fourth = sweep_at("2026-03-05T12:00")
    assert (fourth["escalated"], fourth["supervised"]) == (0, 50)
    assert sweep_at("2026-03-12T12:00")["claimed"] == 0  # a week on: nothing left to escalate

    final = levels()
    assert set(final.values()) == {LEVEL_RANK["district"]}
    assert Counter(db.session.scalars(sa.select(Escalation.event_id))) == {
        i: start_rank[i] for i in ids if start_rank[i] > 0}
    supervised = db.session.execute(sa.select(Event.id).where(Event.is_supervised.is_(True))).scalars().all()
    assert sorted(supervised) == sorted(ids)
    audit = Counter(db.session.scalars(sa.select(EventHistory.event_id).where(
        EventHistory.actor_role == "system", EventHistory.action == "supervise")))
    assert audit == Counter(ids)  # 督办 once per event
    notes = Counter(db.session.scalars(sa.select(Notification.event_id).where(Notification.kind == "supervise")))
    assert notes == Counter(ids)
    # Each resolve breach once to the owner unit, and at most once to the handler of a dispatched event.
    assert count(Notification, Notification.kind == "breached", Notification.unit_id.is_not(None)) == 200
    personal = Counter(db.session.execute(sa.select(Notification.event_id, Notification.user_id).where(
        Notification.kind == "breached", Notification.user_id.is_not(None))).tuples())
    assert personal and set(personal.values()) == {1}
    assert count(Clock, Clock.state == "running", Clock.metric == "level") == 0


# -- guards, a held row, the lease ----------------------------------------------------------------


def claims_reading_a_stale_version_of(stale_event: int):
    """The sweeper's claim, as if `stale_event` had changed after it was read: its move's version
    guard then matches no row."""
    real_claim = sweeper._claim

    def claim(session, now, ids):
        return [row._replace(version=row.version - 1) if row.event_id == stale_event else row
                for row in real_claim(session, now, ids)]

    return claim


def test_a_batch_whose_guard_fails_is_rolled_back_whole(app, seed, territory, monkeypatch):
    specs = grid_specs(territory, 40)
    ids = seed(specs)
    stale_event = ids[5]
    monkeypatch.setattr(sweeper, "_claim", claims_reading_a_stale_version_of(stale_event))
    with pytest.raises(SweepConflict, match="passed their guard"):
        sweep(db.session, app.extensions["sla"], NOW)
    assert count(Escalation) == count(Notification) == count(EventHistory, EventHistory.actor_role == "system") == 0
    assert count(Event, Event.level == "grid", Event.version <= 2) == 40  # nothing moved, no version taken
    assert due_clocks() == 40 + 10
    monkeypatch.undo()
    assert sweep(db.session, app.extensions["sla"], NOW).escalated == 40
    assert_escalated_exactly_once(ids, specs, territory)


def test_a_pass_on_several_workers_escalates_every_clock_once(app, backend, seed, territory, monkeypatch):
    """SWEEP_WORKERS batches at once in one pass (PostgreSQL; SQLite runs them one by one): same outcome,
    and each event's due clocks are claimed by one batch."""
    specs = grid_specs(territory, 600)
    ids = seed(specs)
    reported = sum(spec.state == "reported" for spec in specs)
    real_batch = sweeper.sweep_batch
    chunks: list[list[int]] = []
    lock = threading.Lock()
    # On PostgreSQL the first two batches must be in flight together to get past this barrier.
    meet = threading.Barrier(2, timeout=30) if backend == "postgresql" else None

    def batch(session, sla, now, categories, result, chunk):
        with lock:
            chunks.append(list(chunk))
            first_two = len(chunks) <= 2
        if meet is not None and first_two:
            meet.wait()
        return real_batch(session, sla, now, categories, result, chunk)

    monkeypatch.setattr(sweeper, "sweep_batch", batch)
    result = sweep(db.session, app.extensions["sla"], NOW, batch_size=50, workers=3)
    assert (result.claimed, result.escalated, result.breached) == (600 + reported, 600, 600 + reported)
    assert result.batches == len(chunks) >= (600 + reported) // 50
    event_of = dict(db.session.execute(sa.select(Clock.id, Clock.event_id)).all())
    batches_of_event = Counter(event for chunk in chunks for event in {event_of[clock] for clock in chunk})
    assert set(batches_of_event.values()) == {1}
    assert_escalated_exactly_once(ids, specs, territory)
    assert sweep(db.session, app.extensions["sla"], NOW, batch_size=50, workers=3).claimed == 0


def test_batches_never_split_an_event_and_keep_near_their_size():
    snapshot = [(1, 10), (2, 10), (3, 11), (4, 12), (5, 12), (6, 12), (7, 13), (8, 14), (9, 14)]
    assert sweeper._chunks(snapshot, 2) == [[1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert sweeper._chunks(snapshot, 100) == [[clock for clock, _ in snapshot]]
    assert sweeper._chunks([], 5) == []


def test_a_failing_batch_among_parallel_ones_is_rolled_back_whole_and_raised(app, backend, seed, territory,
                                                                             monkeypatch):
    if backend == "sqlite":
        pytest.skip("SQLite sweeps one batch at a time whatever SWEEP_WORKERS says")
    specs = grid_specs(territory, 200)
    ids = seed(specs)
    stale_event = ids[100]
    monkeypatch.setattr(sweeper, "_claim", claims_reading_a_stale_version_of(stale_event))
    with pytest.raises(SweepConflict, match="passed their guard"):
        sweep(db.session, app.extensions["sla"], NOW, batch_size=25, workers=2)
    # The batches that ran before or beside it committed whole; the failing one left nothing behind.
    moved = count(Event, Event.level == "community")
    assert moved < 200
    assert count(Escalation) == count(Notification, Notification.kind == "escalated") == moved
    assert count(EventHistory, EventHistory.actor_role == "system") == moved
    assert count(Clock, Clock.metric == "level", Clock.seq == 2) == moved
    assert db.session.get(Event, stale_event).level == "grid"
    db.session.commit()
    monkeypatch.undo()
    assert sweep(db.session, app.extensions["sla"], NOW, workers=2).escalated == 200 - moved
    assert_escalated_exactly_once(ids, specs, territory)


def test_an_event_a_request_holds_is_skipped_without_waiting_then_swept(app, backend, seed, territory):
    if backend == "sqlite":
        pytest.skip(ROW_LOCKS)
    specs = grid_specs(territory, 20)
    ids = seed(specs)
    held = ids[2]
    request = db.engine.connect()
    request.begin()
    request.execute(sa.select(Event.id).where(Event.id == held).with_for_update())
    try:
        first = sweep(db.session, app.extensions["sla"], NOW)  # returns while the row is still held
    finally:
        request.rollback()
        request.close()
    assert first.escalated == 19
    assert db.session.get(Event, held).level == "grid"
    assert count(Clock, Clock.event_id == held, Clock.state == "running", Clock.next_check_at <= NOW) == 1
    db.session.commit()
    second = sweep(db.session, app.extensions["sla"], NOW)
    assert (second.claimed, second.escalated) == (1, 1)
    assert_escalated_exactly_once(ids, specs, territory)


def test_a_clock_whose_event_was_held_is_swept_later_in_the_same_pass(app, backend, seed, territory, monkeypatch):
    """Skipped while a request holds its event, it is not written off for the pass: the next batch takes it."""
    if backend == "sqlite":
        pytest.skip(ROW_LOCKS)
    specs = grid_specs(territory, 20)
    ids = seed(specs)
    request = db.engine.connect()
    request.begin()
    request.execute(sa.select(Event.id).where(Event.id == ids[0]).with_for_update())
    real_batch = sweeper.sweep_batch

    def first_batch_then_the_request_ends(*args, **kwargs):
        size = real_batch(*args, **kwargs)
        if request.in_transaction():
            request.rollback()
        return size

    monkeypatch.setattr(sweeper, "sweep_batch", first_batch_then_the_request_ends)
    try:
        result = sweep(db.session, app.extensions["sla"], NOW, batch_size=5)
    finally:
        if request.in_transaction():
            request.rollback()
        request.close()
    assert result.escalated == 20 and result.batches > 1
    assert_escalated_exactly_once(ids, specs, territory)


def test_a_sqlite_sweeper_that_loses_its_lease_stops_and_does_not_take_it_back(app, backend, seed, territory,
                                                                              monkeypatch):
    if backend != "sqlite":
        pytest.skip(SQLITE_LEASE)
    seed(grid_specs(territory, 300))
    wall = datetime(2026, 3, 2, 2, 30, tzinfo=UTC)
    stolen = f"other-host:77|{wall + timedelta(seconds=LEASE_SECONDS)}"
    real_batch = sweeper.sweep_batch

    def batch_then_lose_the_lease(session, *args, **kwargs):
        size = real_batch(session, *args, **kwargs)
        # Another sweeper took the lease over (it had expired for it), committed with this batch.
        session.execute(sa.text("UPDATE service_state SET value = :value WHERE key = :key"),
                        {"value": stolen, "key": LEASE_KEY})
        return size

    monkeypatch.setattr(sweeper, "sweep_batch", batch_then_lose_the_lease)
    result = sweep(db.session, app.extensions["sla"], NOW, batch_size=100, wall_clock=lambda: wall, owner="me:1")
    monkeypatch.undo()
    # The first 100 due clocks: 80 events' level clocks and the accept clocks of the 20 unregistered.
    assert (result.batches, result.escalated, result.skipped) == (1, 80, "lease lost")
    assert scalar(sa.select(ServiceState.value).where(ServiceState.key == LEASE_KEY)) == stolen  # not released

    # The same session again: the lease it had is gone, and it does not take it back.
    again = sweep(db.session, app.extensions["sla"], NOW, wall_clock=lambda: wall, owner="me:1")
    assert again.skipped == "lease held by other-host:77" and again.claimed == 0
    assert count(Escalation) == 80
    expired = wall + timedelta(seconds=LEASE_SECONDS + 1)
    later = sweep(db.session, app.extensions["sla"], NOW, wall_clock=lambda: expired, owner="me:1")
    assert later.skipped is None and later.escalated == 220 and due_clocks() == 0


def test_a_lease_left_by_a_dead_process_on_this_host_is_taken_over(app, backend, seed, territory):
    if backend != "sqlite":
        pytest.skip(SQLITE_LEASE)
    seed(grid_specs(territory, 8))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    wall = datetime(2026, 3, 2, 2, 30, tzinfo=UTC)
    for holder, taken_over in ((f"{socket.gethostname()}:{dead.pid}", True), ("other-host:1", False),
                               (f"{socket.gethostname()}:{os.getppid()}", False)):
        db.session.merge(ServiceState(key=LEASE_KEY, value=f"{holder}|{wall + timedelta(seconds=60)}", updated_at=wall))
        db.session.commit()
        result = sweep(db.session, app.extensions["sla"], NOW, wall_clock=lambda: wall, owner="me:1")
        assert (result.skipped is None) == taken_over, holder
    assert count(Escalation) == 8
