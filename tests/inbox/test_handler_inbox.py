"""A handler's inbox (处置人员的待办): the work dispatched to them and what happens to it, addressed to them."""
from __future__ import annotations

import pytest

from tests.helpers import act, report, run_sweep


def local(text: str) -> str:
    return text + "+08:00"


@pytest.fixture
def crew(make_actor, policies):
    return {
        "worker": make_actor("grid_worker", "g111"),
        "community": make_actor("supervisor", "c11"),
        "street": make_actor("supervisor", "s1"),
        "handler": make_actor("handler", "s1"),
        "other_handler": make_actor("handler", "s1", name="handler-s1-b"),
    }


def inbox(actor, **query):
    response = actor.get("/api/v1/inbox", query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def kinds(actor) -> list[tuple[str, int]]:
    return [(item["kind"], item["event"]["id"]) for item in inbox(actor)["items"]]


def dispatched(crew, edge_clock) -> int:
    edge_clock.set(local("2026-03-02T09:00:00"))
    eid = report(crew["worker"], received_at=local("2026-03-02T09:00:00"))["id"]
    assert act(crew["community"], eid, "register").status_code == 200
    assert act(crew["community"], eid, "dispatch", handler_id=crew["handler"].user.id).status_code == 200
    return eid


def test_work_dispatched_to_a_handler_reaches_their_inbox_and_no_one_elses(crew, edge_clock):
    eid = dispatched(crew, edge_clock)
    page = inbox(crew["handler"])
    assert [(i["kind"], i["event"]["id"], i["event"]["state"]) for i in page["items"]] == [("dispatched", eid, "dispatched")]
    assert page["unread"] == 1 and "派遣事件给您处置" in page["items"][0]["message"]
    assert inbox(crew["other_handler"])["total"] == 0
    assert ("dispatched", eid) not in kinds(crew["community"])


def test_an_urge_goes_to_the_handler_holding_the_event_and_to_the_owner_unit(crew, edge_clock):
    eid = dispatched(crew, edge_clock)
    assert act(crew["handler"], eid, "accept").status_code == 200
    assert act(crew["street"], eid, "urge").status_code == 200
    assert ("urge", eid) in kinds(crew["handler"])
    assert ("urge", eid) in kinds(crew["worker"])  # the grid owns the event
    assert inbox(crew["other_handler"])["total"] == 0


def test_rework_and_an_extension_are_the_handlers_news(crew, edge_clock):
    eid = dispatched(crew, edge_clock)
    for action, body in (("accept", {}), ("resolve", {"note": "已清运"})):
        assert act(crew["handler"], eid, action, **body).status_code == 200
    assert act(crew["community"], eid, "rework", note="现场仍有残留").status_code == 200
    assert act(crew["community"], eid, "extend", minutes=60, note="需联系环卫车辆").status_code == 200
    items = {i["kind"]: i["message"] for i in inbox(crew["handler"])["items"]}
    assert "现场仍有残留" in items["rework"] and "60" in items["extended"] and "需联系环卫车辆" in items["extended"]
    assert ("rework", eid) in kinds(crew["worker"])  # the owner unit hears of a failed check too


def test_a_return_asks_the_owner_to_dispatch_again(crew, edge_clock):
    eid = dispatched(crew, edge_clock)
    assert act(crew["handler"], eid, "return", note="不属于环卫职责").status_code == 200
    owner = [i for i in inbox(crew["worker"])["items"] if i["kind"] == "returned"]
    assert [(i["event"]["id"], i["event"]["state"]) for i in owner] == [(eid, "registered")]
    assert "不属于环卫职责" in owner[0]["message"]
    assert [i["kind"] for i in inbox(crew["handler"])["items"]] == ["dispatched"]


def test_deadline_warnings_on_a_handlers_event_reach_the_handler(app, crew, edge_clock):
    eid = dispatched(crew, edge_clock)
    assert act(crew["handler"], eid, "accept").status_code == 200
    run_sweep(app, "2026-03-02T09:48")  # 80 % of the 60-minute accept and level limits
    warnings = [i for i in inbox(crew["handler"])["items"] if i["kind"] == "warning"]
    assert {i["metric"] for i in warnings} == {"level"} and warnings[0]["event"]["id"] == eid
    assert inbox(crew["other_handler"])["total"] == 0


def test_a_handler_marks_their_own_items_and_cannot_touch_anyone_elses(crew, edge_clock):
    eid = dispatched(crew, edge_clock)
    act(crew["street"], eid, "urge")
    mine = [i["id"] for i in inbox(crew["handler"])["items"]]
    theirs = inbox(crew["worker"])["items"][0]["id"]
    assert crew["other_handler"].post(f"/api/v1/inbox/{mine[0]}/read").status_code == 404
    assert crew["community"].post(f"/api/v1/inbox/{mine[0]}/read").status_code == 404
    response = crew["handler"].post("/api/v1/inbox/read", json={"ids": [mine[0], theirs]})
    assert response.status_code == 404 and inbox(crew["handler"])["unread"] == len(mine)
    assert crew["handler"].post("/api/v1/inbox/read", json={"all": True}).json == {"marked": len(mine), "unread": 0}
    assert inbox(crew["worker"], unread="true")["total"] >= 1  # the grid's items are untouched
