"""GET /api/v1/hotline/petitions/{number} and the citizen's verdict (回访 → 重办)."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from grid_service.auth.clients import create_client
from grid_service.events.models import Event, EventHistory
from grid_service.hotline.models import HotlineFeedback
from grid_service.infra.db import db
from grid_service.outbox.models import OutboxMessage
from tests.helpers import PETITIONS, T0, Hotline, act


@pytest.fixture
def crew(make_actor, hotline):
    return {"community": make_actor("supervisor", "c11"), "handler": make_actor("handler", "s1")}


def close(event_id: int, crew) -> None:
    """Take an event all the way to closed, as the people at the grid would."""
    for actor, action, extra in [
        (crew["community"], "register", {}), (crew["community"], "dispatch", {"handler_id": crew["handler"].user.id}),
        (crew["handler"], "accept", {}), (crew["handler"], "resolve", {"note": "已清运"}),
        (crew["community"], "verify", {}),
    ]:
        response = act(actor, event_id, action, **extra)
        assert response.status_code == 200, response.json


def feedback(hotline, number: str, verdict: str, note: str = "", **kw):
    body = {"petition_number": number, "verdict": verdict, "note": note}
    return hotline.post(f"{PETITIONS}/{number}/feedback", body, **kw)


def test_status_shows_state_owner_level_due_times_and_history(hotline, crew, territory):
    event_id = hotline.petition().json["event_id"]
    act(crew["community"], event_id, "register")
    response = hotline.get(f"{PETITIONS}/GD0001")
    assert response.status_code == 200, response.json
    body = response.json
    assert body["petition_number"] == "GD0001" and body["event_id"] == event_id
    assert body["state"] == "registered" and body["level"] == "grid"
    assert body["owner"] == {"code": territory["g111"].code, "name": territory["g111"].name, "level": "grid"}
    assert body["clocks"]["resolve"]["state"] == "running" and body["clocks"]["resolve"]["due_at"].endswith("+08:00")
    assert body["clocks"]["accept"]["state"] == "met"
    assert [h["action"] for h in body["history"]] == ["report", "register"]
    assert body["history"][0]["actor_role"] == "hotline" and body["history"][1]["actor_role"] == "supervisor"
    assert body["feedback"] == []


def test_status_is_only_for_the_clients_own_petitions(hotline, edge_clock):
    hotline.petition()
    _, secret, _ = create_client(db.session, name="other", kind="hotline", now=T0)
    db.session.commit()
    other = Hotline(hotline.client, "other", secret, edge_clock)
    assert other.get(f"{PETITIONS}/GD0001").status_code == 404
    assert hotline.get(f"{PETITIONS}/NOPE").status_code == 404


def test_a_get_signs_its_path_not_an_empty_body(hotline):
    hotline.petition()
    path = f"{PETITIONS}/GD0001"
    empty_body_signature = hotline.headers(b"")
    assert hotline.client.get(path, headers=empty_body_signature).status_code == 401
    # A signature made for one petition's path does not open another's.
    signed_for_other = hotline.headers(f"GET {PETITIONS}/GD0002".encode())
    assert hotline.client.get(path, headers=signed_for_other).status_code == 401
    headers = hotline.headers(f"GET {path}".encode())
    assert hotline.client.get(path, headers=headers).status_code == 200
    assert hotline.client.get(path, headers=headers).status_code == 401  # the same signed GET twice: replay


def test_not_satisfied_on_a_closed_event_reopens_it_and_the_audit_says_why(hotline, crew):
    event_id = hotline.petition().json["event_id"]
    close(event_id, crew)
    response = feedback(hotline, "GD0001", "不满意", "垃圾又堆起来了")
    assert response.status_code == 201, response.json
    assert response.json["reopened"] is True and response.json["event_state"] == "dispatched"
    db.session.expire_all()
    event = db.session.get(Event, event_id)
    assert event.state == "dispatched" and event.reopen_count == 1 and event.closed_at is None
    last = db.session.scalars(sa.select(EventHistory).where(EventHistory.event_id == event_id)
                              .order_by(EventHistory.id.desc())).first()
    assert (last.action, last.from_state, last.to_state, last.actor_role) == ("reopen", "closed", "dispatched", "hotline")
    assert "市民回访不满意" in last.note and "垃圾又堆起来了" in last.note
    assert last.details["verdict"] == "不满意" and last.details["citizen_satisfied"] is False
    status = hotline.get(f"{PETITIONS}/GD0001").json
    assert status["reopen_count"] == 1 and status["feedback"][0]["verdict"] == "不满意"
    assert status["history"][-1]["action"] == "reopen"
    assert status["clocks"]["resolve"]["state"] == "running"  # 重办 restarts the resolve clock


@pytest.mark.parametrize("verdict", ["满意", "基本满意"])
def test_a_satisfied_verdict_is_stored_and_changes_nothing_else(hotline, crew, verdict):
    event_id = hotline.petition().json["event_id"]
    close(event_id, crew)
    response = feedback(hotline, "GD0001", verdict)
    assert response.status_code == 201 and response.json["reopened"] is False and response.json["event_state"] == "closed"
    db.session.expire_all()
    assert db.session.get(Event, event_id).state == "closed"


def test_not_satisfied_on_an_open_event_is_stored_without_reopening(hotline, crew):
    hotline.petition()
    response = feedback(hotline, "GD0001", "不满意", "还没处理")
    assert response.status_code == 201 and response.json["reopened"] is False and response.json["event_state"] == "reported"


def test_a_resent_verdict_is_recorded_and_acted_on_once(hotline, crew):
    event_id = hotline.petition().json["event_id"]
    close(event_id, crew)
    first = feedback(hotline, "GD0001", "不满意", "没解决", msg_id="msg_fb_1")
    hotline.at(hotline.now + timedelta(seconds=20))
    again = feedback(hotline, "GD0001", "不满意", "没解决", msg_id="msg_fb_1")  # the vendor's retry
    assert (first.status_code, again.status_code) == (201, 200) and again.json["id"] == first.json["id"]
    db.session.expire_all()
    assert db.session.get(Event, event_id).reopen_count == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(HotlineFeedback)) == 1


@pytest.mark.parametrize("body", [
    {"petition_number": "GD0002", "verdict": "满意"}, {"petition_number": "GD0001", "verdict": "还行"},
    {"petition_number": "GD0001"},
])
def test_a_bad_verdict_is_422_and_stores_nothing(hotline, crew, body):
    hotline.petition()
    response = hotline.post(f"{PETITIONS}/GD0001/feedback", body)
    assert response.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count()).select_from(HotlineFeedback)) == 0


def test_a_verdict_on_an_unknown_petition_is_404(hotline):
    assert feedback(hotline, "NOPE", "满意").status_code == 404


def test_reopening_through_a_verdict_queues_the_reopened_message(hotline, crew):
    from grid_service.auth.clients import get_client

    get_client(db.session, "h12345").callback_url = "http://127.0.0.1:9/hook"
    db.session.commit()
    event_id = hotline.petition().json["event_id"]
    close(event_id, crew)
    feedback(hotline, "GD0001", "不满意", "没解决")
    kinds = db.session.scalars(sa.select(OutboxMessage.kind).where(OutboxMessage.event_id == event_id)
                               .order_by(OutboxMessage.seq)).all()
    assert kinds == ["registered", "dispatched", "accepted", "resolved", "closed", "reopened"]
    body = json.loads(db.session.scalars(sa.select(OutboxMessage.body).order_by(OutboxMessage.seq.desc())).first())
    assert body["type"] == "petition.reopened" and body["data"]["seq"] == 6 and "没解决" in body["data"]["note"]
