"""POST /api/v1/events: validation, routing to the grid, scope, triage fallbacks."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from grid_service.events.models import Event, EventHistory
from grid_service.infra.db import db


def body(**overrides):
    return {"category_code": "01001", "description": "路边暴露垃圾", "lat": 40.005, "lon": 110.005, "address": "测试路1号"} | overrides


def count(model) -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_report_is_routed_to_its_grid_and_owned_by_it(worker):
    response = worker.post("/api/v1/events", json=body(resident_name="张三", resident_phone="13812341234"))
    assert response.status_code == 201
    event = response.json
    assert event["state"] == "reported" and event["level"] == "grid"
    assert event["owner"]["code"] == event["grid"]["code"] == "15029900100101"
    assert event["number"].endswith(f"{event['id']:06d}") and len(event["number"]) >= 14
    assert event["resident_phone"] == "138****1234"
    assert event["needs_triage"] is False
    assert event["received_at"].endswith("+08:00")
    history = worker.get(f"/api/v1/events/{event['id']}/history").json
    assert [(h["action"], h["to_state"], h["to_level"]) for h in history] == [("report", "reported", "grid")]


def test_supervisor_point_in_no_grid_goes_to_the_lowest_unit_holding_it_and_is_flagged(make_actor, categories):
    # The district's boundary reaches lat 40.06; grids stop at 40.04.
    supervisor = make_actor("supervisor", "d")
    response = supervisor.post("/api/v1/events", json=body(lat=40.05, lon=110.01))
    assert response.status_code == 201
    event = response.json
    assert event["owner"]["code"] == "150299" and event["level"] == "district" and event["grid"] is None
    assert event["needs_triage"] is True and event["triage_reason"] == "point_outside_grids"
    assert event["source"] == "supervisor"


def test_point_outside_the_whole_territory_falls_to_the_district(make_actor, categories):
    supervisor = make_actor("supervisor", "d")
    event = supervisor.post("/api/v1/events", json=body(lat=39.0, lon=100.0)).json
    assert event["owner"]["code"] == "150299" and event["triage_reason"] == "point_outside_territory"


def test_grid_code_without_coordinates(worker):
    response = worker.post("/api/v1/events", json={"category_code": "01001", "description": "井盖缺失", "grid_code": "15029900100101"})
    assert response.status_code == 201 and response.json["grid"]["code"] == "15029900100101"
    assert response.json["lat"] is None


def test_grid_worker_cannot_report_outside_their_grid(worker):
    before = count(Event)
    response = worker.post("/api/v1/events", json=body(lat=40.005, lon=110.025))  # grid g112
    assert response.status_code == 422 and "location" in response.json["errors"]
    response = worker.post("/api/v1/events", json={"category_code": "01001", "description": "x", "grid_code": "15029900100102"})
    assert response.status_code == 422
    assert count(Event) == before


def test_point_disagreeing_with_grid_code_is_refused(worker):
    response = worker.post("/api/v1/events", json=body(grid_code="15029900100101", lat=40.005, lon=110.025))
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (body(category_code="99999"), "category_code"),
        (body(category_code="01"), "category_code"),
        (body(lat=91), "lat"),
        (body(lon="east"), "lon"),
        ({k: v for k, v in body().items() if k != "description"}, "description"),
        ({k: v for k, v in body().items() if k != "lon"}, "location"),
        (body(resident_phone="call me"), "resident_phone"),
        (body(received_at="yesterday"), "received_at"),
        (body(received_at="2099-01-01T00:00:00+08:00"), "received_at"),
        (body(state="closed"), "state"),
        (body(owner_id=1), "owner_id"),
        (body(description="\x00"), "description"),
        (body(priority="critical"), "priority"),
    ],
)
def test_bad_reports_get_422_naming_the_field_and_store_nothing(worker, payload, field):
    before = count(Event), count(EventHistory)
    response = worker.post("/api/v1/events", json=payload)
    assert response.status_code == 422, response.json
    assert response.json["code"] in ("validation_error", "invalid")
    flat = str(response.json["errors"])
    assert field in flat
    assert (count(Event), count(EventHistory)) == before


def test_non_json_bodies_are_client_errors(worker):
    assert worker.post("/api/v1/events", data="{not json", content_type="application/json").status_code == 400
    response = worker.post("/api/v1/events", data="category_code=01001", content_type="application/x-www-form-urlencoded")
    assert 400 <= response.status_code < 500
    assert worker.post("/api/v1/events", json=[1, 2]).status_code == 422


def test_oversize_body_is_413(worker, app):
    app.config["MAX_CONTENT_LENGTH"] = 1024
    response = worker.post("/api/v1/events", json=body(description="长" * 5000))
    assert response.status_code == 413 and response.json["code"] == "payload_too_large"


def test_handlers_do_not_report(make_actor, categories):
    handler = make_actor("handler", "s1")
    assert handler.post("/api/v1/events", json=body()).status_code == 403


def test_no_token_or_a_bad_token_is_401(client, categories, territory):
    assert client.post("/api/v1/events", json=body()).status_code == 401
    response = client.post("/api/v1/events", json=body(), headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and response.json["code"] == "unauthorized"


def test_received_at_is_kept_when_given(worker, edge_clock):
    edge_clock.set("2026-03-02T09:00:00+08:00")
    event = worker.post("/api/v1/events", json=body(received_at="2026-03-02T08:15:00+08:00")).json
    assert event["received_at"] == "2026-03-02T08:15:00+08:00"


def test_a_report_received_long_ago_is_refused_and_the_window_is_configurable(worker, edge_clock, app):
    app.config["RECEIVED_AT_MAX_AGE_DAYS"] = 7  # the default (the test configuration opens it wide)
    edge_clock.set("2026-03-09T09:00:00+08:00")
    before = count(Event)
    response = worker.post("/api/v1/events", json=body(received_at="1971-01-01T00:00:00"))
    assert response.status_code == 422 and "received_at" in response.json["errors"]
    assert "7 天" in response.json["message"]
    assert worker.post("/api/v1/events", json=body(received_at="2026-03-02T08:59:00+08:00")).status_code == 422
    assert worker.post("/api/v1/events", json=body(received_at="2026-03-02T09:01:00+08:00")).status_code == 201
    app.config["RECEIVED_AT_MAX_AGE_DAYS"] = 30
    assert worker.post("/api/v1/events", json=body(received_at="2026-02-10T09:00:00+08:00")).status_code == 201
    assert count(Event) == before + 2


def test_a_grid_worker_without_a_location_reports_from_their_own_grid(worker):
    response = worker.post("/api/v1/events", json={"category_code": "01001", "description": "楼道堆物"})
    assert response.status_code == 201, response.json
    assert (response.json["grid"]["code"], response.json["owner"]["code"]) == ("15029900100101", "15029900100101")


def test_anyone_else_must_say_where(make_actor, categories):
    supervisor = make_actor("supervisor", "c11")
    before = count(Event)
    response = supervisor.post("/api/v1/events", json={"category_code": "01001", "description": "x"})
    assert response.status_code == 422 and "location" in response.json["errors"]
    assert count(Event) == before


def test_lookup_by_number(worker):
    event = worker.post("/api/v1/events", json=body()).json
    page = worker.get(f"/api/v1/events?number={event['number']}").json
    assert [e["id"] for e in page["items"]] == [event["id"]]
    wrong_day = "19990101" + event["number"][8:]
    assert worker.get(f"/api/v1/events?number={wrong_day}").json["total"] == 0


def test_category_changes_reach_intake_through_the_catalog_version(worker, categories):
    from grid_service.events.catalog import bump_catalog_version
    from grid_service.events.models import Category
    from tests.helpers import T0

    assert worker.post("/api/v1/events", json=body()).status_code == 201  # warms the cache
    # A new 小类 is found even before anyone bumps the version (a miss falls back to the database).
    db.session.add(Category(code="01003", name="绿地脏乱", level="minor", parent_id=categories["01"].id))
    db.session.commit()
    assert worker.post("/api/v1/events", json=body(category_code="01003")).json["category"]["name"] == "绿地脏乱"
    # Retiring one takes effect once the change says so.
    db.session.get(Category, categories["01001"].id).is_active = False
    bump_catalog_version(db.session, T0)
    db.session.commit()
    response = worker.post("/api/v1/events", json=body())
    assert response.status_code == 422 and "category_code" in response.json["errors"]


def test_error_messages_are_chinese_and_name_what_is_wrong(client, worker):
    """Grid workers read `message` on their phones: Chinese, keeping the code or identifier concerned."""
    anonymous = client.post("/api/v1/events", json=body())
    assert anonymous.status_code == 401 and anonymous.json["code"] == "unauthorized"
    assert anonymous.json["message"] == "缺少访问令牌（Authorization: Bearer …）"

    unknown = worker.post("/api/v1/events", json=body(category_code="99999"))
    assert unknown.status_code == 422 and unknown.json["code"] == "invalid"
    assert unknown.json["message"] == "未知的事件类别 99999"
    assert unknown.json["errors"] == {"category_code": ["没有使用此编码的有效类别"]}

    event_id = worker.post("/api/v1/events", json=body()).json["id"]
    too_early = worker.post(f"/api/v1/events/{event_id}/actions", json={"action": "verify"})
    assert too_early.status_code == 409 and too_early.json["code"] == "invalid_transition"
    assert too_early.json["message"] == "事件当前为“待立案”，不能执行“核查”"
    assert too_early.json["errors"] == {"action": ["“待立案”状态下不允许此操作"]}  # no English names where people read

    # marshmallow's own field messages come out in Chinese too.
    unparsed = worker.post("/api/v1/events", json={"description": "井盖缺失", "lat": "north", "lon": 110.0})
    assert unparsed.status_code == 422 and unparsed.json["code"] == "validation_error"
    assert unparsed.json["message"] == "请求参数未通过校验"
    assert unparsed.json["errors"] == {"json": {"category_code": ["缺少必填字段"], "lat": ["应为数字"]}}
