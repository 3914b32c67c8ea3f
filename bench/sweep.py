"""Escalation sweep: one pass over N open events with M overdue level clocks, against a naive per-event loop.

The database is seeded with Core bulk inserts: N open events in a district → street → community →
grid tree, each with its `report` (and `register`) audit rows and the clocks `SlaEngine.new_clock`
gives it. M of them (plus the naive sample) have overdue grid-level clocks, a fifth of those still
unregistered so their accept clocks breach too; the rest have nothing due. Then, in one run:

1. the naive baseline escalates the sample one event at a time through the ORM — load the clock and
   the event, change them, add the escalation, the audit row, the next level clock and the
   notification, commit — the shape of django-helpdesk's `escalate_tickets`;
2. `sweep()` makes one pass at the same instant over everything else that is due (on PostgreSQL
   `SWEEP_WORKERS` batches at once, as the scheduler runs it);
3. a second pass at that instant must find nothing to do.

Escalations per second count the escalation with everything it writes: the clock closed, the event
moved, the escalation row, the `system` audit row, the next level clock and the notification.
Prints JSON lines; the last one has both figures and their ratio (target: ≥ 18,000/s, 100× ~180/s).

    .venv/bin/python bench/sweep.py --quick
    .venv/bin/python bench/sweep.py
    .venv/bin/python bench/sweep.py --database-url postgresql://postgres@127.0.0.1:5432/bench
"""
from __future__ import annotations

import sys
from pathlib import Path

# bench/calendar.py shadows the stdlib `calendar` module: keep this directory off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

TARGET_PER_SECOND = 18_000  # 100 × the ~180 tickets/s of django-helpdesk's escalate_tickets
NOW = datetime.fromisoformat("2026-03-11T10:00:00+08:00").astimezone(UTC)  # a Wednesday, in working hours
STATES = ("registered", "dispatched", "in_progress")


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, ensure_ascii=False), flush=True)


class DatabaseTimer:
    """Wall time the sweep's threads spend inside the database driver, summed over threads: each
    statement from execute to its return, and each commit. On SQLite that is SQLite's own work (a
    query's later row fetches are not counted, so it is a lower bound); on PostgreSQL, the server's
    work plus the round trips. `escalated × workers / seconds` is then the rate the pass would reach
    if everything the process itself does cost nothing: the ceiling the database sets."""

    def __init__(self, engine) -> None:
        self.engine, self.seconds = engine, 0.0
        self._lock, self._local = threading.Lock(), threading.local()
        self._hooks = [(engine, "before_cursor_execute", self._start), (engine, "after_cursor_execute", self._stop),
                       (engine, "commit", self._start), (Session, "after_commit", self._stop)]

    def _start(self, *_: Any) -> None:
        self._local.started = time.perf_counter()

    def _stop(self, *_: Any) -> None:
        started, self._local.started = getattr(self._local, "started", None), None
        if started is not None:
            with self._lock:
                self.seconds += time.perf_counter() - started

    def __enter__(self) -> DatabaseTimer:
        for target, name, hook in self._hooks:
            sa.event.listen(target, name, hook)
        return self

    def __exit__(self, *_: Any) -> None:
        for target, name, hook in self._hooks:
            sa.event.remove(target, name, hook)


def make_app(url: str):
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    from grid_service import create_app

    return create_app()


def reset_schema(db) -> None:
    if db.engine.dialect.name == "postgresql":
        with db.engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
    else:
        db.drop_all()
    db.create_all()


