"""POST /api/v1/hotline/petitions: signed, idempotent, routed, mapped — and nothing stored when refused."""
from __future__ import annotations

import json
import re
import threading
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from grid_service.auth.clients import create_client, deactivate_client, rotate_secret
from grid_service.events.models import Event, EventHistory
from grid_service.hotline.models import HotlinePetition, SeenWebhook
from grid_service.infra import webhooks
from grid_service.infra.db import db
from grid_service.sla.models import Clock
from grid_service.web.kit.security import build_limiter
from tests.helpers import PETITIONS, T0, Hotline, petition_body


def counts() -> dict[str, int]:
    db.session.expire_all()
    return {name: db.session.scalar(sa.select(sa.func.count()).select_from(model))
            for name, model in (("events", Event), ("petitions", HotlinePetition), ("seen", SeenWebhook),
                                ("history", EventHistory), ("clocks", Clock))}


def test_a_signed_petition_becomes_an_event_routed_to_its_grid_with_the_sla_from_received_at(hotline, territory):
    response = hotline.petition()
    assert response.status_code == 201, response.json
    body = response.json
    assert body["petition_number"] == "GD0001" and body["owner"]["code"] == territory["g111"].code
    assert body["level"] == "grid" and body["state"] == "reported" and body["needs_triage"] is False
    assert body["category"] == {"code": "01001", "name": "暴露垃圾"} and body["category_mapped"] is True
    event = db.session.get(Event, body["event_id"])
    assert event.source == "hotline" and event.received_at.isoformat() == "2026-03-02T00:55:00+00:00"
    assert event.resident_name == "张女士" and event.priority == "normal"
    starts = {c.started_at for c in db.session.scalars(sa.select(Clock).where(Clock.event_id == event.id))}
    assert starts == {event.received_at}  # the SLA starts when the hotline received the call
    audit = db.session.scalars(sa.select(EventHistory).where(EventHistory.event_id == event.id)).one()
    assert audit.actor_role == "hotline" and audit.details["client"] == "h12345"
    assert audit.details["petition_number"] == "GD0001"


def test_the_same_petition_again_answers_200_with_the_same_event(hotline):
    first = hotline.petition()
    # Other bytes, the same content.
    again = hotline.post(PETITIONS, json.dumps(petition_body(), indent=2, sort_keys=True).encode())
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["event_id"] == first.json["event_id"]
    assert counts()["events"] == 1 and counts()["petitions"] == 1


def test_the_same_number_with_other_content_is_409_and_changes_nothing(hotline):
    hotline.petition()
    before = counts()
    response = hotline.petition(content="另一件事")
    assert response.status_code == 409 and response.json["code"] == "conflict"
    after = counts()
    assert after["events"] == before["events"] and after["petitions"] == before["petitions"]


def test_a_retry_keeps_its_webhook_id_and_is_answered_idempotently(hotline):
    """Standard Webhooks retries keep the id and sign a new timestamp: that is not a replay."""
    first = hotline.petition(msg_id="msg_retry")
    hotline.at(hotline.now + timedelta(seconds=30))
    again = hotline.petition(msg_id="msg_retry")
    assert (first.status_code, again.status_code) == (201, 200) and again.json["event_id"] == first.json["event_id"]


def test_a_replayed_request_is_401_and_stores_nothing(hotline):
    raw = json.dumps(petition_body()).encode()
    headers = hotline.headers(raw) | {"Content-Type": "application/json"}
    assert hotline.client.post(PETITIONS, data=raw, headers=headers).status_code == 201
    before = counts()
    replay = hotline.client.post(PETITIONS, data=raw, headers=headers)
    assert replay.status_code == 401 and "replay" in replay.json["message"]
    # Even with another body the same signed (id, timestamp) cannot be used twice.
    other = json.dumps(petition_body("GD0002")).encode()
    assert hotline.client.post(PETITIONS, data=other, headers=hotline.headers(other, msg_id=headers["webhook-id"],
                                                                       ts=int(headers["webhook-timestamp"]))).status_code == 401
    assert counts() == before


def _unsigned_variants(hotline):
    raw = json.dumps(petition_body()).encode()
    good = hotline.headers(raw)
    stale = webhooks.unix_seconds(hotline.now) - 301
    return {
        "no headers": (raw, {}),
        "no signature": (raw, {k: v for k, v in good.items() if k != "webhook-signature"}),
        "wrong secret": (raw, hotline.headers(raw, secrets=[webhooks.new_secret()])),
        "tampered body": (raw.replace(b"GD0001", b"GD0002"), good),
        "stale timestamp": (raw, hotline.headers(raw, ts=stale)),
        "future timestamp": (raw, hotline.headers(raw, ts=stale + 602)),
        "other client named": (raw, good | {"webhook-client": "someone-else"}),
        "garbage signature": (raw, good | {"webhook-signature": "v1,AAAA v1a,BBBB"}),
    }


