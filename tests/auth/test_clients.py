"""API clients: secrets sealed at rest, rotation with a grace period, API keys, the CLI and the admin API."""
from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from grid_service.auth import clients
from grid_service.auth.client_models import ApiClient, ClientSecret
from grid_service.infra import webhooks
from grid_service.infra.db import db
from grid_service.infra.errors import Conflict, Forbidden, Invalid
from tests.helpers import T0


@pytest.fixture
def new_client(ctx, territory):
    client, secret, key = clients.create_client(db.session, name="h12345", kind="hotline", now=T0,
                                                callback_url="https://hotline.example.gov.cn/cb", unit_code=territory["s1"].code)
    db.session.commit()
    return client, secret, key


def stored_text() -> str:
    """Everything the two client tables hold, as text (what a database dump would show)."""
    rows = db.session.execute(sa.select(ApiClient.__table__)).all() + db.session.execute(sa.select(ClientSecret.__table__)).all()
    return repr(rows)


def test_a_new_client_gets_a_whsec_secret_and_an_api_key_neither_stored_in_clear(new_client):
    client, secret, key = new_client
    assert secret.startswith("whsec_") and len(webhooks.secret_key(secret)) == 32
    assert key.startswith("gsk_") and client.unit.code == "150299001" and client.is_active
    dump = stored_text()
    assert secret not in dump and secret.removeprefix("whsec_") not in dump and key not in dump
    assert client.api_key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert clients.live_keys(db.session, client, T0) == [webhooks.secret_key(secret)]


def test_a_sealed_secret_opens_only_for_its_own_client_and_key(app, new_client):
    client, secret, _ = new_client
    other, _, _ = clients.create_client(db.session, name="other", kind="open311", now=T0)
    row = db.session.scalars(sa.select(ClientSecret).where(ClientSecret.client_id == client.id)).one()
    with pytest.raises(ValueError):
        clients.unseal(row.ciphertext, other.id)  # copied onto another client: does not open
    app.config["SECRET_KEY"] = "a-new-key"
    with pytest.raises(ValueError):
        clients.unseal(row.ciphertext, client.id)
    app.config["SECRET_KEY_FALLBACKS"] = ["test-secret"]  # the old key, kept while rotating SECRET_KEY
    assert clients.unseal(row.ciphertext, client.id) == secret


def test_api_keys_authenticate_only_an_active_client_of_the_right_kind(new_client):
    client, _, key = new_client
    assert clients.authenticate_api_key(db.session, key, kind="hotline").id == client.id
    for raw, kind in [(key, "open311"), ("gsk_wrong", "hotline"), ("", "hotline"), ("x" * 500, "hotline")]:
        with pytest.raises(Forbidden):
            clients.authenticate_api_key(db.session, raw, kind=kind)
    clients.deactivate_client(db.session, client, now=T0)
    with pytest.raises(Forbidden):
        clients.authenticate_api_key(db.session, key, kind="hotline")


def test_rotation_keeps_the_old_secret_for_the_grace_period_only(new_client):
    client, old, _ = new_client
    new = clients.rotate_secret(db.session, client, grace=timedelta(hours=2), now=T0)
    db.session.commit()
    assert clients.live_keys(db.session, client, T0 + timedelta(hours=1)) == [webhooks.secret_key(new), webhooks.secret_key(old)]
    assert clients.live_keys(db.session, client, T0 + timedelta(hours=2)) == [webhooks.secret_key(new)]
    newest = clients.rotate_secret(db.session, client, grace=timedelta(0), now=T0 + timedelta(hours=3))
    assert clients.live_keys(db.session, client, T0 + timedelta(hours=3)) == [webhooks.secret_key(newest)]


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"name": "bad name"}, Invalid), ({"name": ""}, Invalid), ({"kind": "fax"}, Invalid),
    ({"callback_url": "ftp://x"}, Invalid), ({"callback_url": "not a url"}, Invalid), ({"unit_code": "nope"}, Invalid),
    ({"name": "h12345"}, Conflict),
])
def test_invalid_clients_are_refused(new_client, kwargs, error):
    with pytest.raises(error):
        clients.create_client(db.session, **({"name": "fresh", "kind": "hotline", "now": T0} | kwargs))


# ---------------------------------------------------------------- CLI


def test_cli_create_prints_the_credentials_as_json_on_the_last_line(runner, territory):
    result = runner.invoke(args=["clients", "create", "--name", "h12345", "--callback-url", "https://h.example/cb",
                                 "--unit", territory["s2"].code])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output.strip().splitlines()[-1])
    assert set(printed) == {"client_id", "name", "kind", "secret", "api_key"} and printed["kind"] == "hotline"
    client = db.session.get(ApiClient, printed["client_id"])
    assert clients.live_keys(db.session, client, T0) == [webhooks.secret_key(printed["secret"])]
    assert clients.authenticate_api_key(db.session, printed["api_key"], kind="hotline").id == client.id
    open311 = runner.invoke(args=["clients", "create", "--name", "partner", "--kind", "open311"])
    assert json.loads(open311.output.strip().splitlines()[-1])["kind"] == "open311"


