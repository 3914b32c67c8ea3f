"""CORS: closed unless CORS_ORIGINS lists the origin; preflights answered for those origins only."""
from __future__ import annotations

import pytest

ALLOWED = "https://grid.example.gov.cn"
OTHER = "https://evil.example.com"


def preflight(client, origin, method="POST", headers="authorization, content-type", path="/api/v1/events"):
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                         "Access-Control-Request-Headers": headers})


@pytest.fixture
def open_to(app):
    def configure(origins: str) -> None:
        app.config["CORS_ORIGINS"] = origins

    return configure


def test_closed_by_default(app, client, make_actor):
    assert app.config["CORS_ORIGINS"] == ""
    worker = make_actor("grid_worker", "g111")
    response = worker.client.get("/api/v1/me", headers={**worker.headers, "Origin": ALLOWED})
    assert response.status_code == 200 and "Access-Control-Allow-Origin" not in response.headers
    answer = preflight(client, ALLOWED)
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert "Access-Control-Allow-Headers" not in answer.headers


def test_preflight_from_an_allowed_origin(client, open_to):
    open_to(f"{ALLOWED}, https://other.example.gov.cn")
    answer = preflight(client, ALLOWED)
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    assert set(answer.headers["Access-Control-Allow-Headers"].split(", ")) == {"authorization", "content-type"}
    assert answer.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in answer.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in answer.headers  # bearer tokens, never cookies


def test_preflight_from_another_origin_gets_no_cors_headers(client, open_to):
    open_to(ALLOWED)
    for origin in (OTHER, ALLOWED + ".evil.com", "null", ALLOWED.replace("https", "http")):
        answer = preflight(client, origin)
        assert "Access-Control-Allow-Origin" not in answer.headers, origin
        assert "Access-Control-Allow-Methods" not in answer.headers, origin


def test_only_known_request_headers_are_allowed(client, open_to):
    open_to(ALLOWED)
    answer = preflight(client, ALLOWED, headers="Authorization, X-Custom-Thing")
    assert answer.headers["Access-Control-Allow-Headers"] == "authorization"


def test_actual_responses_carry_the_origin_for_allowed_origins_only(client, make_actor, open_to):
    open_to(ALLOWED)
    worker = make_actor("grid_worker", "g111")
    ok = worker.client.get("/api/v1/me", headers={**worker.headers, "Origin": ALLOWED})
    assert ok.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Retry-After" in ok.headers["Access-Control-Expose-Headers"]
    assert "Origin" in ok.headers["Vary"]
    # Errors too, so that the page can read why.
    denied = client.get("/api/v1/me", headers={"Origin": ALLOWED})
    assert denied.status_code == 401 and denied.headers["Access-Control-Allow-Origin"] == ALLOWED
    foreign = worker.client.get("/api/v1/me", headers={**worker.headers, "Origin": OTHER})
    assert "Access-Control-Allow-Origin" not in foreign.headers


def test_a_wildcard_allows_any_origin(client, open_to):
    open_to("*")
    answer = preflight(client, OTHER)
    assert answer.status_code == 204 and answer.headers["Access-Control-Allow-Origin"] == "*"
    assert client.get("/healthz", headers={"Origin": OTHER}).headers["Access-Control-Allow-Origin"] == "*"
