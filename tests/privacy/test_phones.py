"""Citizens' phone numbers: sealed at rest, found by blind index, masked everywhere, revealed on the record,
never logged."""
from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from grid_service.demo.seed import seed_demo
from grid_service.events import intake as events_intake
from grid_service.events.models import Event, EventHistory
from grid_service.infra.db import db
from grid_service.privacy import phones
from grid_service.privacy.pii import PiiAccess
from tests.helpers import PETITIONS, T0, act, base_rows, new_request, petition_body, report

PHONE = "13812345678"
MASKED = "138****5678"
# The same number as people write it.
SPELLINGS = ("13812345678", "138-1234-5678", "+86 138 1234 5678", "8613812345678", "（138）1234 5678")
SECRET = "test-secret"  # TestConfig.SECRET_KEY


# ---------------------------------------------------------------- pure: normalise, mask, index, seal


@pytest.mark.parametrize("raw", SPELLINGS[:4] + ("138.1234.5678", "００８６ １３８１２３４５６７８"))
def test_every_spelling_of_a_mobile_number_has_one_canonical_form(raw):
    assert phones.normalize(raw) == PHONE


@pytest.mark.parametrize(("raw", "digits", "masked"), [
    ("0472-1234567", "04721234567", "047****4567"), ("(0472) 123 4567", "04721234567", "047****4567"),
    ("+86 472 1234567", "04721234567", "047****4567"), ("+1 555 123 4567", "0015551234567", "001****4567"),
    ("87654321", "87654321", "****4321"), ("12345", "12345", "****45"), ("110", "110", "****"),
])
def test_landlines_foreign_and_short_numbers_are_masked_sensibly(raw, digits, masked):
    assert phones.normalize(raw) == digits
    assert phones.mask(digits) == masked


@pytest.mark.parametrize("raw", ["call me", "12", "1" * 21, "138-1234-567x", "+", "١٣٨١٢٣٤٥٦٧٨"])
def test_what_is_no_phone_number_is_refused(raw):
    with pytest.raises(ValueError):
        phones.normalize(raw)


def test_the_blind_index_is_the_same_for_one_number_and_differs_by_number_and_key():
    indexes = {phones.blind_index(SECRET, phones.normalize(raw)) for raw in SPELLINGS[:4]}
    assert len(indexes) == 1 and len(indexes.pop()) == 64
    assert phones.blind_index(SECRET, PHONE) != phones.blind_index(SECRET, "13812345679")
    assert phones.blind_index(SECRET, PHONE) != phones.blind_index("another-secret", PHONE)
    assert phones.blind_index(SECRET, PHONE) != phones.seal(SECRET, PHONE)


def test_sealed_numbers_differ_each_time_and_open_under_a_fallback_key_only_if_configured():
    first, second = phones.seal("old", PHONE), phones.seal("old", PHONE)
    assert first != second and PHONE not in first
    assert phones.unseal(["new", "old"], first) == PHONE
    with pytest.raises(ValueError):
        phones.unseal(["new"], first)


def test_the_columns_of_no_number_are_empty():
    assert phones.columns(None, SECRET) == phones.columns("  ", SECRET) == dict.fromkeys(phones.COLUMNS)


@pytest.mark.parametrize(("text", "masked"), [
    ("callback 13812345678 please", "callback 138****5678 please"),
    ("+86 138-1234-5678.", "138****5678."),
    ("Report(resident_phone='13812345678')", "Report(resident_phone='138****5678')"),
    ("office 0472-1234567 or (0472)1234567 or 04721234567", "office **** or **** or ****"),
    ("event 20260302000042 unit 150204001001 at 2026-03-02 08:55:00 id 1772400000", None),
])
def test_phone_numbers_in_text_are_masked_and_other_numbers_left_alone(text, masked):
    assert phones.mask_text(text) == (masked or text)


# ---------------------------------------------------------------- helpers


def raw_dump() -> str:
    """Every row of every table, as text: what someone reading the database would see."""
    db.session.expire_all()
    with db.engine.connect() as conn:
        return "\n".join(str(tuple(row)) for table in db.metadata.sorted_tables for row in conn.execute(sa.select(table)))


def reveal(actor, event_id, reason="回访核实处置结果"):
    return actor.post(f"/api/v1/events/{event_id}/resident-phone/reveal", json={"reason": reason})


def search(actor, phone=PHONE, **body):
    return actor.post("/api/v1/events/search/by-phone", json={"phone": phone} | body)


def access_rows() -> list[PiiAccess]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(PiiAccess).order_by(PiiAccess.id)))