def seed(app, *, events: int, overdue: int, sample: int, shape: tuple[int, int, int]) -> dict[str, Any]:
    """Fresh schema and data; returns the naive sample's event ids and the counts seeded."""
    from bench.sla_seed import EventSpec, build_territory, ensure_people, seed_events, spread
    from grid_service.events.models import Category
    from grid_service.infra.db import db
    from grid_service.sla.defaults import ensure_default_policies
    from grid_service.sla.models import Clock

    with app.app_context():
        reset_schema(db)
        session, sla = db.session, app.extensions["sla"]
        t0 = NOW - timedelta(days=30)
        tree = build_territory(session, t0, streets=shape[0], communities=shape[1], grids=shape[2])
        people = ensure_people(session, tree["district"][0][0], t0)
        major = Category(code="01", name="市容环境", level="major")
        session.add(major)
        session.flush()
        category = Category(code="01001", name="暴露垃圾", level="minor", parent_id=major.id)
        session.add(category)
        ensure_default_policies(session, t0)
        session.commit()
        policy = sla.policy_for(session, category, "normal", NOW)
        calendar = sla.calendar(session, policy.calendar_id)
        origin = NOW - timedelta(days=14)
        total = calendar.between(origin, NOW)

        def before(minutes: int) -> datetime:
            """The instant `minutes` working minutes before NOW."""
            return calendar.add(origin, total - minutes)

        grids = [gid for gid, _ in tree["grid"]]
        grid_limit = policy.level_minutes["grid"]
        # Nothing due: received less than the level warning (80 % of the grid's limit) ago, and
        # still unregistered only within the accept warning.
        quiet_span = int(grid_limit * policy.warn_ratio) - 10
        accept_warn = int(policy.accept_minutes * policy.warn_ratio) - 5
        specs: list[EventSpec] = []
        quiet = events - overdue - sample
        for i, m in enumerate(spread(quiet, 0, quiet_span)):
            state = "reported" if m < accept_warn else STATES[i % 3]
            specs.append(EventSpec(grids[i % len(grids)], "grid", before(m), state))
        # Overdue at the grid, not yet at the resolve warning; a fifth never registered.
        late_span = (grid_limit + 10, int(policy.resolve_minutes * policy.warn_ratio) - 10)
        for i, m in enumerate(spread(overdue, *late_span)):
            state = "reported" if i % 5 == 0 else STATES[i % 3]
            specs.append(EventSpec(grids[(7 * i) % len(grids)], "grid", before(m), state, level_warned=i % 2 == 0))
        sample_specs = [EventSpec(grids[(11 * i) % len(grids)], "grid", before(m), STATES[i % 3], level_warned=True)
                        for i, m in enumerate(spread(sample, *late_span))]
        started = time.perf_counter()
        ids = seed_events(session, sla, category, specs + sample_specs, people)
        session.commit()
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE"))
        else:
            session.execute(sa.text("ANALYZE"))
            session.commit()
        seconds = time.perf_counter() - started
        counts = {name: session.scalar(sa.text(f"SELECT count(*) FROM {name}"))
                  for name in ("events", "sla_clocks", "event_history", "units")}
        due = session.scalar(sa.select(sa.func.count()).select_from(Clock)
                             .where(Clock.state == "running", Clock.next_check_at <= NOW))
        return {"sample_ids": ids[len(specs):], "seed_seconds": round(seconds, 2), "rows": counts, "due_clocks": due}


