"""Territory scope, every role × own subtree / sibling subtree / parent × every way to reach an event.

Out of scope is 404 with the ordinary not-found payload — never 403, never a byte of the event.
Plus mass assignment (a client cannot set state, level, owner or grid) and phone masking.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

from grid_service.events.models import Attachment, Event
from grid_service.infra.db import db
from tests.helpers import act, photo, report

# The unit each role sits in, a sibling of it, and its parent.
PLACES = {
    "grid_worker": ("g111", "g112", "c11"),
    "supervisor": ("c11", "c12", "s1"),
    "admin": ("s1", "s2", "d"),
    "handler": ("s1", "s2", "d"),
}
# A point in each grid used (south-west corner + 0.005°), see the `territory` fixture.
POINTS = {"g111": (40.005, 110.005), "g112": (40.005, 110.025), "g121": (40.025, 110.005), "g211": (40.005, 110.045)}
# Where the sibling's events are reported: a grid inside the sibling unit.
SIBLING_GRID = {"g112": "g112", "c12": "g121", "s2": "g211"}
LEVELS_UP = {"c11": 1, "s1": 2, "d": 3}  # escalations from a grid to reach the parent
PHONE = "13812345678"
# What each role may do to an event of its own, in the state the world puts it in.
OWN_ACTION = {"grid_worker": "verify", "supervisor": "urge", "admin": "urge", "handler": "accept"}


@dataclass
class World:
    me: object
    events: dict[str, dict] = field(default_factory=dict)  # position → event JSON (as the district saw it)
    photos: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # position → (attachment id, bytes)


def _png(tag: str) -> bytes:
    return photo("PNG", tag)


@pytest.fixture
def world_for(make_actor, categories, territory):
    """Build, for a role, one event in its own subtree, one in a sibling's, one owned by its parent."""
    def build(role: str) -> World:
        own_key, sibling_key, parent_key = PLACES[role]
        boss = make_actor("supervisor", "d", name="district-boss")
        world = World(me=make_actor(role, own_key, name=f"me-{role}"))
        district_handler = make_actor("handler", "d", name="district-handler")
        sibling_handler = make_actor("handler", sibling_key, name="sibling-handler") if role == "handler" else None
        reporters: dict[str, object] = {}

        def reporter(grid: str):
            if grid not in reporters:
                reporters[grid] = make_actor("grid_worker", grid, name=f"worker-{grid}")
            return reporters[grid]

        sibling_grid = SIBLING_GRID[sibling_key]
        for position, grid, ups in (("own", "g111", 0), ("sibling", sibling_grid, 0), ("parent", sibling_grid, LEVELS_UP[parent_key])):
            lat, lon = POINTS[grid]
            event = report(reporter(grid), lat=lat, lon=lon, description=f"秘密描述-{position}-{role}",
                           address=f"秘密地址-{position}", resident_name=f"秘密居民{position}", resident_phone=PHONE)
            for _ in range(ups):
                assert act(boss, event["id"], "escalate", note="上报").status_code == 200
            if role in ("grid_worker", "handler"):
                assert act(boss, event["id"], "register").status_code == 200
                handler = {"own": world.me if role == "handler" else district_handler,
                           "sibling": sibling_handler or district_handler, "parent": district_handler}[position]
                response = act(boss, event["id"], "dispatch", handler_id=handler.user.id)
                assert response.status_code == 200, response.json
                if role == "grid_worker":
                    assert act(handler, event["id"], "accept").status_code == 200
                    assert act(handler, event["id"], "resolve", note="已清运").status_code == 200
            photo = _png(f"{position}-{role}")
            uploaded = boss.post(f"/api/v1/events/{event['id']}/attachments", data={"kind": "before", "file": (io.BytesIO(photo), "p.png")},
                                 content_type="multipart/form-data")
            assert uploaded.status_code == 201, uploaded.json
            world.events[position] = boss.get(f"/api/v1/events/{event['id']}").json
            world.photos[position] = (uploaded.json["id"], photo)
        assert world.events["parent"]["owner"]["code"] == territory[parent_key].code
        return world

    return build


def secrets_of(event: dict) -> list[str]:
    """Strings that only this event's data contains."""
    return [event["description"], event["address"], event["resident_name"], event["number"]]


def assert_hidden(response, event: dict, photo: bytes | None = None) -> None:
    assert response.status_code == 404, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.json["code"] == "not_found"
    text = response.get_data(as_text=True)
    for secret in secrets_of(event):
        assert secret not in text
    if photo is not None:
        assert photo not in response.data


def read_ops(me, event: dict, attachment_id: int) -> dict[str, object]:
    eid = event["id"]
    return {
        "read": lambda: me.get(f"/api/v1/events/{eid}"),
        "history": lambda: me.get(f"/api/v1/events/{eid}/history"),
        "attachments": lambda: me.get(f"/api/v1/events/{eid}/attachments"),
        "download": lambda: me.get(f"/api/v1/events/{eid}/attachments/{attachment_id}"),
        "sla": lambda: me.get(f"/api/v1/events/{eid}/sla"),
    }


ROLES = list(PLACES)
SINGLE_OPS = ["read", "history", "attachments", "download", "sla"]


@pytest.mark.parametrize("op", SINGLE_OPS)
@pytest.mark.parametrize("role", ROLES)
def test_reading_one_event(world_for, role, op):
    world = world_for(role)
    own = world.events["own"]
    response = read_ops(world.me, own, world.photos["own"][0])[op]()
    assert response.status_code == 200, (role, op, response.json)
    if op == "read":
        assert response.json["description"] == own["description"]
    if op == "download":
        assert response.data == world.photos["own"][1]
    for position in ("sibling", "parent"):
        event = world.events[position]
        attachment_id, photo = world.photos[position]
        assert_hidden(read_ops(world.me, event, attachment_id)[op](), event, photo)


