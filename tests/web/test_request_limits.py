"""The request the service reads: its head (URL length, header sizes and count), its body's content type
and its JSON nesting. Every refusal is the JSON error payload, through the app and through `flask serve`
(gunicorn) alike — never a 500, never the server's HTML page."""
from __future__ import annotations

import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading

import pytest

from tests.helpers import OPEN311_BASE, PETITIONS, ROOT, new_request, petition_body, report

DEEP = ("[" * 1000 + "]" * 1000).encode()  # the body: 1,000 levels


def refused(response, status: int, code: str) -> dict:
    """The JSON error payload of `response`, after checking its status and code."""
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    body = response.json
    assert (body["code"], body["status"]) == (code, status) and set(body) >= {"code", "message", "errors", "status"}
    return body


def json_operations(app) -> list[tuple[str, str]]:
    """(method, path) of every operation whose OpenAPI document takes a JSON body, its path parameters filled."""
    paths = app.extensions["grid_api"].spec.to_dict()["paths"]
    return [(method.upper(), re.sub(r"\{[^}]+\}", "1", path)) for path, operations in paths.items()
            for method, operation in operations.items()
            if isinstance(operation, dict) and "application/json" in operation.get("requestBody", {}).get("content", {})]


# ---------------------------------------------------------------- JSON nesting


def test_a_body_nested_1000_deep_is_400_on_every_json_endpoint(app, client, make_actor, hotline):
    admin = make_actor("admin", "d")
    operations = json_operations(app)
    assert ("POST", "/api/v1/auth/login") in operations and ("POST", PETITIONS) in operations
    answers = {}
    for method, path in operations:
        if path.startswith(PETITIONS):  # signed over the raw body, as the hotline does
            headers = hotline.headers(DEEP)
        elif path in ("/api/v1/auth/login", "/api/v1/auth/refresh"):
            headers = {}  # no token: anyone may call these
        else:
            headers = admin.headers
        response = client.open(path, method=method, data=DEEP, headers=headers | {"Content-Type": "application/json"})
        answers[f"{method} {path}"] = (response.status_code, response.json)
    expected = (400, {"code": "bad_request", "message": "请求体的 JSON 嵌套过深：最多 32 层",
                      "errors": {"json": ["嵌套不能超过 32 层"]}, "status": 400})
    assert {operation: answer for operation, answer in answers.items() if answer != expected} == {}


def test_the_depth_limit_counts_nesting_not_brackets_in_strings_and_follows_its_setting(app, worker):
    # A description full of brackets is text: the event is reported.
    assert report(worker, description="括号[[[[{{{{" * 200)["description"].startswith("括号[[[[")
    # Within the limit, the schema answers as before (the field is named).
    within = worker.post("/api/v1/events", json={"category_code": json.loads("[" * 30 + "]" * 30)})
    assert refused(within, 422, "validation_error")["errors"]["json"]["category_code"]
    app.config["MAX_JSON_DEPTH"] = 3
    assert refused(worker.post("/api/v1/events", json={"a": [[[1]]]}), 400, "bad_request")["message"].endswith("最多 3 层")


def test_a_signed_hotline_petition_nested_too_deep_is_400_and_a_valid_one_still_verifies(hotline):
    deep = json.dumps(petition_body() | {"location": json.loads("[" * 40 + "]" * 40)}).encode()
    refused(hotline.post(PETITIONS, deep), 400, "bad_request")
    assert hotline.petition("GD0100").status_code == 201  # the signature over the raw body still holds


def test_open311_reads_forms_and_a_json_body_is_415_not_500(client, open311):
    response = client.post(f"{OPEN311_BASE}/requests.json", data=DEEP, content_type="application/json")
    body = refused(response, 415, "unsupported_media_type")
    assert "application/x-www-form-urlencoded" in body["message"]
    # Brackets in the form's field names are only names.
    assert new_request(client, open311, **{"attribute[AMOUNT][x][y][z]" + "[" * 500: "some"})
    # A multipart form fills the same fields.
    form = {"api_key": open311, "service_code": "01001", "lat": "40.005", "long": "110.005",
            "description": "路边垃圾", "attribute[AMOUNT]": "some"}
    assert client.post(f"{OPEN311_BASE}/requests.json", data=form, content_type="multipart/form-data").status_code == 200


# ---------------------------------------------------------------- content types


def test_a_json_body_sent_as_text_is_415_naming_application_json(client, worker):
    login = client.post("/api/v1/auth/login", data='{"name": "someone", "password": "x"}', content_type="text/plain")
    body = refused(login, 415, "unsupported_media_type")
    assert "application/json" in body["message"] and "text/plain" in body["message"]
    assert body["errors"] == {"Content-Type": ["应为 application/json"]}
    form = worker.post("/api/v1/events", data="category_code=01001", content_type="application/x-www-form-urlencoded")
    assert "application/json" in refused(form, 415, "unsupported_media_type")["message"]
    untyped = worker.post("/api/v1/events", data=json.dumps({"category_code": "01001"}))
    assert "未声明 Content-Type" in refused(untyped, 415, "unsupported_media_type")["message"]


def test_json_with_parameters_passes_and_no_body_at_all_still_names_the_missing_fields(client, worker):
    with_charset = worker.post("/api/v1/events", data=json.dumps({"category_code": "01001", "description": "垃圾",
                                                                  "lat": 40.005, "lon": 110.005}),
                               content_type="application/json; charset=utf-8")
    assert with_charset.status_code == 201, with_charset.json
    nothing = client.post("/api/v1/auth/refresh")
    assert refused(nothing, 422, "validation_error")["errors"] == {"json": {"refresh_token": ["缺少必填字段"]}}


