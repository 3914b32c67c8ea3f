"""GET /api/v1/users: the people directory a supervisor dispatches from."""
from __future__ import annotations

import pytest

from tests.helpers import act, report


@pytest.fixture
def people(make_actor, categories):
    return {
        "worker": make_actor("grid_worker", "g111"),
        "community": make_actor("supervisor", "c11"),
        "street": make_actor("supervisor", "s1"),
        "street_handler": make_actor("handler", "s1", name="环卫所"),
        "community_handler": make_actor("handler", "c11", name="物业"),
        "sibling_handler": make_actor("handler", "c12", name="隔壁物业"),
        "other_street_handler": make_actor("handler", "s2", name="二街道城管"),
        "district_handler": make_actor("handler", "d", name="区城管执法局"),
        "admin": make_actor("admin", "d"),
    }


def names(actor, **query) -> list[str]:
    response = actor.get("/api/v1/users", query_string=query)
    assert response.status_code == 200, response.json
    return [item["name"] for item in response.json["items"]]


def test_a_community_supervisor_sees_their_handlers_and_those_above_not_the_neighbours(people):
    visible = names(people["community"], role="handler")
    assert set(visible) == {"物业", "环卫所", "区城管执法局"}


def test_entries_carry_names_roles_and_units_and_nothing_secret(people):
    response = people["street"].get("/api/v1/users", query_string={"q": "物业"})
    item = next(i for i in response.json["items"] if i["name"] == "物业")
    assert set(item) == {"id", "name", "display_name", "role", "unit", "is_active"}
    assert item["unit"] == {"code": "150299001001", "name": "测试社区1-1", "level": "community"}
    assert response.json["total"] == 2  # 物业 and 隔壁物业, both under the street


def test_for_event_lists_exactly_the_handlers_a_dispatch_accepts(people):
    eid = report(people["worker"])["id"]
    act(people["community"], eid, "register")
    candidates = names(people["admin"], role="handler", for_event=eid)
    assert set(candidates) == {"物业", "环卫所", "区城管执法局"}
    for person in candidates:
        handler = next(p for p in people.values() if p.user.name == person)
        response = act(people["community"], eid, "dispatch", handler_id=handler.user.id)
        assert response.status_code == 200, response.json
    refused = act(people["community"], eid, "dispatch", handler_id=people["sibling_handler"].user.id)
    assert refused.status_code == 422


def test_grid_workers_and_handlers_have_no_directory_and_other_events_are_not_found(people, make_actor):
    assert people["worker"].get("/api/v1/users").status_code == 403
    assert people["street_handler"].get("/api/v1/users", query_string={"for_event": 1}).status_code == 403
    elsewhere = report(make_actor("grid_worker", "g211"), lat=40.005, lon=110.045)["id"]  # street 2
    for event_id in (elsewhere, 999999):
        response = people["community"].get("/api/v1/users", query_string={"for_event": event_id})
        assert response.status_code == 404, response.json
    assert names(people["admin"], role="handler", for_event=elsewhere) == ["区城管执法局", "二街道城管"]


def test_bad_filters_are_422(people):
    for query in ({"role": "boss"}, {"unit": "150299002"}, {"limit": 0}, {"bogus": 1}):
        response = people["community"].get("/api/v1/users", query_string=query)
        assert response.status_code == 422, (query, response.json)
