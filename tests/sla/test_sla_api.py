"""The SLA API: the inbox, an event's clocks, the overdue filters, policies and calendars."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from grid_service.inbox.models import Notification
from grid_service.infra.db import db
from grid_service.sla.models import Clock, Policy
from tests.helpers import act, report, run_sweep, sh


def local(text: str) -> str:
    """How the API writes a Shanghai wall time."""
    return text + "+08:00"


@pytest.fixture
def people(make_actor, policies):
    return {
        "worker": make_actor("grid_worker", "g111"),
        "community": make_actor("supervisor", "c11"),
        "community_2": make_actor("supervisor", "c11", name="supervisor-c11-b"),
        "other_community": make_actor("supervisor", "c12"),
        "street": make_actor("supervisor", "s1"),
        "handler": make_actor("handler", "s1"),
        "admin": make_actor("admin", "d"),
    }


def resolve_clock(event_id: int) -> Clock:
    db.session.expire_all()
    return db.session.scalar(sa.select(Clock).where(Clock.event_id == event_id, Clock.metric == "resolve")
                             .order_by(Clock.seq.desc()))


def unread_rows() -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.count()).select_from(Notification).where(Notification.read_at.is_(None)))


# ---------------------------------------------------------------- inbox


@pytest.fixture
def swept(app, people, edge_clock):
    """One 暴露垃圾 event in g111 from Mon 09:00, swept at 09:48 (warnings) and 10:00 (escalation, breach)."""
    edge_clock.set(local("2026-03-02T09:00:00"))
    event = report(people["worker"], received_at=local("2026-03-02T09:00:00"))
    run_sweep(app, "2026-03-02T09:48")
    run_sweep(app, "2026-03-02T10:00")
    return event


def test_inbox_lists_own_units_notifications_newest_first(people, swept):
    # The grid (owner at 09:48) got both warnings and the accept breach; the community got the escalation.
    page = people["worker"].get("/api/v1/inbox").json
    assert [i["kind"] for i in page["items"]] == ["breached", "warning", "warning"]
    assert (page["total"], page["unread"]) == (3, 3)
    assert {i["metric"] for i in page["items"][1:]} == {"accept", "level"}
    assert page["items"][1]["message"].endswith("时限即将到期（03-02 10:00）")

    community = people["community"].get("/api/v1/inbox").json
    assert (community["total"], community["unread"]) == (1, 1)
    item = community["items"][0]
    assert item["kind"] == "escalated" and item["read_at"] is None and item["read_by"] is None
    assert item["created_at"] == local("2026-03-02T10:00:00")
    assert item["event"]["id"] == swept["id"] and item["event"]["number"] == swept["number"]
    assert (item["event"]["state"], item["event"]["level"]) == ("reported", "community")
    assert item["event"]["category"] == {"code": "01001", "name": "暴露垃圾"}
    assert item["event"]["owner"]["code"] == "150299001001"
    assert "自动上报至本单位" in item["message"]

    # Only the caller's own unit: the street above sees none of this, nor does the neighbour.
    assert people["street"].get("/api/v1/inbox").json["total"] == 0
    assert people["other_community"].get("/api/v1/inbox").json["items"] == []


def test_inbox_filters_and_pages(people, swept):
    worker = people["worker"]
    warnings = worker.get("/api/v1/inbox?kind=warning").json
    assert [i["kind"] for i in warnings["items"]] == ["warning", "warning"] and warnings["total"] == 2
    first, second = worker.get("/api/v1/inbox?limit=1").json, worker.get("/api/v1/inbox?limit=1&offset=1").json
    assert first["total"] == 3 and first["items"][0]["kind"] == "breached" and second["items"][0]["kind"] == "warning"
    assert worker.get("/api/v1/inbox?unread=false").json["total"] == 0
    for bad in ("kind=spam", "limit=0", "limit=201", "unread=perhaps", "colour=red"):
        response = worker.get(f"/api/v1/inbox?{bad}")
        assert response.status_code == 422, bad
        assert response.json["code"] == "validation_error"


def test_a_handler_reads_only_what_is_addressed_to_them(people, swept):
    """The swept event was never dispatched: its warnings went to the grid, none to a handler."""
    response = people["handler"].get("/api/v1/inbox")
    assert response.status_code == 200 and response.json["total"] == 0
    grid_item = people["worker"].get("/api/v1/inbox").json["items"][0]["id"]
    assert people["handler"].post(f"/api/v1/inbox/{grid_item}/read").status_code == 404
    assert people["handler"].post("/api/v1/inbox/read", json={"all": True}).json == {"marked": 0, "unread": 0}


def test_a_timer_escalations_audit_row_gives_its_deadline_in_the_services_zone(people, swept):
    history = people["community"].get(f"/api/v1/events/{swept['id']}/history").json
    [row] = [h for h in history if h["action"] == "escalate"]
    assert row["actor_role"] == "system" and row["details"]["due_at"] == local("2026-03-02T10:00:00")
    assert row["at"] == local("2026-03-02T10:00:00")


def test_mark_one_read_keeps_the_first_reader(people, swept, edge_clock):
    item_id = people["community"].get("/api/v1/inbox").json["items"][0]["id"]
    # Someone else's notification is not found, and stays unread.
    assert people["other_community"].post(f"/api/v1/inbox/{item_id}/read").status_code == 404
    assert people["street"].post(f"/api/v1/inbox/{item_id}/read").status_code == 404
    assert people["community"].post("/api/v1/inbox/99999/read").status_code == 404
    assert unread_rows() == 4

    edge_clock.set(local("2026-03-02T10:05:00"))
    read = people["community"].post(f"/api/v1/inbox/{item_id}/read")
    assert read.status_code == 200
    assert read.json["read_at"] == local("2026-03-02T10:05:00")
    assert read.json["read_by"]["name"] == people["community"].user.name
    edge_clock.set(local("2026-03-02T10:07:00"))
    again = people["community_2"].post(f"/api/v1/inbox/{item_id}/read").json
    assert again["read_at"] == local("2026-03-02T10:05:00") and again["read_by"]["name"] == people["community"].user.name
    page = people["community"].get("/api/v1/inbox").json
    assert page["unread"] == 0 and people["community"].get("/api/v1/inbox?unread=true").json["items"] == []


def test_mark_many_read_is_all_or_nothing(people, swept):
    worker, community = people["worker"], people["community"]
    ids = [i["id"] for i in worker.get("/api/v1/inbox").json["items"]]
    foreign = community.get("/api/v1/inbox").json["items"][0]["id"]

    response = worker.post("/api/v1/inbox/read", json={"ids": [ids[0], foreign]})
    assert response.status_code == 404 and response.json["errors"] == {"ids": [foreign]}
    assert unread_rows() == 4  # nothing changed

    for body in ({}, {"ids": []}, {"ids": [ids[0]], "all": True}, {"all": False}, {"ids": [0]}, {"ids": [ids[0]], "kind": "warning"},
                 {"all": True, "kind": "spam"}):
        assert worker.post("/api/v1/inbox/read", json=body).status_code == 422, body
    assert unread_rows() == 4

    assert worker.post("/api/v1/inbox/read", json={"ids": ids[1:]}).json == {"marked": 2, "unread": 1}
    assert worker.post("/api/v1/inbox/read", json={"ids": ids[1:]}).json == {"marked": 0, "unread": 1}
    assert worker.post("/api/v1/inbox/read", json={"all": True, "kind": "warning"}).json == {"marked": 0, "unread": 1}
    assert worker.post("/api/v1/inbox/read", json={"all": True}).json == {"marked": 1, "unread": 0}
    assert unread_rows() == 1  # the community's item is untouched


def test_manual_escalation_and_urge_reach_the_inbox(people, edge_clock):
    edge_clock.set(local("2026-03-02T09:00:00"))
    eid = report(people["worker"])["id"]
    # The grid's event goes up to the community by hand; the street then urges the community.
    assert act(people["community"], eid, "escalate", note="需社区协调").status_code == 200
    assert act(people["street"], eid, "urge").status_code == 200
    items = people["community"].get("/api/v1/inbox").json["items"]
    assert [(i["kind"], i["metric"], i["event"]["level"]) for i in items] == [("urge", None, "community"), ("escalated", None, "community")]
    assert people["street"].get("/api/v1/inbox").json["total"] == 0


# ---------------------------------------------------------------- one event's clocks


def test_event_sla_view_with_exact_numbers(people, edge_clock):
    edge_clock.set(local("2026-03-02T09:00:00"))
    eid = report(people["worker"], received_at=local("2026-03-02T09:00:00"))["id"]

    edge_clock.set(local("2026-03-02T10:30:00"))
    body = people["community"].get(f"/api/v1/events/{eid}/sla").json
    assert body["event_id"] == eid and body["as_of"] == local("2026-03-02T10:30:00")
    clocks = {c["metric"]: c for c in body["clocks"]}
    accept, level, resolve = clocks["accept"], clocks["level"], clocks["resolve"]
    assert (accept["due_at"], accept["warn_at"]) == (local("2026-03-02T10:00:00"), local("2026-03-02T09:48:00"))
    assert (accept["used_minutes"], accept["remaining_minutes"], accept["overdue_minutes"]) == (90, 0, 30)
    assert accept["is_overdue"] and accept["state"] == "running" and accept["breached_at"] is None
    assert (level["level"], level["owner_code"], level["seq"], level["limit_minutes"]) == ("grid", "15029900100101", 1, 60)
    assert resolve == {
        "id": resolve["id"], "metric": "resolve", "seq": 1, "level": None, "owner_code": None, "state": "running",
        "started_at": local("2026-03-02T09:00:00"), "due_at": local("2026-03-02T14:30:00"),
        "warn_at": local("2026-03-02T13:42:00"), "limit_minutes": 240, "extended_minutes": 0,
        "used_minutes": 90, "remaining_minutes": 150, "overdue_minutes": 0, "is_overdue": False,
        "warned_at": None, "breached_at": None, "stopped_at": None, "provisional": False,
        "policy_scope": "01001|*", "policy_version": 1, "calendar": "default",
    }

    # Over lunch the working minutes stand still: 09:00–12:00 is 180.
    edge_clock.set(local("2026-03-02T13:00:00"))
    resolve = {c["metric"]: c for c in people["worker"].get(f"/api/v1/events/{eid}/sla").json["clocks"]}["resolve"]
    assert (resolve["used_minutes"], resolve["remaining_minutes"]) == (180, 60)

    # An extension adds to the limit and shows as such.
    assert act(people["community"], eid, "extend", minutes=30, note="协调产权单位").status_code == 200
    resolve = {c["metric"]: c for c in people["community"].get(f"/api/v1/events/{eid}/sla").json["clocks"]}["resolve"]
    assert (resolve["limit_minutes"], resolve["extended_minutes"], resolve["remaining_minutes"]) == (270, 30, 90)
    assert resolve["due_at"] == local("2026-03-02T15:00:00")


def test_event_sla_view_after_escalation_and_resolution(app, people, edge_clock):
    edge_clock.set(local("2026-03-02T09:00:00"))
    eid = report(people["worker"], received_at=local("2026-03-02T09:00:00"))["id"]
    run_sweep(app, "2026-03-02T10:00")
    c, h = people["community"], people["handler"]
    edge_clock.set(local("2026-03-02T10:20:00"))
    for actor, action, extra in [(c, "register", {}), (c, "dispatch", {"handler_id": h.user.id}), (h, "accept", {}), (h, "resolve", {})]:
        assert act(actor, eid, action, **extra).status_code == 200, action
    edge_clock.set(local("2026-03-03T09:00:00"))
    clocks = people["community"].get(f"/api/v1/events/{eid}/sla").json["clocks"]
    assert [(k["metric"], k["seq"], k["level"], k["state"]) for k in clocks] == [
        ("accept", 1, None, "breached"), ("level", 1, "grid", "breached"), ("resolve", 1, None, "met"),
        ("level", 2, "community", "met"),
    ]
    accept, grid, resolve, community = clocks
    assert accept["breached_at"] == local("2026-03-02T10:00:00") and accept["stopped_at"] == local("2026-03-02T10:20:00")
    assert accept["used_minutes"] == 80 and accept["overdue_minutes"] == 20 and not accept["is_overdue"]
    assert grid["used_minutes"] == 60 and grid["stopped_at"] == local("2026-03-02T10:00:00")
    # Stopped clocks do not keep counting overnight.
    assert (resolve["used_minutes"], resolve["remaining_minutes"], resolve["stopped_at"]) == (80, 160, local("2026-03-02T10:20:00"))
    assert community["started_at"] == local("2026-03-02T10:00:00") and community["used_minutes"] == 20


def test_event_sla_view_is_scoped_like_the_event(people, edge_clock):
    edge_clock.set(local("2026-03-02T09:00:00"))
    eid = report(people["worker"])["id"]
    assert people["other_community"].get(f"/api/v1/events/{eid}/sla").status_code == 404
    assert people["handler"].get(f"/api/v1/events/{eid}/sla").status_code == 404
    missing = people["community"].get("/api/v1/events/999999/sla")
    assert missing.status_code == 404 and missing.json["code"] == "not_found"
    assert people["street"].get(f"/api/v1/events/{eid}/sla").status_code == 200
    assert people["admin"].get(f"/api/v1/events/{eid}/sla").status_code == 200


# ---------------------------------------------------------------- list filters


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.json
    return sorted(e["id"] for e in response.json["items"])


def test_overdue_and_due_before_filters(app, people, edge_clock):
    edge_clock.set(local("2026-03-02T09:00:00"))
    garbage = report(people["worker"])["id"]  # resolve due 14:30
    street = report(people["worker"], category_code="01002")["id"]  # resolve due 11:00
    done = report(people["worker"])["id"]
    c, h, s = people["community"], people["handler"], people["street"]
    for actor, action, extra in [(c, "register", {}), (c, "dispatch", {"handler_id": h.user.id}), (h, "accept", {}), (h, "resolve", {})]:
        assert act(actor, done, action, **extra).status_code == 200

    edge_clock.set(local("2026-03-02T10:59:00"))
    assert _ids(s.get("/api/v1/events?overdue=true")) == []
    edge_clock.set(local("2026-03-02T11:00:00"))
    assert _ids(s.get("/api/v1/events?overdue=true")) == [street]
    assert _ids(s.get("/api/v1/events?overdue=false")) == [garbage, done]
    assert _ids(s.get("/api/v1/events?due_before=2026-03-02T14:30:00%2B08:00")) == [street]
    assert _ids(s.get("/api/v1/events?due_before=2026-03-02T14:31:00%2B08:00")) == [garbage, street]
    assert _ids(s.get("/api/v1/events?due_before=2026-03-02T06:31:00Z&overdue=false")) == [garbage]
    features = s.get("/api/v1/events.geojson?overdue=true").json["features"]
    assert [f["id"] for f in features] == [street]

    # Marked breached by the sweeper: still overdue. Suspended: its paused clock has no due time.
    run_sweep(app, "2026-03-02T11:00")
    for actor, action, extra in [(c, "register", {}), (c, "dispatch", {"handler_id": h.user.id}), (h, "accept", {}),
                                 (c, "suspend", {"note": "待协调"})]:
        assert act(actor, garbage, action, **extra).status_code == 200, action
    assert _ids(s.get("/api/v1/events?overdue=true")) == [street]
    assert _ids(s.get("/api/v1/events?due_before=2026-03-09T00:00:00%2B08:00")) == [street]
    # Out of scope stays out of scope.
    assert _ids(people["other_community"].get("/api/v1/events?overdue=true")) == []

    for bad in ("overdue=soon", "due_before=tomorrow", "due_before=99999-01-01T00:00:00"):
        response = s.get(f"/api/v1/events?{bad}")
        assert response.status_code == 422, bad


# ---------------------------------------------------------------- policies


def _clock_rows(event_id: int) -> dict[str, tuple]:
    db.session.expire_all()
    rows = db.session.scalars(sa.select(Clock).where(Clock.event_id == event_id, Clock.state.in_(("running", "paused"))))
    return {c.metric: (c.policy_id, c.limit_minutes, c.started_at, c.due_at, c.warn_at) for c in rows}


def test_policy_change_applies_to_running_clocks_and_spares_other_categories(people, edge_clock):
    edge_clock.set(local("2026-03-02T09:00:00"))
    garbage = report(people["worker"])["id"]
    street = report(people["worker"], category_code="01002")["id"]
    street_before = _clock_rows(street)

    edge_clock.set(local("2026-03-02T10:00:00"))
    response = people["admin"].post("/api/v1/sla/policies", json={"category_code": "01001", "resolve_minutes": 300, "note": "延长"})
    assert response.status_code == 201, response.json
    policy = response.json["policy"]
    assert (policy["scope"], policy["version"], policy["is_current"], policy["resolve_minutes"]) == ("01001|*", 2, True, 300)
    # Unchanged fields carried over from version 1.
    assert (policy["accept_minutes"], policy["level_minutes"]["grid"], policy["warn_ratio"], policy["calendar"]) == (60, 60, 0.8, "default")
    assert policy["created_by"] == people["admin"].user.name and policy["created_at"] == local("2026-03-02T10:00:00")
    assert response.json["clocks_updated"] == 3  # accept, level and resolve of the 暴露垃圾 event

    clocks = _clock_rows(garbage)
    # Not restarted: still from 09:00; 300 = 180 before lunch + 120 after → 15:30; warning at 240 → 14:30.
    assert clocks["resolve"][1:] == (300, sh("2026-03-02T09:00"), sh("2026-03-02T15:30"), sh("2026-03-02T14:30"))
    assert clocks["accept"][1:4] == (60, sh("2026-03-02T09:00"), sh("2026-03-02T10:00"))
    assert {c[0] for c in clocks.values()} == {policy["id"]}
    assert _clock_rows(street) == street_before

    versions = people["admin"].get("/api/v1/sla/policies?all=true").json
    assert [(p["version"], p["is_current"]) for p in versions if p["scope"] == "01001|*"] == [(1, False), (2, True)]
    current = people["admin"].get("/api/v1/sla/policies").json
    assert [p["version"] for p in current if p["scope"] == "01001|*"] == [2]
    assert all(p["is_current"] for p in current)


def test_a_new_more_specific_scope_takes_over_its_events_only(people, edge_clock):
    edge_clock.set(local("2026-03-02T09:00:00"))
    normal = report(people["worker"], category_code="01002")["id"]
    urgent = report(people["worker"], category_code="01002", priority="urgent")["id"]
    garbage = report(people["worker"])["id"]
    urgent_before, garbage_before = _clock_rows(urgent), _clock_rows(garbage)

    edge_clock.set(local("2026-03-02T09:30:00"))
    body = {"category_code": "01002", "priority": "normal", "accept_minutes": 30, "resolve_minutes": 90,
            "level_minutes": {"grid": 45}, "warn_ratio": 0.5}
    response = people["admin"].post("/api/v1/sla/policies", json=body)
    assert response.status_code == 201, response.json
    assert response.json["policy"]["scope"] == "01002|normal" and response.json["policy"]["version"] == 1
    assert response.json["clocks_updated"] == 3
    clocks = _clock_rows(normal)
    assert clocks["resolve"][1:] == (90, sh("2026-03-02T09:00"), sh("2026-03-02T10:30"), sh("2026-03-02T09:45"))
    assert clocks["level"][1] == 45 and clocks["level"][3] == sh("2026-03-02T09:45")
    assert _clock_rows(urgent) == urgent_before and _clock_rows(garbage) == garbage_before


def test_paused_clock_gets_new_limit_and_keeps_its_used_time(app, people, edge_clock):
    edge_clock.set(local("2026-03-02T09:00:00"))
    eid = report(people["worker"])["id"]
    c, h = people["community"], people["handler"]
    edge_clock.set(local("2026-03-02T10:00:00"))
    for actor, action, extra in [(c, "register", {}), (c, "dispatch", {"handler_id": h.user.id}), (h, "accept", {}),
                                 (c, "suspend", {"note": "待拆迁"})]:
        assert act(actor, eid, action, **extra).status_code == 200
    assert people["admin"].post("/api/v1/sla/policies", json={"category_code": "01", "priority": "*", "accept_minutes": 60,
                                                              "level_minutes": {}, "resolve_minutes": 120}).status_code == 201
    # '01|*' is less specific than '01001|*': nothing changes.
    assert resolve_clock(eid).limit_minutes == 240
    response = people["admin"].post("/api/v1/sla/policies", json={"category_code": "01001", "resolve_minutes": 120})
    assert response.json["clocks_updated"] == 2  # the paused level and resolve clocks (accept already stopped)
    clock = resolve_clock(eid)
    assert (clock.state, clock.used_minutes, clock.limit_minutes) == ("paused", 60, 120)
    edge_clock.set(local("2026-03-03T09:00:00"))
    assert act(c, eid, "resume").status_code == 200
    assert resolve_clock(eid).due_at == sh("2026-03-03T10:00")  # 60 left from Tue 09:00


def test_policy_admin_rules(people, edge_clock):
    edge_clock.set(local("2026-03-02T09:00:00"))
    admin = people["admin"]
    for who in ("community", "street", "worker", "handler"):
        assert people[who].get("/api/v1/sla/policies").status_code == 403, who
        assert people[who].post("/api/v1/sla/policies", json={"category_code": "01001", "resolve_minutes": 10}).status_code == 403
    count = db.session.scalar(sa.select(sa.func.count()).select_from(Policy))
    for body in (
        {"category_code": "01001", "warn_ratio": 1.0}, {"category_code": "01001", "resolve_minutes": 0},
        {"category_code": "01001", "level_minutes": {"city": 10}}, {"category_code": "01001", "level_minutes": {"grid": -1}},
        {"category_code": "01001", "priority": "soon"}, {"category_code": "01001", "accept_minutes": "ten"},
        {"category_code": "99999", "resolve_minutes": 10}, {"category_code": "01001", "calendar": "mars"},
        {"category_code": "01002", "priority": "urgent", "resolve_minutes": 10},  # a new scope needs every limit
        {"category_code": "01001", "colour": "red"},
    ):
        response = admin.post("/api/v1/sla/policies", json=body)
        assert response.status_code == 422, (body, response.json)
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Policy)) == count
    assert admin.get("/api/v1/sla/policies?all=maybe").status_code == 422


def test_two_admins_changing_one_scope_at_once_never_leave_two_current_versions(app, backend, people, edge_clock):
    """PostgreSQL: the second edit waits on the first's row lock, then answers 409 instead of a second current row."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: there is no concurrent edit to race")
    import threading

    from grid_service.infra.errors import Conflict
    from grid_service.sla.policies import PolicyChange, save_policy

    edge_clock.set(local("2026-03-02T09:00:00"))
    report(people["worker"])  # a running clock for the edits to update
    admin_id, sla = people["admin"].user.id, app.extensions["sla"]
    first_done, release, outcome = threading.Event(), threading.Event(), {}

    def edit(name: str, minutes: int, hold: bool) -> None:
        with app.app_context():
            from grid_service.auth.models import User

            try:
                save_policy(db.session, sla, PolicyChange(category_code="01001", resolve_minutes=minutes),
                            actor=db.session.get(User, admin_id), now=sh("2026-03-02T10:00"))
                if hold:
                    first_done.set()
                    release.wait(30)
                db.session.commit()
                outcome[name] = "saved"
            except Conflict:
                db.session.rollback()
                outcome[name] = "conflict"
            finally:
                first_done.set()
                db.session.remove()

    first = threading.Thread(target=edit, args=("first", 300, True))
    first.start()
    assert first_done.wait(30)
    second = threading.Thread(target=edit, args=("second", 360, False))
    second.start()
    # Wait (without sleeping) until the second edit is blocked on the first one's lock.
    with app.app_context():
        for _ in range(100_000):
            waiting = db.session.scalar(sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"))
            db.session.rollback()
            if waiting:
                break
        assert waiting
    release.set()
    first.join(30)
    second.join(30)
    assert outcome == {"first": "saved", "second": "conflict"}
    db.session.expire_all()
    rows = db.session.scalars(sa.select(Policy).where(Policy.scope == "01001|*").order_by(Policy.version)).all()
    assert [(p.version, p.is_current, p.resolve_minutes) for p in rows] == [(1, False, 240), (2, True, 300)]


# ---------------------------------------------------------------- calendars and health


def test_setting_a_day_recomputes_a_running_clocks_due_instant(people, edge_clock):
    # Friday 15:30 + 240 working minutes: 15:30–17:30 (120), then Monday 09:00–11:00.
    edge_clock.set(local("2026-03-06T15:30:00"))
    eid = report(people["worker"])["id"]
    assert resolve_clock(eid).due_at == sh("2026-03-09T11:00")
    admin = people["admin"]

    response = admin.put("/api/v1/calendars/default/days/2026-03-09", json={"kind": "holiday", "note": "临时休息"})
    assert response.status_code == 200, response.json
    assert response.json == {"calendar": "default", "day": "2026-03-09", "kind": "holiday", "note": "临时休息", "recomputed": 1}
    assert resolve_clock(eid).due_at == sh("2026-03-10T11:00")

    # A make-up working Saturday pulls it in to Saturday. The event's accept and level clocks (due Friday
    # 16:30) lie within a day of it too, so they are recomputed as well (to the same instants).
    assert admin.put("/api/v1/calendars/default/days/2026-03-07", json={"kind": "workday"}).json["recomputed"] == 3
    assert resolve_clock(eid).due_at == sh("2026-03-07T11:00")
    status = admin.get("/api/v1/calendars/default").json
    assert status["overrides"] == [{"day": "2026-03-07", "kind": "workday", "note": ""},
                                   {"day": "2026-03-09", "kind": "holiday", "note": "临时休息"}]

    for day in ("2026-03-07", "2026-03-09"):
        assert admin.put(f"/api/v1/calendars/default/days/{day}", json={"kind": "clear"}).status_code == 200
    assert resolve_clock(eid).due_at == sh("2026-03-09T11:00")
    assert admin.get("/api/v1/calendars/default").json["overrides"] == []
    sla_view = people["worker"].get(f"/api/v1/events/{eid}/sla").json["clocks"]
    assert {c["metric"]: c["due_at"] for c in sla_view}["resolve"] == local("2026-03-09T11:00:00")


def test_confirming_a_year_clears_provisional_deadlines_and_the_health_warning(client, people, edge_clock):
    # Thursday 2026-12-31 16:00 + 120 (01002): 16:00–17:30 (90), then 30 minutes in 2027, whose schedule is not official.
    edge_clock.set(local("2026-12-31T16:00:00"))
    eid = report(people["worker"], category_code="01002")["id"]
    assert resolve_clock(eid).provisional
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json["status"] == "ok"
    assert health.json["calendar"] == {"unconfirmed_years": {"default": [2027]}}
    assert people["worker"].get("/api/v1/calendars/default").json["provisional_years"] == [2027, 2028]

    response = people["admin"].post("/api/v1/calendars/default/years/2027/confirm")
    assert response.status_code == 200, response.json
    # All three running clocks reach into 2027's span (accept and level are due 12-31 17:00, within a day of it).
    assert response.json == {"calendar": "default", "year": 2027, "recomputed": 3}
    assert not resolve_clock(eid).provisional
    clocks = people["worker"].get(f"/api/v1/events/{eid}/sla").json["clocks"]
    assert not any(c["provisional"] for c in clocks)
    assert client.get("/healthz").json["calendar"] == {"unconfirmed_years": {}}
    status = people["worker"].get("/api/v1/calendars/default").json
    assert status["provisional_years"] == [2028] and 2027 in status["confirmed_years"]


def test_calendar_api_rules(people, edge_clock):
    edge_clock.set(local("2026-03-02T09:00:00"))
    admin = people["admin"]
    natural = people["worker"].get("/api/v1/calendars/24x7").json
    assert natural["kind"] == "natural" and natural["provisional_years"] == []
    for url in ("/api/v1/calendars/mars", "/api/v1/calendars/" + "x" * 40):
        assert admin.get(url).status_code == 404
    assert admin.put("/api/v1/calendars/mars/days/2026-03-09", json={"kind": "holiday"}).status_code == 404
    assert admin.post("/api/v1/calendars/mars/years/2027/confirm").status_code == 404
    for who in ("community", "worker", "handler"):
        assert people[who].put("/api/v1/calendars/default/days/2026-03-09", json={"kind": "holiday"}).status_code == 403
        assert people[who].post("/api/v1/calendars/default/years/2027/confirm").status_code == 403
    for day, body in (("2026-02-30", {"kind": "holiday"}), ("20260309", {"kind": "holiday"}), ("1999-01-01", {"kind": "holiday"}),
                      ("2026-03-09", {"kind": "vacation"}), ("2026-03-09", {}), ("2026-03-09", {"kind": "holiday", "note": "x" * 201})):
        response = admin.put(f"/api/v1/calendars/default/days/{day}", json=body)
        assert response.status_code == 422, (day, body, response.json)
    assert admin.put("/api/v1/calendars/24x7/days/2026-03-09", json={"kind": "holiday"}).status_code == 422
    assert admin.post("/api/v1/calendars/default/years/1999/confirm").status_code == 422
    assert admin.get("/api/v1/calendars/default").json["overrides"] == []