@pytest.fixture
def callers(hotline, make_actor, territory):
    """One caller (PHONE) reported three times — by a grid worker in g111, through the hotline (g111),
    and by a worker in street s2 — and someone else once in g111."""
    worker = make_actor("grid_worker", "g111")
    far = make_actor("grid_worker", "g211")
    ids = {
        "worker": report(worker, resident_phone="138-1234-5678")["id"],
        "hotline": hotline.petition(citizen_phone="+86 138 1234 5678").json["event_id"],
        "far": report(far, lat=40.005, lon=110.045, resident_phone=PHONE)["id"],
        "other": report(worker, resident_phone="13987654321", description="另一位居民")["id"],
    }
    return ids


# ---------------------------------------------------------------- at rest


def test_the_database_holds_no_plaintext_number_from_any_channel(callers, client, open311):
    new_request(client, open311, phone="138 1234 5678", first_name="三", last_name="张")
    assert "resident_phone" not in {c["name"] for c in sa.inspect(db.engine).get_columns("events")}
    dump = raw_dump()
    for spelling in (*SPELLINGS[:4], "12345678", "13987654321", "87654321"):
        assert spelling not in dump
    stored = db.session.execute(sa.select(Event.resident_phone_enc, Event.resident_phone_index, Event.resident_phone_masked)
                                .where(Event.resident_phone_masked == MASKED)).all()
    assert len(stored) == 4  # worker, hotline, far, open311
    assert {phones.unseal(SECRET, enc) for enc, _, _ in stored} == {PHONE}
    assert {index for _, index, _ in stored} == {phones.blind_index(SECRET, PHONE)}


def test_the_hotline_petition_digest_does_not_give_the_number_away(callers):
    from grid_service.hotline.models import HotlinePetition
    from grid_service.hotline.service import PetitionIn

    stored = db.session.scalar(sa.select(HotlinePetition.content_sha256))
    body = petition_body(citizen_phone=PHONE)
    location = body.pop("location")
    plain = PetitionIn(**body | {"received_at": datetime.fromisoformat(body["received_at"]).astimezone(UTC)},
                       lat=location["lat"], lon=location["lon"])
    assert stored != plain.digest()  # trying every number against a plain hash would find it
    assert stored == plain.digest(SECRET)


def test_a_resent_petition_with_the_number_spelt_otherwise_is_the_same_petition(hotline):
    first = hotline.petition(citizen_phone="13812345678")
    again = hotline.petition(citizen_phone="138 1234 5678")
    assert (first.status_code, again.status_code) == (201, 200)
    assert hotline.petition(citizen_phone="13812345679").status_code == 409


def test_the_demo_seed_seals_its_callers_numbers(ctx):
    seed_demo(db.session, now=T0, events=60)
    db.session.commit()
    rows = db.session.execute(sa.select(Event.resident_phone_enc, Event.resident_phone_index, Event.resident_phone_masked)
                              .where(Event.resident_phone_masked.is_not(None))).all()
    assert rows  # hotline and Open311 events always carry a caller
    for enc, index, masked in rows:
        digits = phones.unseal(SECRET, enc)
        assert len(digits) == 11 and phones.mask(digits) == masked and phones.blind_index(SECRET, digits) == index


# ---------------------------------------------------------------- shown masked


def test_every_output_shows_the_number_masked_and_open311_not_at_all(callers, make_actor, hotline, client, open311):
    boss = make_actor("supervisor", "d")
    rid = new_request(client, open311, phone=PHONE)
    texts = []
    for path in ("/api/v1/events", f"/api/v1/events/{callers['worker']}", f"/api/v1/events/{callers['hotline']}/history",
                 "/api/v1/events.geojson"):
        response = boss.get(path)
        assert response.status_code == 200
        texts.append(response.get_data(as_text=True))
    listed = {e["id"]: e["resident_phone"] for e in boss.get("/api/v1/events").json["items"]}
    assert listed[callers["worker"]] == listed[callers["hotline"]] == listed[int(rid)] == MASKED
    assert listed[callers["other"]] == "139****4321"
    texts.append(search(boss).get_data(as_text=True))
    texts.append(hotline.get(f"{PETITIONS}/GD0001").get_data(as_text=True))
    for fmt in ("json", "xml"):
        open311_text = client.get(f"/open311/v2/requests/{rid}.{fmt}").get_data(as_text=True)
        assert "5678" not in open311_text  # not even masked
        texts.append(open311_text)
    for text in texts:
        for spelling in SPELLINGS[:4]:
            assert spelling not in text