def test_a_photo_upload_sent_as_json_is_415_naming_multipart(worker):
    event_id = report(worker)["id"]
    response = worker.post(f"/api/v1/events/{event_id}/attachments", json={"kind": "before"})
    assert "multipart/form-data" in refused(response, 415, "unsupported_media_type")["message"]
    # A multipart form reaches the upload, which names what it lacks.
    empty = worker.post(f"/api/v1/events/{event_id}/attachments", content_type="multipart/form-data",
                        data={"kind": "before", "note": io.BytesIO(b"")})
    assert "file" in str(refused(empty, 422, empty.json["code"])["errors"])


def test_the_hotline_checks_its_signature_before_the_content_type(hotline):
    raw = json.dumps(petition_body()).encode()
    unsigned = hotline.client.post(PETITIONS, data=raw, content_type="text/plain")
    refused(unsigned, 401, "unauthorized")
    signed = hotline.client.post(PETITIONS, data=raw, headers=hotline.headers(raw) | {"Content-Type": "text/plain"})
    assert "application/json" in refused(signed, 415, "unsupported_media_type")["message"]


# ---------------------------------------------------------------- the request head


def test_a_10kb_authorization_header_is_431_naming_it(client):
    for path in ("/api/v1/me", "/api/v1/auth/login"):
        body = refused(client.get(path, headers={"Authorization": "Bearer " + "a" * 10_000}), 431,
                       "request_header_fields_too_large")
        assert "Authorization" in body["message"] and "8192" in body["message"]
        assert body["errors"] == {"Authorization": ["最多 8192 字节"]}
    # Just within the limit it is an ordinary bad token.
    refused(client.get("/api/v1/me", headers={"Authorization": "Bearer " + "a" * 8100}), 401, "unauthorized")


def test_too_many_headers_is_431_and_a_too_long_url_is_414(client):
    many = {f"X-Extra-{i}": "1" for i in range(120)}
    assert "最多 100 个" in refused(client.get("/api/v1/me", headers=many), 431, "request_header_fields_too_large")["message"]
    for path in ("/api/v1/events", "/no/such/page"):
        body = refused(client.get(f"{path}?q={'x' * 5000}"), 414, "uri_too_long")
        assert "4096" in body["message"]
    refused(client.get(f"/no/such/page?q={'x' * 3000}"), 404, "not_found")


# ---------------------------------------------------------------- through gunicorn (`flask serve`)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`flask serve` (gunicorn, one worker, no scheduler) on a free loopback port, its logs in files.
    In Asia/Kathmandu (+05:45), an offset no machine's default would give by chance."""
    home = tmp_path_factory.mktemp("served")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("TZ", "SECRET_KEY", "DATABASE_URL", "FLASK_APP")}
    env |= {"DATABASE_URL": f"sqlite:///{home / 'grid.db'}", "INSTANCE_PATH": str(home), "UPLOAD_FOLDER": str(home / "up"),
            "GRID_TIMEZONE": "Asia/Kathmandu", "XDG_RUNTIME_DIR": str(home), "LOG_LEVEL": "INFO"}
    out, err = (home / "stdout").open("wb"), (home / "stderr").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "serve", "--no-scheduler", "--workers", "1",
                               "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env, stdout=out,
                              stderr=subprocess.PIPE)
    listening = threading.Event()

    def copy_stderr() -> None:  # into the file the tests read, noticing when gunicorn listens
        for line in server.stderr:
            err.write(line)
            err.flush()
            if b"Listening at:" in line:
                listening.set()
        listening.set()  # the server ended: stop waiting

    copier = threading.Thread(target=copy_stderr, daemon=True)
    copier.start()
    assert listening.wait(30), "flask serve did not listen within 30 s"
    assert server.poll() is None, (home / "stderr").read_text()
    try:
        yield {"port": port, "stdout": home / "stdout", "stderr": home / "stderr"}
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        copier.join(timeout=15)
        out.close()
        err.close()


def _get(served, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), json.loads(response.read())
    finally:
        connection.close()


def test_served_oversized_heads_are_answered_in_json_by_the_app_and_by_gunicorn(served):
    # Over the service's limits, within gunicorn's: the app's answer, naming what is too large.
    status, content_type, body = _get(served, "/api/v1/me", {"Authorization": "Bearer " + "a" * 10_000})
    assert (status, content_type, body["code"]) == (431, "application/json", "request_header_fields_too_large")
    assert body["errors"] == {"Authorization": ["最多 8192 字节"]}
    status, content_type, body = _get(served, "/api/v1/me?q=" + "x" * 5000)
    assert (status, content_type, body["code"]) == (414, "application/json", "uri_too_long") and "4096" in body["message"]
    # Over even gunicorn's own limits: gunicorn's refusal, in the same payload.
    for path, headers, expected in (("/api/v1/me", {"Authorization": "Bearer " + "a" * 20_000}, 431),
                                    ("/api/v1/me", {f"X-Extra-{i}": "1" for i in range(300)}, 431),
                                    ("/api/v1/me?q=" + "x" * 9000, {}, 414)):
        status, content_type, body = _get(served, path, headers)
        assert (status, content_type) == (expected, "application/json")
        assert body["status"] == expected and body["message"] and set(body) == {"code", "message", "errors", "status"}


def test_served_logs_show_the_configured_zone_with_its_offset(served):
    _get(served, "/api/v1/me", {"Authorization": "Bearer " + "a" * 10_000})
    # The app's own lines (the development SECRET_KEY warning, at start): local time with the offset.
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+05:45 WARNING ", served["stderr"].read_text(), re.M)
    # gunicorn's access log, in the same zone.
    assert re.search(r'\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0545\] "GET /api/v1/me', served["stdout"].read_text())