@pytest.mark.parametrize("case", ["no headers", "no signature", "wrong secret", "tampered body", "stale timestamp",
                                  "future timestamp", "other client named", "garbage signature"])
def test_unsigned_or_badly_signed_requests_are_401_json_and_store_nothing(hotline, case):
    raw, headers = _unsigned_variants(hotline)[case]
    before = counts()
    response = hotline.client.post(PETITIONS, data=raw, headers=headers | {"Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.json["code"] == "unauthorized"
    message = response.json["message"]
    assert re.search(r"[\u4e00-\u9fff]", message) and message.endswith("）")  # Chinese, then the English
    assert counts() == before


def test_without_the_client_header_every_hotline_clients_secrets_are_tried(hotline):
    other, other_secret, _ = create_client(db.session, name="other-hotline", kind="hotline", now=T0)
    db.session.commit()
    assert hotline.petition(name=False).status_code == 201
    assert hotline.post(PETITIONS, petition_body("GD0009"), secrets=[other_secret], name=False).status_code == 201
    numbers = dict(db.session.execute(sa.select(HotlinePetition.petition_number, HotlinePetition.client_id)).all())
    assert numbers["GD0009"] == other.id and numbers["GD0001"] != other.id


def test_a_deactivated_client_is_refused(hotline):
    from grid_service.auth.clients import get_client

    deactivate_client(db.session, get_client(db.session, "h12345"), now=T0)
    db.session.commit()
    assert hotline.petition().status_code == 401


def test_after_a_rotation_both_secrets_work_until_the_grace_period_ends(hotline):
    from grid_service.auth.clients import get_client

    old = hotline.secret
    new = rotate_secret(db.session, get_client(db.session, "h12345"), grace=timedelta(hours=1), now=hotline.now)
    db.session.commit()
    assert hotline.post(PETITIONS, petition_body("A1"), secrets=[old]).status_code == 201
    assert hotline.post(PETITIONS, petition_body("A2"), secrets=[new]).status_code == 201
    hotline.at(hotline.now + timedelta(hours=1, seconds=1))
    assert hotline.post(PETITIONS, petition_body("A3"), secrets=[old]).status_code == 401
    assert hotline.post(PETITIONS, petition_body("A4"), secrets=[new]).status_code == 201
    assert hotline.post(PETITIONS, petition_body("A5"), secrets=[old, new]).status_code == 201


@pytest.mark.parametrize(("location", "owner", "triage"), [
    ({"unit_code": "150299001001"}, "150299001001", None),                            # a community, as told
    ({"unit_code": "15029900100101"}, "15029900100101", None),                        # a grid, as told
    ({"address": "某小区"}, "150299002", "no_location"),                               # the client's default unit
    ({"unit_code": "999"}, "150299002", "unknown_unit_code"),
    ({"lat": 40.05, "lon": 110.01}, "150299", "point_outside_grids"),                # in the district, no grid
    ({"lat": 41.0, "lon": 111.0}, "150299002", "point_outside_territory"),           # nowhere: default unit
    ({"lat": 40.005, "lon": 110.045, "unit_code": "150299001001"}, "15029900200101", None),  # the point wins
])
def test_routing_point_then_unit_code_then_the_default_unit(hotline, location, owner, triage):
    response = hotline.petition(location=location)
    assert response.status_code == 201, response.json
    assert response.json["owner"]["code"] == owner
    assert response.json["needs_triage"] is (triage is not None)
    assert (response.json["triage_reason"] or None) == triage


def test_without_a_default_unit_an_unplaceable_petition_goes_to_the_district(hotline, edge_clock):
    _, secret, _ = create_client(db.session, name="no-default", kind="hotline", now=T0)
    db.session.commit()
    response = Hotline(hotline.client, "no-default", secret, edge_clock).petition(location={})
    assert response.status_code == 201
    assert response.json["owner"]["code"] == "150299" and response.json["triage_reason"] == "no_location"


def test_an_unmapped_category_goes_to_the_default_and_is_flagged(hotline):
    response = hotline.petition(category_code="ZZ-99")
    assert response.status_code == 201
    assert response.json["category"]["code"] == "01002" and response.json["category_mapped"] is False
    assert response.json["needs_triage"] is True and response.json["triage_reason"] == "unmapped_category"
    assert response.json["external_category"] == "ZZ-99"


def test_urgency_sets_the_priority(hotline):
    response = hotline.petition(urgency="urgent")
    assert db.session.get(Event, response.json["event_id"]).priority == "urgent"


def test_a_petition_without_received_at_starts_its_sla_when_we_receive_it_and_its_retry_is_the_same(hotline):
    body = {k: v for k, v in petition_body("GD0009").items() if k != "received_at"}
    response = hotline.post(PETITIONS, body)
    assert response.status_code == 201, response.json
    event = db.session.get(Event, response.json["event_id"])
    assert event.received_at == hotline.now
    assert response.json["received_at"] == hotline.now.astimezone(ZoneInfo("Asia/Shanghai")).isoformat()
    starts = {c.started_at for c in db.session.scalars(sa.select(Clock).where(Clock.event_id == event.id))}
    assert starts == {hotline.now}
    retry = hotline.at(hotline.now + timedelta(minutes=3)).post(PETITIONS, body)  # a retry later: the same petition
    assert retry.status_code == 200 and retry.json["event_id"] == event.id
    assert db.session.get(Event, event.id).received_at == event.received_at


@pytest.mark.parametrize("change", [
    {"channel": "fax"}, {"urgency": "very"}, {"content": ""}, {"petition_number": "A/B"},
    {"petition_number": "x" * 65}, {"citizen_phone": "call me"}, {"location": {"lat": 40.0}},
    {"received_at": "2026-03-02T12:00:00+08:00"},  # after the request: in the future
    {"received_at": "yesterday"}, {"received_at": "1874-01-01T00:00:00+08:00"}, {"unexpected": 1},
])
def test_an_invalid_petition_is_422_and_stores_nothing_not_even_the_webhook_id(hotline, change):
    before = counts()
    response = hotline.petition(**change)
    assert response.status_code == 422, response.json
    assert counts() == before


def test_a_body_that_is_not_json_is_400(hotline):
    response = hotline.post(PETITIONS, b"{not json")
    assert response.status_code == 400 and response.json["code"] == "bad_request"
    assert counts()["seen"] == 0


def test_a_huge_body_is_refused_before_verifying(hotline):
    response = hotline.post(PETITIONS, b"{" + b" " * 70_000 + b"}")
    assert response.status_code == 413 and response.json["code"] == "payload_too_large"


def test_concurrent_duplicates_create_one_event(app, hotline):
    barrier = threading.Barrier(4)
    results: list[tuple[int, int]] = []
    raw = json.dumps(petition_body("GD-RACE")).encode()
    headers = [hotline.headers(raw) | {"Content-Type": "application/json"} for _ in range(4)]

    def send(h):
        with app.test_client() as c:
            barrier.wait()
            r = c.post(PETITIONS, data=raw, headers=h)
            results.append((r.status_code, r.json.get("event_id")))

    threads = [threading.Thread(target=send, args=(h,)) for h in headers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(s for s, _ in results) == [200, 200, 200, 201], results
    assert len({e for _, e in results}) == 1
    assert counts()["events"] == 1 and counts()["petitions"] == 1


def test_seen_webhook_ids_are_pruned_after_the_window(hotline):
    hotline.petition("P1")
    hotline.at(hotline.now + timedelta(minutes=11))
    hotline.petition("P2")
    assert counts()["seen"] == 1


# ---------------------------------------------------------------- the client's rate limit


def limit_clients(app, rate: str) -> None:
    """Switch the rate limits on with this per-client limit (they are off under TESTING)."""
    app.config.update(RATE_LIMITS_ENABLED=True, RATE_LIMIT_CLIENT=rate)
    app.extensions["rate_limiter"] = build_limiter(app)


def test_a_hotline_client_over_its_limit_gets_429_and_nothing_is_stored(app, hotline):
    """The request records its webhook-id (its first write: on SQLite it then holds the database's write
    lock) before the client is counted; the count must not wait for its own request and let it through."""
    limit_clients(app, "2/minute")
    assert [hotline.petition(f"GD-L{i}").status_code for i in range(2)] == [201, 201]
    before = counts()
    over = hotline.petition("GD-L2")
    assert over.status_code == 429, over.json
    assert over.json["code"] == "too_many_requests" and over.headers["Retry-After"] == "60"
    assert counts() == before  # not even its webhook-id: the hotline may send the same message later
    assert app.extensions["rate_limiter"].failures == 0


def test_concurrent_hotline_senders_get_exactly_the_clients_limit(app, hotline):
    """Six senders at once against a limit of three: three petitions in, three 429s, none let through
    because the counter was waiting for a write lock that a request (maybe its own) was holding."""
    limit_clients(app, "3/minute")
    bodies = [json.dumps(petition_body(f"GD-C{i}")).encode() for i in range(6)]
    headers = [hotline.headers(body) | {"Content-Type": "application/json"} for body in bodies]
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = []

    def send(i: int) -> None:
        with app.test_client() as c:
            barrier.wait(timeout=30)
            statuses.append(c.post(PETITIONS, data=bodies[i], headers=headers[i]).status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(statuses) == [201, 201, 201, 429, 429, 429]
    assert counts()["petitions"] == 3 and counts()["seen"] == 3
    assert app.extensions["rate_limiter"].failures == 0