# ---------------------------------------------------------------- search by number


def test_search_finds_every_event_of_one_caller_across_channels_within_scope_only(callers, make_actor):
    community = make_actor("supervisor", "c11")
    district = make_actor("supervisor", "d")
    found = search(community, "+86 138-1234-5678")
    assert found.status_code == 200, found.json
    assert {e["id"] for e in found.json["items"]} == {callers["worker"], callers["hotline"]}
    assert found.json["total"] == 2 and {e["source"] for e in found.json["items"]} == {"grid_worker", "hotline"}
    assert {e["resident_phone"] for e in found.json["items"]} == {MASKED}
    everywhere = search(district)
    assert {e["id"] for e in everywhere.json["items"]} == {callers["worker"], callers["hotline"], callers["far"]}
    page = search(district, limit=2, offset=2).json
    assert page["total"] == 3 and len(page["items"]) == 1 and page["limit"] == 2 and page["offset"] == 2
    assert search(make_actor("supervisor", "c12")).json == {"items": [], "total": 0, "limit": 50, "offset": 0}
    assert search(district, "13800000000").json["total"] == 0


def test_a_handler_finds_only_what_is_dispatched_to_them(callers, make_actor):
    community = make_actor("supervisor", "c11")
    handler = make_actor("handler", "s1")
    assert search(handler).json["total"] == 0
    act(community, callers["hotline"], "register")
    assert act(community, callers["hotline"], "dispatch", handler_id=handler.user.id).status_code == 200
    assert [e["id"] for e in search(handler).json["items"]] == [callers["hotline"]]


def test_every_search_is_recorded_with_the_number_masked(callers, make_actor):
    district = make_actor("supervisor", "d")
    search(district, "138 1234 5678", reason="核查重复来电")
    (row,) = access_rows()
    assert (row.action, row.outcome, row.actor_id, row.actor_role, row.reason) == ("search", "granted", district.user.id,
                                                                                   "supervisor", "核查重复来电")
    assert (row.phone_masked, row.matches, row.event_id) == (MASKED, 3, None)


# ---------------------------------------------------------------- reveal


@pytest.fixture
def dispatched(callers, make_actor):
    """The worker's event registered by community c11 and dispatched to a street s1 handler."""
    community = make_actor("supervisor", "c11", name="community-c11")
    handler = make_actor("handler", "s1", name="the-handler")
    act(community, callers["worker"], "register")
    assert act(community, callers["worker"], "dispatch", handler_id=handler.user.id).status_code == 200
    return {"event_id": callers["worker"], "community": community, "handler": handler}


@pytest.mark.parametrize(("role", "unit", "status", "outcome"), [
    ("supervisor", "c11", 200, "granted"), ("supervisor", "d", 200, "granted"), ("admin", "s1", 200, "granted"),
    ("handler", None, 200, "granted"),  # the handler it is dispatched to
    ("grid_worker", "g111", 403, "forbidden"),  # in scope, but a worker has no need of the number
    ("supervisor", "c12", 404, "not_found"), ("admin", "s2", 404, "not_found"), ("grid_worker", "g112", 404, "not_found"),
    ("handler", "s1", 404, "not_found"),  # another handler of the same street
])
def test_reveal_by_role_and_scope_and_every_attempt_is_recorded(dispatched, make_actor, role, unit, status, outcome):
    me = dispatched["handler"] if unit is None else make_actor(role, unit, name=f"me-{role}-{unit}")
    event_id = dispatched["event_id"]
    version = db.session.get(Event, event_id).version
    trail = db.session.scalar(sa.select(sa.func.count()).select_from(EventHistory))
    response = reveal(me, event_id, reason="回访核实处置结果")
    assert response.status_code == status, response.json
    if status == 200:
        assert response.json == {"phone": PHONE}
        assert response.headers["Cache-Control"] == "no-store"
    else:
        assert PHONE not in response.get_data(as_text=True) and response.json["code"] == outcome
    (row,) = access_rows()
    assert (row.action, row.outcome, row.event_id, row.actor_id, row.actor_role, row.actor_unit_id, row.reason) == (
        "reveal", outcome, event_id, me.user.id, role, me.user.unit_id, "回访核实处置结果")
    assert row.at == T0 + timedelta(minutes=10)  # the request's instant
    # Reading a number is not a change of the event: its version and audit chain stay as they were.
    db.session.expire_all()
    assert db.session.get(Event, event_id).version == version
    assert db.session.scalar(sa.select(sa.func.count()).select_from(EventHistory)) == trail