def test_cli_refuses_a_duplicate_and_creates_nothing(runner, territory):
    runner.invoke(args=["clients", "create", "--name", "h12345"])
    result = runner.invoke(args=["clients", "create", "--name", "h12345"])
    assert result.exit_code != 0 and "already exists" in result.output
    bad = runner.invoke(args=["clients", "create", "--name", "x", "--unit", "nope"])
    assert bad.exit_code != 0 and "unknown unit" in bad.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiClient)) == 1


def test_cli_rotate_list_and_deactivate(runner, territory):
    created = json.loads(runner.invoke(args=["clients", "create", "--name", "h12345"]).output.strip().splitlines()[-1])
    rotated = runner.invoke(args=["clients", "rotate-secret", "h12345", "--grace-hours", "1"])
    assert rotated.exit_code == 0, rotated.output
    secret = json.loads(rotated.output.strip().splitlines()[-1])["secret"]
    assert secret != created["secret"] and secret.startswith("whsec_")
    listed = runner.invoke(args=["clients", "list"])
    assert "h12345\thotline\t-\tactive\t2 live secret(s)\t-" in listed.output
    assert runner.invoke(args=["clients", "deactivate", "h12345"]).exit_code == 0
    assert "inactive" in runner.invoke(args=["clients", "list"]).output
    assert runner.invoke(args=["clients", "rotate-secret", "nobody"]).exit_code != 0


# ---------------------------------------------------------------- admin API


def test_only_admins_manage_clients(make_actor):
    supervisor = make_actor("supervisor", "d")
    for call in (lambda: supervisor.get("/api/v1/clients"), lambda: supervisor.post("/api/v1/clients", json={"name": "x"})):
        assert call().status_code == 403
    assert supervisor.client.get("/api/v1/clients").status_code == 401
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiClient)) == 0


def test_admin_creates_lists_rotates_and_deactivates_a_client(make_actor, territory):
    admin = make_actor("admin", "d")
    created = admin.post("/api/v1/clients", json={"name": "h12345", "unit_code": territory["s1"].code,
                                                  "callback_url": "https://hotline.example/cb"})
    assert created.status_code == 201, created.json
    body = created.json
    assert body["secret"].startswith("whsec_") and body["api_key"].startswith("gsk_")
    cid = body["client"]["id"]
    assert body["client"]["unit_code"] == territory["s1"].code and body["client"]["kind"] == "hotline"
    listed = admin.get("/api/v1/clients")
    assert listed.status_code == 200 and body["secret"] not in listed.get_data(as_text=True)
    rotated = admin.post(f"/api/v1/clients/{cid}/rotate-secret", json={"grace_hours": 2})
    assert rotated.status_code == 200 and rotated.json["secret"] != body["secret"]
    assert [s["expires_at"] is None for s in rotated.json["client"]["secrets"]] == [True, False]
    deactivated = admin.post(f"/api/v1/clients/{cid}/deactivate")
    assert deactivated.status_code == 200 and deactivated.json["is_active"] is False
    assert admin.get(f"/api/v1/clients/{cid}").json["is_active"] is False
    assert admin.get("/api/v1/clients/999").status_code == 404


@pytest.mark.parametrize("body", [{"name": "bad name"}, {"name": "x", "kind": "fax"}, {"name": "x", "callback_url": "ftp://a"},
                                  {"name": "x", "unit_code": "nope"}, {}])
def test_admin_api_refuses_bad_clients_and_creates_nothing(make_actor, body):
    admin = make_actor("admin", "d")
    response = admin.post("/api/v1/clients", json=body)
    assert response.status_code == 422, response.json
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiClient)) == 0


def test_admin_edits_the_hotline_category_mapping(make_actor, categories, runner):
    admin = make_actor("admin", "d")
    assert admin.put("/api/v1/hotline/category-map/HJ-01", json={"category_code": "01001"}).status_code == 201
    changed = admin.put("/api/v1/hotline/category-map/HJ-01", json={"category_code": "01002", "note": "道路"})
    assert changed.status_code == 200 and changed.json["category_code"] == "01002"
    assert admin.put("/api/v1/hotline/category-map/*", json={"category_code": "01001"}).status_code == 201
    assert admin.put("/api/v1/hotline/category-map/X", json={"category_code": "01"}).status_code == 422  # a 大类
    assert admin.put("/api/v1/hotline/category-map/a%20b", json={"category_code": "01001"}).status_code == 422
    assert [m["external_code"] for m in admin.get("/api/v1/hotline/category-map").json] == ["*", "HJ-01"]
    assert admin.delete("/api/v1/hotline/category-map/HJ-01").status_code == 204
    assert admin.delete("/api/v1/hotline/category-map/HJ-01").status_code == 404
    assert make_actor("supervisor", "d").get("/api/v1/hotline/category-map").status_code == 403
    # and the same from the command line
    assert runner.invoke(args=["hotline", "map", "set", "HJ-02", "01002", "--note", "道路不洁"]).exit_code == 0
    assert "HJ-02\t01002\t道路不洁\t道路不洁" in runner.invoke(args=["hotline", "map", "list"]).output
    assert runner.invoke(args=["hotline", "map", "set", "HJ-03", "99999"]).exit_code != 0
    assert runner.invoke(args=["hotline", "map", "delete", "HJ-02"]).exit_code == 0
