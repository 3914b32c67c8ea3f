"""The workflow table, walked whole through the API, plus the rules around it."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from grid_service.events.actions import ACTION_LABELS, ACTIONS, TRANSITIONS, allowed_actions
from grid_service.events.models import Event, EventHistory
from grid_service.events.states import STATE_LABELS, STATES
from grid_service.infra.db import db
from tests.helpers import act, report


@pytest.fixture
def crew(make_actor, categories):
    """The people around grid g111: its worker, the community and street supervisors, a street handler."""
    return {
        "worker": make_actor("grid_worker", "g111"),
        "community": make_actor("supervisor", "c11"),
        "street": make_actor("supervisor", "s1"),
        "other_street": make_actor("supervisor", "s2"),
        "handler": make_actor("handler", "s1"),
        "other_handler": make_actor("handler", "s1", name="handler-2"),
    }


def force_state(event_id: int, state: str, handler_id: int | None = None) -> None:
    """Put an event straight into a state (test setup only: the API is what is under test).

    A Core UPDATE leaves the version alone, so the audit chain still ends at the event's version.
    """
    db.session.execute(sa.update(Event.__table__).where(Event.__table__.c.id == event_id)
                       .values(state=state, handler_id=handler_id))
    db.session.commit()
    db.session.expire_all()


def dispatched(crew) -> int:
    """A new event in g111, registered by the community and dispatched to the handler: its id."""
    eid = report(crew["worker"])["id"]
    assert act(crew["community"], eid, "register").status_code == 200
    assert act(crew["community"], eid, "dispatch", handler_id=crew["handler"].user.id).status_code == 200
    return eid


def params_for(action: str, crew, other_event_id: int) -> dict:
    note = {"note": "原因说明"}
    return {
        "dispatch": {"handler_id": crew["handler"].user.id},
        "merge": {"into_event_id": other_event_id},
        "reclassify": {"category_code": "01002"},
        "extend": {"minutes": 60},
    }.get(action, {}) | note


def actor_for(action: str, crew):
    if action in ("return", "accept", "resolve"):
        return crew["handler"]
    return crew["community"]


@pytest.mark.parametrize(("state", "action"), sorted(TRANSITIONS))
def test_every_transition_in_the_table_works_through_the_api(client, crew, state, action):
    event = report(crew["worker"])
    other = report(crew["worker"], description="另一处垃圾")
    force_state(event["id"], state, handler_id=crew["handler"].user.id)
    response = act(actor_for(action, crew), event["id"], action, **params_for(action, crew, other["id"]))
    assert response.status_code == 200, response.json
    assert response.json["state"] == TRANSITIONS[(state, action)]
    last = db.session.scalars(sa.select(EventHistory).where(EventHistory.event_id == event["id"]).order_by(EventHistory.id.desc())).first()
    assert (last.action, last.from_state, last.to_state) == (action, state, TRANSITIONS[(state, action)])


@pytest.mark.parametrize("state", STATES)
def test_actions_outside_the_table_answer_409_with_the_allowed_actions(client, crew, state):
    event = report(crew["worker"])
    force_state(event["id"], state, handler_id=crew["handler"].user.id)
    before = db.session.scalar(sa.select(sa.func.count()).select_from(EventHistory))
    forbidden = [a for a in ACTIONS if (state, a) not in TRANSITIONS]
    assert forbidden, state
    for action in forbidden:
        response = act(actor_for(action, crew), event["id"], action, **params_for(action, crew, event["id"]))
        assert response.status_code == 409, (action, response.json)
        assert response.json["code"] == "invalid_transition"
        assert set(response.json["allowed_actions"]) <= set(allowed_actions(state))
    db.session.expire_all()
    assert db.session.get(Event, event["id"]).state == state
    assert db.session.scalar(sa.select(sa.func.count()).select_from(EventHistory)) == before


def test_every_state_and_action_has_the_chinese_name_messages_use():
    assert set(STATE_LABELS) == set(STATES) and set(ACTION_LABELS) == set(ACTIONS)


def test_full_life_of_an_event_is_recorded_step_by_step(client, crew):
    event = report(crew["worker"])
    eid = event["id"]
    assert event["state"] == "reported" and event["level"] == "grid" and event["owner"]["code"] == "15029900100101"
    steps = [
        (crew["community"], "register", {}),
        (crew["community"], "dispatch", {"handler_id": crew["handler"].user.id}),
        (crew["handler"], "accept", {}),
        (crew["handler"], "resolve", {"note": "已清运"}),
        (crew["worker"], "rework", {"note": "现场仍有残留"}),
        (crew["handler"], "resolve", {"note": "已彻底清理"}),
        (crew["worker"], "verify", {}),
    ]
    for actor, action, body in steps:
        response = act(actor, eid, action, **body)
        assert response.status_code == 200, (action, response.json)
    final = crew["community"].get(f"/api/v1/events/{eid}").json
    assert final["state"] == "closed" and final["rework_count"] == 1 and final["closed_at"] is not None
    rows = crew["community"].get(f"/api/v1/events/{eid}/history").json
    assert [r["action"] for r in rows] == ["report", "register", "dispatch", "accept", "resolve", "rework", "resolve", "verify"]
    assert rows[0]["actor"]["name"] == crew["worker"].user.name and rows[0]["actor_role"] == "grid_worker"
    assert rows[5]["note"] == "现场仍有残留" and rows[5]["from_state"] == "resolved" and rows[5]["to_state"] == "in_progress"
    assert all(r["to_owner"] == "15029900100101" for r in rows)


def test_return_sends_the_event_back_and_is_counted(client, crew):
    eid = dispatched(crew)
    response = act(crew["handler"], eid, "return", note="不属于本单位职责")
    assert response.status_code == 200
    assert response.json["state"] == "registered" and response.json["return_count"] == 1 and response.json["handler"] is None
    # The handler no longer holds it.
    assert act(crew["handler"], eid, "accept").status_code in (404, 409)


def test_return_without_a_reason_is_refused(client, crew):
    eid = dispatched(crew)
    response = act(crew["handler"], eid, "return")
    assert response.status_code == 422 and "note" in response.json["errors"]


def test_manual_escalation_moves_level_and_owner_and_resets_dispatch(client, crew):
    eid = dispatched(crew)
    response = act(crew["community"], eid, "escalate", note="需街道协调")
    assert response.status_code == 200
    body = response.json
    assert (body["level"], body["owner"]["code"], body["state"], body["handler"]) == ("community", "150299001001", "registered", None)
    up = act(crew["street"], eid, "escalate")
    assert up.json["level"] == "street" and up.json["owner"]["code"] == "150299001"
    # The community no longer holds it: it may read it (located in its area) but not act.
    assert act(crew["community"], eid, "register").status_code == 409
    history = crew["street"].get(f"/api/v1/events/{eid}/history").json
    assert [(h["from_level"], h["to_level"]) for h in history if h["action"] == "escalate"] == [("grid", "community"), ("community", "street")]


def test_escalation_stops_at_the_district(client, crew, make_actor):
    district = make_actor("supervisor", "d")
    eid = report(crew["worker"])["id"]
    for _ in range(3):
        assert act(district, eid, "escalate").status_code == 200
    response = act(district, eid, "escalate")
    assert response.status_code == 409 and "escalate" not in response.json.get("allowed_actions", [])


def test_allowed_actions_leave_out_an_escalation_with_nowhere_to_go(client, crew, make_actor):
    district = make_actor("supervisor", "d")
    eid = report(crew["worker"])["id"]
    assert "escalate" in district.get(f"/api/v1/events/{eid}").json["allowed_actions"]
    for _ in range(3):
        assert act(district, eid, "escalate").status_code == 200
    at_top = district.get(f"/api/v1/events/{eid}").json
    assert at_top["level"] == "district" and "escalate" not in at_top["allowed_actions"]
    assert "urge" in at_top["allowed_actions"]


def test_a_supervisor_sends_an_event_up_past_its_own_unit_but_no_further_than_its_parent(client, crew, make_actor):
    eid = report(crew["worker"])["id"]  # owned by grid g111
    too_far = act(crew["community"], eid, "escalate", to_unit="150299", note="需区级协调")
    assert too_far.status_code == 422 and "150299001" in str(too_far.json["errors"]["to_unit"])
    assert act(crew["community"], eid, "escalate", to_unit="150299002", note="报其他街道").status_code == 422
    response = act(crew["community"], eid, "escalate", to_unit="150299001", note="报街道协调")
    assert response.status_code == 200, response.json
    assert (response.json["level"], response.json["owner"]["code"]) == ("street", "150299001")
    [row] = [h for h in crew["street"].get(f"/api/v1/events/{eid}/history").json if h["action"] == "escalate"]
    assert (row["from_level"], row["to_level"], row["note"], row["details"]) == (
        "grid", "street", "报街道协调", {"to_owner": "150299001", "levels": 2})
    # The street now holds it; a district admin may send it anywhere up, here the district.
    street_now = crew["street"].get(f"/api/v1/events/{eid}").json
    assert "escalate" in street_now["allowed_actions"]
    assert act(make_actor("admin", "d"), eid, "escalate", to_unit="150299").json["level"] == "district"


def test_a_street_escalating_its_own_event_reaches_the_district(client, crew):
    eid = report(crew["worker"])["id"]
    assert act(crew["street"], eid, "escalate", to_unit="150299001").status_code == 200
    assert act(crew["street"], eid, "escalate").json["owner"]["code"] == "150299"


def test_wrong_role_gets_403_and_nothing_changes(client, crew):
    eid = report(crew["worker"])["id"]
    response = act(crew["worker"], eid, "register")
    assert response.status_code == 403 and response.json["allowed_actions"] == []
    assert crew["worker"].get(f"/api/v1/events/{eid}").json["state"] == "reported"


def test_handler_not_assigned_cannot_accept(client, crew):
    eid = dispatched(crew)
    assert act(crew["other_handler"], eid, "accept").status_code == 404  # not theirs: out of scope


def test_dispatch_to_someone_who_is_not_a_handler_is_refused(client, crew):
    eid = report(crew["worker"])["id"]
    act(crew["community"], eid, "register")
    response = act(crew["community"], eid, "dispatch", handler_id=crew["worker"].user.id)
    assert response.status_code == 422 and "handler_id" in response.json["errors"]


def test_stale_version_is_refused(client, crew):
    event = report(crew["worker"])
    act(crew["community"], event["id"], "register")
    response = act(crew["street"], event["id"], "reject", note="重复", version=event["version"])
    assert response.status_code == 409 and response.json["code"] == "stale_version"


def test_reopen_brings_a_closed_event_back_to_its_handler(client, crew):
    eid = report(crew["worker"])["id"]
    for actor, action, body in [
        (crew["community"], "register", {}), (crew["community"], "dispatch", {"handler_id": crew["handler"].user.id}),
        (crew["handler"], "accept", {}), (crew["handler"], "resolve", {}), (crew["community"], "verify", {}),
    ]:
        assert act(actor, eid, action, **body).status_code == 200
    response = act(crew["community"], eid, "reopen", note="市民不满意")
    assert response.json["state"] == "dispatched" and response.json["reopen_count"] == 1
    assert response.json["handler"]["id"] == crew["handler"].user.id and response.json["closed_at"] is None


def test_merge_points_at_the_surviving_event(client, crew):
    first = report(crew["worker"])["id"]
    dup = report(crew["worker"], description="同一堆垃圾")["id"]
    response = act(crew["community"], dup, "merge", into_event_id=first, note="重复上报")
    assert response.json["state"] == "merged" and response.json["merged_into_id"] == first
    assert act(crew["community"], first, "merge", into_event_id=first).status_code == 422


def test_two_supervisors_at_once_cannot_both_win(app, client, crew, backend):
    """Two concurrent requests act on the same event; exactly one succeeds, the other gets 409."""
    eid = report(crew["worker"])["id"]
    barrier = threading.Barrier(2)
    results: list[int] = []

    def attempt(actor, action, body):
        with app.test_client() as c:
            barrier.wait()
            r = c.post(f"/api/v1/events/{eid}/actions", json={"action": action} | body, headers=actor.headers)
            results.append(r.status_code)

    threads = [
        threading.Thread(target=attempt, args=(crew["community"], "register", {"version": 1})),
        threading.Thread(target=attempt, args=(crew["street"], "reject", {"note": "不予立案", "version": 1})),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 409]
    db.session.expire_all()
    rows = db.session.scalars(sa.select(EventHistory).where(EventHistory.event_id == eid)).all()
    assert len(rows) == 2  # the report and the single winning action