def test_reveal_of_an_event_without_a_number_is_null_and_of_no_event_is_404(callers, make_actor):
    district = make_actor("admin", "d")
    plain = report(make_actor("grid_worker", "g111", name="w2"))
    assert reveal(district, plain["id"]).json == {"phone": None}
    assert reveal(district, 999_999).status_code == 404
    assert reveal(district, 2**40).status_code == 404
    assert [(r.outcome, r.event_id) for r in access_rows()] == [("granted", plain["id"]), ("not_found", 999_999),
                                                                ("not_found", None)]


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}, {"reason": 42}, {"reason": "x" * 501},
                                  {"reason": "ok", "phone": "1"}, ["reason"]])
def test_reveal_needs_a_reason_and_bad_bodies_are_422(callers, make_actor, body):
    response = make_actor("admin", "d").post(f"/api/v1/events/{callers['worker']}/resident-phone/reveal", json=body)
    assert response.status_code == 422 and response.json["code"] == "validation_error"
    assert PHONE not in response.get_data(as_text=True)


def test_the_access_log_is_append_only(callers, make_actor):
    reveal(make_actor("admin", "d"), callers["worker"])
    for statement in ("UPDATE pii_access_log SET reason = 'x'", "DELETE FROM pii_access_log"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with db.engine.begin() as conn:
                conn.execute(sa.text(statement))


def test_admins_read_the_access_log_of_their_territory(callers, make_actor):
    district_admin = make_actor("admin", "d")
    street_admin = make_actor("admin", "s2")
    community = make_actor("supervisor", "c11")
    reveal(community, callers["worker"])
    reveal(make_actor("grid_worker", "g111", name="nosy"), callers["worker"])
    search(community)
    page = district_admin.get("/api/v1/pii-access-log").json
    assert page["total"] == 3
    assert [(r["action"], r["outcome"], r["actor"]["id"]) for r in page["items"]] == [
        ("search", "granted", community.user.id), ("reveal", "forbidden", page["items"][1]["actor"]["id"]),
        ("reveal", "granted", community.user.id)]
    assert page["items"][2]["reason"] == "回访核实处置结果" and page["items"][2]["phone_masked"] == MASKED
    only = district_admin.get("/api/v1/pii-access-log", query_string={"action": "search", "limit": 1}).json
    assert only["total"] == 1 and only["items"][0]["matches"] == 2
    assert street_admin.get("/api/v1/pii-access-log").json["total"] == 0  # neither their people nor their events
    assert community.get("/api/v1/pii-access-log").status_code == 403
    assert district_admin.get("/api/v1/pii-access-log", query_string={"phone": PHONE}).status_code == 422


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("phone", ["1-----", "call me", "1" * 25, 13812345678, None, ""])
def test_a_bad_number_is_422_never_500(callers, make_actor, phone):
    worker = make_actor("grid_worker", "g111", name="w3")
    reported = worker.post("/api/v1/events", json={"category_code": "01001", "description": "x", "lat": 40.005,
                                                   "lon": 110.005, "resident_phone": phone})
    searched = search(worker, phone)
    assert (reported.status_code, searched.status_code) == (422, 422), (reported.json, searched.json)


def test_a_bad_number_from_the_hotline_is_422_and_from_open311_400(hotline, client, open311):
    assert hotline.petition(citizen_phone="1-----").status_code == 422
    response = client.post("/open311/v2/requests.json", data={"api_key": open311, "service_code": "01001", "lat": "40.005",
                                                               "long": "110.005", "phone": "1" * 30})
    assert response.status_code == 400


# ---------------------------------------------------------------- logs


def test_a_log_record_never_carries_a_phone_number(app, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("grid_service.anything").warning("call back %s or %s", "+86 138-1234-5678", "0472-1234567")
    logging.getLogger("werkzeug").info("resident 13812345678 called")
    try:
        raise RuntimeError(f"cannot reach {PHONE}")
    except RuntimeError:
        logging.getLogger("grid_service.other").exception("delivery failed")
    assert caplog.messages[:2] == ["call back 138****5678 or ****", "resident 138****5678 called"]
    assert "1234-5678" not in caplog.text and PHONE not in caplog.text and "1234567" not in caplog.text
    assert "cannot reach 138****5678" in caplog.text


def test_a_request_that_carries_a_number_never_logs_it(callers, make_actor, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    worker = make_actor("grid_worker", "g111", name="w4")
    body = {"category_code": "01001", "description": "x", "lat": 40.005, "lon": 110.005, "resident_phone": "138 1234 5678"}
    assert worker.post("/api/v1/events", json=body | {"category_code": "99999"}).status_code == 422
    assert worker.post("/api/v1/events", json=body | {"lat": 91}).status_code == 422

    def crash(session, reporter, report, locator):  # a bug whose message carries what was reported
        raise RuntimeError(f"cannot place {report!r}")

    monkeypatch.setattr(events_intake, "place_report", crash)
    assert worker.post("/api/v1/events", json=body).status_code == 500
    assert "cannot place Report(" in caplog.text  # the traceback was logged …
    assert "resident_phone='138****5678'" in caplog.text  # … with the number masked
    for spelling in ("138 1234 5678", PHONE):
        assert spelling not in caplog.text
    reveal(make_actor("admin", "d"), callers["worker"])
    search(make_actor("admin", "d", name="admin-2"))
    assert "5678" not in caplog.text.replace("138****5678", "")


# ---------------------------------------------------------------- migration and key rotation


def _insert_legacy_event(conn, event_id: int, phone: str | None) -> None:
    conn.execute(sa.text(
        "INSERT INTO events (id, source, category_id, priority, state, level, owner_id, located_unit_id, description, "
        "address, resident_phone, needs_triage, return_count, rework_count, reopen_count, received_at, created_at, "
        "updated_at, version) VALUES (:id, 'hotline', 2, 'normal', 'reported', 'district', 1, 1, 'x', '', :phone, false, "
        "0, 0, 0, '2026-01-01', '2026-01-01', '2026-01-01', 1)"), {"id": event_id, "phone": phone})


def test_the_upgrade_seals_the_numbers_already_stored_and_drops_the_plaintext(blank_app):
    upgrade(revision="0004")
    legacy = {1: "138-1234-5678", 2: None, 3: "139****4321", 4: "分机 8"}
    with db.engine.begin() as conn:
        base_rows(conn)
        for event_id, phone in legacy.items():
            _insert_legacy_event(conn, event_id, phone)
    upgrade()
    assert "resident_phone" not in {c["name"] for c in sa.inspect(db.engine).get_columns("events")}
    with db.engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(sa.text(
            "SELECT id, resident_phone_enc, resident_phone_index, resident_phone_masked FROM events"))}
    assert phones.unseal(SECRET, rows[1].resident_phone_enc) == PHONE
    assert (rows[1].resident_phone_index, rows[1].resident_phone_masked) == (phones.blind_index(SECRET, PHONE), MASKED)
    assert tuple(rows[2])[1:] == (None, None, None)
    assert tuple(rows[3])[1:] == (None, None, "139****4321")  # the old demo's masked numbers stay masked
    assert phones.unseal(SECRET, rows[4].resident_phone_enc) == "分机 8" and rows[4].resident_phone_index is None
    assert rows[4].resident_phone_masked == "****"

    downgrade(revision="0004")
    with db.engine.connect() as conn:
        back = dict(conn.execute(sa.text("SELECT id, resident_phone FROM events")).all())
    assert back == {1: PHONE, 2: None, 3: "139****4321", 4: "分机 8"}


def test_after_a_key_rotation_numbers_are_found_and_revealed_and_reindex_moves_them(app, callers, make_actor, runner):
    admin = make_actor("admin", "d")
    app.config.update(SECRET_KEY="rotated-secret", SECRET_KEY_FALLBACKS=[SECRET])
    newer = report(make_actor("grid_worker", "g111", name="w5"), resident_phone=PHONE)  # sealed under the new key
    assert search(admin).json["total"] == 4
    assert reveal(admin, callers["worker"]).json == {"phone": PHONE}

    result = runner.invoke(args=["phones", "reindex", "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert "re-sealed 4 phone numbers" in result.output  # the new event was already under the new key
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert search(admin).json["total"] == 4
    assert reveal(admin, callers["worker"]).json == {"phone": PHONE}
    assert reveal(admin, callers["other"]).json == {"phone": "13987654321"}
    index = db.session.scalar(sa.select(Event.resident_phone_index).where(Event.id == newer["id"]))
    assert index == phones.blind_index("rotated-secret", PHONE)


def test_a_number_no_key_opens_is_409_not_500(callers, make_actor, app):
    app.config.update(SECRET_KEY="unrelated-secret", SECRET_KEY_FALLBACKS=[])
    response = reveal(make_actor("admin", "d"), callers["worker"])
    assert response.status_code == 409 and PHONE not in response.get_data(as_text=True)