def naive_escalate(session, sla, now: datetime, event_ids: list[int]) -> int:
    """One event at a time through the ORM, a commit each (django-helpdesk's escalate_tickets shape)."""
    from grid_service.events import audit
    from grid_service.events.models import Event
    from grid_service.inbox.models import Notification
    from grid_service.sla.models import Clock, Escalation
    from grid_service.territory.models import Unit

    due = session.scalars(sa.select(Clock.id).where(
        Clock.metric == "level", Clock.state == "running", Clock.due_at <= now, Clock.event_id.in_(event_ids))).all()
    done = 0
    for clock_id in due:
        clock = session.get(Clock, clock_id)
        event = session.get(Event, clock.event_id)
        owner = session.get(Unit, event.owner_id)
        parent = session.get(Unit, owner.parent_id)
        calendar = sla.calendar(session, clock.calendar_id)
        late = max(0.0, calendar.between(clock.due_at, now))
        from_state, from_level, from_owner = event.state, event.level, event.owner_id
        sla.stop(session, clock, now)
        event.owner_id, event.level = parent.id, parent.level
        event.state = "registered" if from_state == "dispatched" else from_state
        if event.state == "registered":
            event.handler_id = None
        event.updated_at = now
        session.add(Escalation(event_id=event.id, clock_id=clock.id, reason="timer", from_level=from_level,
                               to_level=parent.level, from_owner_id=from_owner, to_owner_id=parent.id,
                               due_at=clock.due_at, escalated_at=now, late_minutes=late))
        # The service's own audit append: flushes the move, then the next link of the hash chain.
        note = f"{owner.name}处置超时，自动上报至{parent.name}"
        details = {"clock_id": clock.id, "due_at": clock.due_at.isoformat(), "late_minutes": round(late, 2)}
        audit.append_link(session, event, audit.history_values(
            event_id=event.id, actor=None, action="escalate", now=now, from_state=from_state, to_state=event.state,
            from_level=from_level, to_level=event.level, from_owner_id=from_owner, to_owner_id=event.owner_id,
            note=note, details=details))
        # The next level clock, numbered after the event's latest one.
        last = session.scalar(sa.select(Clock).where(Clock.event_id == event.id, Clock.metric == "level")
                              .order_by(Clock.seq.desc()).limit(1))
        policy = sla.policy_for(session, event.category, event.priority, now)
        session.add(Clock(**sla.new_clock(session, event.id, policy, "level", start=now, seq=last.seq + 1,
                                          level=event.level, owner_id=event.owner_id)))
        # The new owner's inbox item, once per cause (looked up first, as an ORM loop does).
        dedupe_key = f"escalated:{clock.id}"
        if session.scalar(sa.select(Notification.id).where(Notification.dedupe_key == dedupe_key)) is None:
            session.add(Notification(dedupe_key=dedupe_key, unit_id=parent.id, event_id=event.id, clock_id=clock.id,
                                     kind="escalated", message=f"{owner.name}处置超时，事件已自动上报至本单位",
                                     created_at=now))
        session.commit()
        done += 1
    return done


