"""Listing, filtering and territory scope: out of scope is 404, never data."""
from __future__ import annotations

import pytest

from tests.helpers import act, report


@pytest.fixture
def people(make_actor, categories):
    return {
        "w111": make_actor("grid_worker", "g111"),
        "w212": make_actor("grid_worker", "g212"),
        "c11": make_actor("supervisor", "c11"),
        "s1": make_actor("supervisor", "s1"),
        "s2": make_actor("supervisor", "s2"),
        "d": make_actor("supervisor", "d"),
        "h1": make_actor("handler", "s1"),
    }


@pytest.fixture
def events(people):
    # g111 is at lon 110.00–110.02, lat 40.00–40.02; g212 at lon 110.06–110.08, lat 40.00–40.02.
    a = report(people["w111"], description="垃圾A")
    b = report(people["w111"], category_code="01002", description="道路不洁B")
    c = report(people["w212"], lat=40.01, lon=110.07, description="垃圾C")
    return {"a": a, "b": b, "c": c}


def ids(response):
    assert response.status_code == 200, response.json
    return sorted(e["id"] for e in response.json["items"])


def test_each_role_sees_only_its_territory(people, events):
    a, b, c = events["a"]["id"], events["b"]["id"], events["c"]["id"]
    assert ids(people["w111"].get("/api/v1/events")) == [a, b]
    assert ids(people["w212"].get("/api/v1/events")) == [c]
    assert ids(people["s1"].get("/api/v1/events")) == [a, b]
    assert ids(people["s2"].get("/api/v1/events")) == [c]
    assert ids(people["d"].get("/api/v1/events")) == [a, b, c]
    assert ids(people["h1"].get("/api/v1/events")) == []


@pytest.mark.parametrize("path", ["", "/history", "/attachments"])
def test_out_of_scope_event_is_404_with_no_data(people, events, path):
    c = events["c"]["id"]
    for who in ("w111", "s1", "c11", "h1"):
        response = people[who].get(f"/api/v1/events/{c}{path}")
        assert response.status_code == 404, who
        assert "垃圾C" not in response.get_data(as_text=True)
    # Acting on it is 404 too, not 403.
    assert act(people["s1"], c, "register").status_code == 404
    # And the same id that does not exist at all answers the same way.
    assert people["s1"].get(f"/api/v1/events/999999{path}").json["code"] == "not_found"


def test_handler_sees_what_is_dispatched_to_them(people, events):
    a = events["a"]["id"]
    act(people["c11"], a, "register")
    act(people["c11"], a, "dispatch", handler_id=people["h1"].user.id)
    assert ids(people["h1"].get("/api/v1/events")) == [a]
    assert people["h1"].get(f"/api/v1/events/{a}").status_code == 200


def test_escalated_event_stays_visible_below_and_is_actionable_only_by_the_owner(people, events):
    a = events["a"]["id"]
    act(people["c11"], a, "escalate")  # grid → community
    act(people["c11"], a, "escalate")  # community → street
    body = people["s1"].get(f"/api/v1/events/{a}").json
    assert body["level"] == "street"
    assert people["c11"].get(f"/api/v1/events/{a}").json["allowed_actions"] == []
    assert "register" in body["allowed_actions"]


def test_filters(people, events):
    d = people["d"]
    a, b, c = events["a"]["id"], events["b"]["id"], events["c"]["id"]
    act(people["c11"], a, "register")
    assert ids(d.get("/api/v1/events?state=registered")) == [a]
    assert ids(d.get("/api/v1/events?state=reported,registered")) == [a, b, c]
    assert ids(d.get("/api/v1/events?category=01002")) == [b]
    assert ids(d.get("/api/v1/events?category=01")) == [a, b, c]
    assert ids(d.get("/api/v1/events?owner=150299002")) == [c]
    assert ids(d.get("/api/v1/events?level=grid&source=grid_worker")) == [a, b, c]
    assert ids(d.get("/api/v1/events?source=hotline")) == []
    assert ids(d.get("/api/v1/events?received_from=2000-01-01T00:00:00%2B08:00&received_to=2001-01-01T00:00:00%2B08:00")) == []
    assert d.get("/api/v1/events?state=nonsense").status_code == 422
    assert ids(d.get("/api/v1/events?owner=nope")) == []
    assert ids(d.get("/api/v1/events?category=nope")) == []
    assert d.get("/api/v1/events?limit=201").status_code == 422
    assert d.get("/api/v1/events?received_from=2026-02-01T00:00:00Z&received_to=2026-01-01T00:00:00Z").status_code == 422


def test_pagination_is_newest_first_and_counts_all(people, events):
    d = people["d"]
    first = d.get("/api/v1/events?limit=2").json
    second = d.get("/api/v1/events?limit=2&offset=2").json
    assert first["total"] == second["total"] == 3
    assert len(first["items"]) == 2 and len(second["items"]) == 1
    all_ids = [e["id"] for e in first["items"] + second["items"]]
    assert all_ids == sorted(all_ids, reverse=True)


def test_geojson_export_has_points_and_respects_scope(people, events):
    response = people["s2"].get("/api/v1/events.geojson")
    assert response.status_code == 200
    fc = response.json
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 1
    feature = fc["features"][0]
    assert feature["geometry"] == {"type": "Point", "coordinates": [110.07, 40.01]}
    assert feature["properties"]["grid_code"] == "15029900200102"
    assert people["d"].get("/api/v1/events.geojson?state=closed").json["features"] == []


def test_me_and_categories(people):
    me = people["c11"].get("/api/v1/me").json
    assert me["role"] == "supervisor" and me["unit_code"] == "150299001001"
    cats = people["c11"].get("/api/v1/categories").json
    assert cats[0]["name"] == "市容环境" and [m["name"] for m in cats[0]["minors"]] == ["暴露垃圾", "道路不洁"]
