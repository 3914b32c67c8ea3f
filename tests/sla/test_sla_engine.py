"""The SLA engine end to end: clocks from intake, warnings, escalation up the chain with the exact
instants, breaches, suspension, extension, reclassification, and sweeping twice doing nothing."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from grid_service.events.models import Event, EventHistory
from grid_service.inbox.models import Notification
from grid_service.infra.db import db
from grid_service.sla.defaults import ensure_calendars, ensure_default_policies
from grid_service.sla.models import CalendarRow, Clock, Escalation, Policy
from tests.helpers import act, report, run_sweep, sh


@pytest.fixture
def people(make_actor, policies):
    return {
        "worker": make_actor("grid_worker", "g111"),
        "community": make_actor("supervisor", "c11"),
        "street": make_actor("supervisor", "s1"),
        "district": make_actor("supervisor", "d"),
        "handler": make_actor("handler", "s1"),
    }


def clocks(event_id: int) -> list[Clock]:
    db.session.expire_all()
    return db.session.scalars(sa.select(Clock).where(Clock.event_id == event_id).order_by(Clock.id)).all()


def event_row(event_id: int) -> Event:
    db.session.expire_all()
    return db.session.get(Event, event_id)


def test_report_starts_three_clocks_with_working_hour_deadlines(people):
    # Monday 2026-03-02 09:00: accept and the grid's level due at 10:00; resolve (240) at 14:30.
    eid = report(people["worker"], received_at="2026-03-02T09:00:00+08:00")["id"]
    by_metric = {c.metric: c for c in clocks(eid)}
    assert by_metric["accept"].due_at == sh("2026-03-02T10:00") and by_metric["accept"].warn_at == sh("2026-03-02T09:48")
    assert by_metric["level"].due_at == sh("2026-03-02T10:00") and by_metric["level"].level == "grid"
    # 09:00–12:00 is 180 minutes; the other 60 run 13:30–14:30 after lunch.
    assert by_metric["resolve"].due_at == sh("2026-03-02T14:30")
    assert by_metric["resolve"].warn_at == sh("2026-03-02T13:42")  # 192 = 180 + 12
    assert all(c.state == "running" and not c.provisional for c in by_metric.values())


def test_escalation_chain_grid_to_district_with_exact_instants(app, people):
    eid = report(people["worker"], received_at="2026-03-02T09:00:00+08:00")["id"]

    assert run_sweep(app, "2026-03-02T09:47:59")["claimed"] == 0
    first = run_sweep(app, "2026-03-02T09:48")
    assert (first["warned"], first["escalated"]) == (2, 0)  # accept and level warn together

    at_ten = run_sweep(app, "2026-03-02T10:00")
    assert (at_ten["escalated"], at_ten["breached"]) == (1, 2)  # level → community; accept breached
    event = event_row(eid)
    assert (event.level, event.owner.code) == ("community", "150299001001")
    assert run_sweep(app, "2026-03-02T10:00")["claimed"] == 0  # the same instant again: nothing

    run_sweep(app, "2026-03-02T11:00")
    assert event_row(eid).level == "street"
    run_sweep(app, "2026-03-02T12:00")
    assert event_row(eid).level == "district"
    # The district's hour: 12:00 → lunch → 14:30; the resolve clock is due then too.
    assert run_sweep(app, "2026-03-02T14:29:59")["escalated"] == 0
    last = run_sweep(app, "2026-03-02T14:30")
    event = event_row(eid)
    assert event.level == "district" and event.is_supervised and last["supervised"] == 1

    level_clocks = [c for c in clocks(eid) if c.metric == "level"]
    assert [(c.level, c.started_at, c.due_at, c.state) for c in level_clocks] == [
        ("grid", sh("2026-03-02T09:00"), sh("2026-03-02T10:00"), "breached"),
        ("community", sh("2026-03-02T10:00"), sh("2026-03-02T11:00"), "breached"),
        ("street", sh("2026-03-02T11:00"), sh("2026-03-02T12:00"), "breached"),
        ("district", sh("2026-03-02T12:00"), sh("2026-03-02T14:30"), "breached"),
    ]
    moves = db.session.scalars(sa.select(Escalation).where(Escalation.event_id == eid).order_by(Escalation.id)).all()
    assert [(m.from_level, m.to_level, m.escalated_at) for m in moves] == [
        ("grid", "community", sh("2026-03-02T10:00")), ("community", "street", sh("2026-03-02T11:00")),
        ("street", "district", sh("2026-03-02T12:00")),
    ]
    history = db.session.scalars(sa.select(EventHistory).where(EventHistory.event_id == eid, EventHistory.actor_role == "system")).all()
    assert [h.action for h in history] == ["escalate", "escalate", "escalate", "supervise"]
    kinds = db.session.scalars(sa.select(Notification.kind).where(Notification.event_id == eid).order_by(Notification.id)).all()
    assert kinds.count("escalated") == 3 and kinds.count("supervise") == 1 and kinds.count("breached") == 2


def test_outage_catch_up_moves_one_level_per_pass(app, people):
    """Three days down: each pass moves an event one level; a second pass at that instant does nothing."""
    eid = report(people["worker"], received_at="2026-03-02T09:00:00+08:00")["id"]
    first = run_sweep(app, "2026-03-05T09:00")
    assert first["escalated"] == 1 and first["warned"] == 0  # straight to the highest threshold
    assert event_row(eid).level == "community"
    escalation = db.session.scalar(sa.select(Escalation).where(Escalation.event_id == eid))
    # Late from Mon 10:00 to Thu 09:00: Mon 10:00–12:00 and 13:30–17:30 (360) + Tue, Wed (420 each) = 1200.
    assert escalation.late_minutes == 1200
    assert run_sweep(app, "2026-03-05T09:00")["escalated"] == 0
    new_level = [c for c in clocks(eid) if c.metric == "level"][-1]
    assert new_level.started_at == sh("2026-03-05T09:00") and new_level.due_at == sh("2026-03-05T10:00")


def test_resolving_in_time_stops_the_clocks_as_met(app, people, edge_clock):
    edge_clock.set("2026-03-02T09:05:00+08:00")
    eid = report(people["worker"], received_at="2026-03-02T09:00:00+08:00")["id"]
    c, h = people["community"], people["handler"]
    for actor, action, body in [(c, "register", {}), (c, "dispatch", {"handler_id": h.user.id}), (h, "accept", {}), (h, "resolve", {})]:
        assert act(actor, eid, action, **body).status_code == 200
    states = {cl.metric: cl.state for cl in clocks(eid)}
    assert states == {"accept": "met", "level": "met", "resolve": "met"}
    assert run_sweep(app, "2026-03-09T09:00")["claimed"] == 0


def test_returns_and_reworks_do_not_reset_the_resolve_deadline(app, people, edge_clock):
    edge_clock.set("2026-03-02T09:05:00+08:00")
    eid = report(people["worker"], received_at="2026-03-02T09:00:00+08:00")["id"]
    c, h, w = people["community"], people["handler"], people["worker"]
    due = {cl.metric: cl.due_at for cl in clocks(eid)}["resolve"]
    for actor, action, body in [
        (c, "register", {}), (c, "dispatch", {"handler_id": h.user.id}), (h, "return", {"note": "非本单位职责"}),
        (c, "dispatch", {"handler_id": h.user.id}), (h, "accept", {}), (h, "resolve", {}), (w, "rework", {"note": "未清理干净"}),
    ]:
        assert act(actor, eid, action, **body).status_code == 200, action
    resolve = [cl for cl in clocks(eid) if cl.metric == "resolve"]
    assert len(resolve) == 1 and resolve[0].state == "running" and resolve[0].due_at == due


def test_suspension_pauses_and_resume_keeps_the_time_used(app, people, edge_clock):
    edge_clock.set("2026-03-02T09:05:00+08:00")
    eid = report(people["worker"], received_at="2026-03-02T09:00:00+08:00")["id"]
    c, h = people["community"], people["handler"]
    for actor, action, body in [(c, "register", {}), (c, "dispatch", {"handler_id": h.user.id}), (h, "accept", {})]:
        act(actor, eid, action, **body)
    with app.app_context():
        from grid_service.events import service

        event = db.session.get(Event, eid)
        # Suspend at 10:00 (60 minutes used), resume the next morning at 09:00.
        service.apply_action(db.session, event, db.session.merge(c.user), service.ActionRequest("suspend", note="待拆迁"),
                             sla=app.extensions["sla"], now=sh("2026-03-02T10:00"))
        db.session.commit()
        paused = {cl.metric: cl for cl in db.session.scalars(sa.select(Clock).where(Clock.event_id == eid))}
        assert paused["resolve"].state == "paused" and paused["resolve"].used_minutes == 60
        assert run_sweep(app, "2026-03-02T18:00")["claimed"] == 0  # nothing due while paused
        event = db.session.get(Event, eid)
        service.apply_action(db.session, event, db.session.merge(c.user), service.ActionRequest("resume"),
                             sla=app.extensions["sla"], now=sh("2026-03-03T09:00"))
        db.session.commit()
    resolve = [cl for cl in clocks(eid) if cl.metric == "resolve" and cl.state == "running"][0]
    # 180 minutes left from Tue 09:00 → 12:00.
    assert resolve.due_at == sh("2026-03-03T12:00")


def test_extension_moves_one_clock_and_is_recorded(app, people, edge_clock):
    edge_clock.set("2026-03-02T09:05:00+08:00")
    eid = report(people["worker"], received_at="2026-03-02T09:00:00+08:00")["id"]
    response = act(people["community"], eid, "extend", minutes=120, metric="resolve", note="需协调产权单位")
    assert response.status_code == 200
    resolve = {cl.metric: cl for cl in clocks(eid)}["resolve"]
    assert resolve.due_at == sh("2026-03-02T16:30") and resolve.extended_minutes == 120
    history = people["community"].get(f"/api/v1/events/{eid}/history").json
    assert history[-1]["action"] == "extend" and history[-1]["details"] == {"metric": "resolve", "minutes": 120}


def test_an_extension_is_capped_by_the_clocks_own_limit_and_needs_a_reason(app, people, edge_clock):
    edge_clock.set("2026-03-02T09:05:00+08:00")
    eid = report(people["worker"], received_at="2026-03-02T09:00:00+08:00")["id"]
    before = [(cl.metric, cl.due_at, cl.limit_minutes) for cl in clocks(eid)]
    huge = act(people["community"], eid, "extend", minutes=100_000, note="等待上级批复")
    assert huge.status_code == 422 and huge.json["errors"]["minutes"] == ["不能超过 240"]  # resolve: 240 minutes
    assert act(people["community"], eid, "extend", minutes=241, note="等待上级批复").status_code == 422
    assert act(people["community"], eid, "extend", minutes=60).status_code == 422  # no reason
    assert [(cl.metric, cl.due_at, cl.limit_minutes) for cl in clocks(eid)] == before
    assert act(people["community"], eid, "extend", minutes=240, note="等待上级批复").status_code == 200
    # The cap is the clock's own limit, not what earlier extensions added to it.
    assert act(people["community"], eid, "extend", minutes=241, note="再次延期").status_code == 422
    app.extensions["sla"].extension_max_ratio = 0.5
    try:
        assert act(people["community"], eid, "extend", minutes=121, note="再次延期").status_code == 422
        assert act(people["community"], eid, "extend", minutes=120, note="再次延期").status_code == 200
    finally:
        app.extensions["sla"].extension_max_ratio = 1.0


def test_category_change_applies_new_limits_from_the_original_start(app, people, edge_clock):
    edge_clock.set("2026-03-02T09:05:00+08:00")
    eid = report(people["worker"], received_at="2026-03-02T09:00:00+08:00")["id"]
    assert act(people["community"], eid, "reclassify", category_code="01002").status_code == 200
    by_metric = {cl.metric: cl for cl in clocks(eid) if cl.state == "running"}
    assert by_metric["resolve"].due_at == sh("2026-03-02T11:00")  # 120 from 09:00
    assert by_metric["level"].due_at == sh("2026-03-02T11:00")


@pytest.mark.parametrize("calendars_exist", [True, False], ids=["policies-raced", "calendars-raced"])
def test_a_fresh_installation_whose_sweepers_start_together_gets_its_defaults_once(app, ctx, calendars_exist):
    """Several sweeper processes on a new database each create the default calendars and policies; the
    ones that lose the race use the winner's rows instead of failing their pass."""
    at = sh("2026-03-02T09:00")
    if calendars_exist:
        ensure_calendars(db.session, at)
        db.session.commit()
    first = sa.orm.Session(db.engine)
    ensure_default_policies(first, at)  # flushed, not committed: the first process is still working
    about_to_insert, first_committed = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def hold_the_insert(_conn, _cursor, statement, *_args) -> None:
        # The second process has read that nothing exists and starts writing (BEGIN on SQLite, SAVEPOINT on
        # PostgreSQL): let the first commit now.
        if threading.current_thread() is thread and not statement.lstrip().upper().startswith("SELECT"):
            about_to_insert.set()
            first_committed.wait(20)

    def second_process() -> None:
        with app.app_context():
            try:
                ensure_default_policies(db.session, at)
                db.session.commit()
            except BaseException as error:  # noqa: BLE001 - reported by the assertion below
                failures.append(error)

    thread = threading.Thread(target=second_process)
    sa.event.listen(db.engine, "before_cursor_execute", hold_the_insert)
    try:
        thread.start()
        assert about_to_insert.wait(20), "the second process never tried to create the defaults"
        first.commit()
        first.close()
        first_committed.set()
        thread.join(20)
    finally:
        first_committed.set()
        sa.event.remove(db.engine, "before_cursor_execute", hold_the_insert)
    assert not thread.is_alive() and failures == []
    db.session.expire_all()
    assert sorted(db.session.scalars(sa.select(Policy.scope))) == ["*|*", "*|urgent"]
    assert sorted(db.session.scalars(sa.select(CalendarRow.name))) == ["24x7", "default"]


def test_defaults_created_by_a_request_that_fails_go_with_it(app, ctx):
    """The savepoint the defaults are written in nests in the request's transaction, on SQLite too
    (where a SAVEPOINT issued before any write would otherwise commit on release)."""
    ensure_default_policies(db.session, sh("2026-03-02T09:00"))
    db.session.rollback()
    assert db.session.scalars(sa.select(Policy.scope)).all() == []
    assert db.session.scalars(sa.select(CalendarRow.name)).all() == []