def verify(db, overdue: int, sample: int) -> dict[str, Any]:
    """Exactly once: one escalation, one system audit row, one notification per escalated clock."""
    q = lambda sql: db.session.scalar(sa.text(sql))  # noqa: E731
    checks = {
        "escalations": q("SELECT count(*) FROM escalations"),
        "escalation_clocks": q("SELECT count(DISTINCT clock_id) FROM escalations"),
        "system_escalate_rows": q("SELECT count(*) FROM event_history "
                                  "WHERE actor_role = 'system' AND action = 'escalate'"),
        "escalated_notifications": q("SELECT count(*) FROM notifications WHERE kind = 'escalated'"),
        "community_events": q("SELECT count(*) FROM events WHERE level = 'community'"),
        "running_level_clocks_at_community": q(
            "SELECT count(*) FROM sla_clocks WHERE metric = 'level' AND state = 'running' AND level = 'community'"),
    }
    expected = overdue + sample
    checks["ok"] = all(value == expected for key, value in checks.items() if key != "ok")
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events, 2,000 overdue, naive sample 200")
    parser.add_argument("--database-url", default=None,
                        help="default: a fresh SQLite file in a temp directory (the database is wiped first)")
    parser.add_argument("--events", type=int, default=None, help="open events in all (default 200,000)")
    parser.add_argument("--overdue", type=int, default=None, help="overdue level clocks for the sweep (default 20,000)")
    parser.add_argument("--sample", type=int, default=None, help="overdue events for the naive loop (default 2,000)")
    parser.add_argument("--batch-size", type=int, default=None, help="sweep batch size (default: the sweeper's)")
    parser.add_argument("--workers", type=int, default=None,
                        help="batches at once on PostgreSQL (default: SWEEP_WORKERS, 2; SQLite: always 1)")
    args = parser.parse_args()
    events = args.events or (20_000 if args.quick else 200_000)
    overdue = args.overdue or (2_000 if args.quick else 20_000)
    sample = args.sample or (200 if args.quick else 2_000)
    shape = (5, 5, 4) if args.quick else (10, 10, 10)
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='grid-bench-')}/sweep.db"

    app = make_app(url)
    from grid_service.escalation import sweeper
    from grid_service.infra.db import db

    backend = url.split(":", 1)[0].split("+")[0]
    seeded = seed(app, events=events, overdue=overdue, sample=sample, shape=shape)
    emit({"bench": "sweep", "database": backend, "step": "seed", "events": events, "overdue": overdue,
          "naive_sample": sample, "seconds": seeded["seed_seconds"], "rows": seeded["rows"],
          "due_clocks": seeded["due_clocks"]})
    batch_size = args.batch_size or sweeper.BATCH_SIZE
    workers = 1 if backend == "sqlite" else args.workers or app.config["SWEEP_WORKERS"]
    with app.app_context():
        session, sla = db.session, app.extensions["sla"]
        started, cpu = time.perf_counter(), time.process_time()
        naive_done = naive_escalate(session, sla, NOW, seeded["sample_ids"])
        naive_seconds, naive_cpu = time.perf_counter() - started, time.process_time() - cpu
        naive_rate = naive_done / naive_seconds
        emit({"bench": "sweep", "database": backend, "step": "naive_per_event_orm", "escalated": naive_done,
              "seconds": round(naive_seconds, 3), "escalations_per_s": round(naive_rate, 1),
              "process_cpu_seconds": round(naive_cpu, 3), "load_average_1m": round(os.getloadavg()[0], 2)})

        with DatabaseTimer(db.engine) as in_database:
            started, cpu = time.perf_counter(), time.process_time()
            first = sweeper.sweep(session, sla, NOW, batch_size=batch_size, workers=workers).summary()
            first_seconds, first_cpu = time.perf_counter() - started, time.process_time() - cpu
        rate = first["escalated"] / first_seconds
        database_bound = first["escalated"] * workers / in_database.seconds if in_database.seconds else None
        emit({"bench": "sweep", "database": backend, "step": "sweep_pass", "batch_size": batch_size, "workers": workers,
              **first,
              "seconds": round(first_seconds, 3), "escalations_per_s": round(rate, 1),
              # This process's CPU (on SQLite it includes the database's own work; PostgreSQL works in its server).
              "process_cpu_seconds": round(first_cpu, 3),
              "database_seconds": round(in_database.seconds, 3),
              "database_share": round(in_database.seconds / (first_seconds * workers), 3),
              "database_bound_per_s": database_bound and round(database_bound, 1),
              "load_average_1m": round(os.getloadavg()[0], 2)})

        started = time.perf_counter()
        second = sweeper.sweep(session, sla, NOW, batch_size=batch_size, workers=workers).summary()
        second_seconds = time.perf_counter() - started
        emit({"bench": "sweep", "database": backend, "step": "second_pass_same_instant", **second,
              "seconds": round(second_seconds, 4), "did_nothing": second["claimed"] == 0})

        checks = verify(db, overdue, naive_done)
        emit({"bench": "sweep", "database": backend, "step": "verify", **checks})
        emit({"bench": "sweep", "database": backend, "metric": "escalations_per_s", "events": events,
              "overdue": first["escalated"], "workers": workers, "sweep": round(rate, 1),
              "naive_per_event_orm": round(naive_rate, 1),
              "database_bound_per_s": database_bound and round(database_bound, 1),
              "ratio_sweep_to_naive": round(rate / naive_rate, 1), "target": TARGET_PER_SECOND,
              "meets_target": rate >= TARGET_PER_SECOND, "second_pass_seconds": round(second_seconds, 4),
              "second_pass_did_nothing": second["claimed"] == 0, "exactly_once": checks["ok"],
              "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)})


if __name__ == "__main__":
    main()