@pytest.mark.parametrize("role", ROLES)
def test_a_foreign_photo_through_an_own_event_is_404(world_for, role):
    world = world_for(role)
    own_id = world.events["own"]["id"]
    for position in ("sibling", "parent"):
        attachment_id, photo = world.photos[position]
        response = world.me.get(f"/api/v1/events/{own_id}/attachments/{attachment_id}")
        assert response.status_code == 404 and photo not in response.data


@pytest.mark.parametrize("role", ROLES)
def test_listing_and_map(world_for, role):
    world = world_for(role)
    own, others = world.events["own"], [world.events["sibling"], world.events["parent"]]
    listing = world.me.get("/api/v1/events?limit=200")
    assert listing.status_code == 200
    assert [e["id"] for e in listing.json["items"]] == [own["id"]] and listing.json["total"] == 1
    geo = world.me.get("/api/v1/events.geojson")
    assert [f["id"] for f in geo.json["features"]] == [own["id"]]
    # Filters aimed at the other territory find nothing either.
    sibling_owner = others[0]["owner"]["code"]
    for query in (f"owner={sibling_owner}", f"number={others[0]['number']}", f"number={others[1]['number']}",
                  "state=reported,registered,dispatched,resolved", "level=grid,community,street,district"):
        for url in (f"/api/v1/events?{query}", f"/api/v1/events.geojson?{query}"):
            body = world.me.get(url).get_data(as_text=True)
            for event in others:
                for secret in secrets_of(event):
                    assert secret not in body, (role, url)


@pytest.mark.parametrize("role", ROLES)
def test_acting(world_for, role):
    world = world_for(role)
    action = OWN_ACTION[role]
    for position in ("sibling", "parent"):
        event = world.events[position]
        before = db.session.get(Event, event["id"])
        version = before.version
        assert_hidden(act(world.me, event["id"], action, note="越权尝试"), event)
        db.session.expire_all()
        assert db.session.get(Event, event["id"]).version == version
        # Uploading a photo to it is refused the same way, and nothing is stored.
        upload = world.me.post(f"/api/v1/events/{event['id']}/attachments",
                               data={"kind": "after", "file": (io.BytesIO(_png("intruder")), "x.png")},
                               content_type="multipart/form-data")
        assert_hidden(upload, event)
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Attachment).where(Attachment.event_id == event["id"])) == 1
    response = act(world.me, world.events["own"]["id"], action, note="正常处理")
    assert response.status_code == 200, (role, response.json)


def test_a_handler_does_not_see_undispatched_events_of_its_own_street(make_actor, categories):
    handler = make_actor("handler", "s1")
    worker = make_actor("grid_worker", "g111")
    event = report(worker, description="未派遣事件", address="某小区北门", resident_name="李四")
    assert_hidden(handler.get(f"/api/v1/events/{event['id']}"), event)
    assert handler.get("/api/v1/events").json["total"] == 0


def test_an_admin_at_the_district_sees_the_whole_district(world_for, make_actor):
    world = world_for("admin")
    chief = make_actor("admin", "d", name="chief")
    ids = sorted(e["id"] for e in chief.get("/api/v1/events?limit=200").json["items"])
    assert ids == sorted(e["id"] for e in world.events.values())


# ---------------------------------------------------------------- mass assignment


FORBIDDEN_FIELDS = {
    "state": "closed", "level": "district", "owner": "150299", "owner_id": 1, "owner_code": "150299", "grid": "15029900100101",
    "grid_id": 1, "located_unit_id": 1, "handler_id": 1, "source": "hotline", "needs_triage": True, "version": 9,
    "is_supervised": True, "id": 12345, "reporter_id": 1,
}


@pytest.mark.parametrize("name", sorted(FORBIDDEN_FIELDS))
def test_a_report_cannot_set_workflow_fields(make_actor, categories, name):
    worker = make_actor("grid_worker", "g111")
    body = {"category_code": "01001", "description": "x", "lat": 40.005, "lon": 110.005, name: FORBIDDEN_FIELDS[name]}
    response = worker.post("/api/v1/events", json=body)
    assert response.status_code == 422, response.json
    assert name in json.dumps(response.json["errors"])
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == 0


@pytest.mark.parametrize("name", ["state", "level", "owner", "owner_id", "grid", "grid_id", "located_unit_id"])
def test_an_action_cannot_set_workflow_fields(make_actor, categories, name):
    worker = make_actor("grid_worker", "g111")
    supervisor = make_actor("supervisor", "c11")
    event = report(worker)
    response = act(supervisor, event["id"], "register", **{name: FORBIDDEN_FIELDS.get(name, 1)})
    assert response.status_code == 422, response.json
    db.session.expire_all()
    stored = db.session.get(Event, event["id"])
    assert (stored.state, stored.level, stored.version) == ("reported", "grid", 1)


# ---------------------------------------------------------------- phone numbers


@pytest.mark.parametrize("role", ROLES)
def test_no_role_sees_a_full_phone_number(world_for, role):
    world = world_for(role)
    own = world.events["own"]
    me = world.me
    bodies = [me.get(url).get_data(as_text=True) for url in (
        "/api/v1/events", "/api/v1/events.geojson", f"/api/v1/events/{own['id']}", f"/api/v1/events/{own['id']}/history")]
    assert all(PHONE not in body for body in bodies)
    assert me.get(f"/api/v1/events/{own['id']}").json["resident_phone"] == "138****5678"
