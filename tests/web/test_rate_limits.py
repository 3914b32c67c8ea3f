"""Rate limits (per user, per API client, per address on login), shared across processes; body size limits."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa

from grid_service.auth.models import RateCounter
from grid_service.infra.db import db
from grid_service.infra.errors import RateLimited
from grid_service.web.kit import security
from grid_service.web.kit.security import MemoryStorage, Rate, RateLimiter, build_limiter, parse_rates
from tests.helpers import ROOT, T0, photo


def limits(app, **settings) -> None:
    """Change rate-limit settings and rebuild the app's limiter from them (on, unless said otherwise)."""
    app.config.update({"RATE_LIMITS_ENABLED": True} | settings)
    app.extensions["rate_limiter"] = build_limiter(app)


@pytest.fixture
def clock(edge_clock):
    edge_clock.set(T0)
    return edge_clock


# ---------------------------------------------------------------- per user


def test_a_user_over_the_limit_gets_429_with_retry_after_and_others_do_not(app, make_actor, clock):
    limits(app, RATE_LIMIT_USER="3/minute")
    alice, bob = make_actor("grid_worker", "g111"), make_actor("grid_worker", "g112")
    assert [alice.get("/api/v1/me").status_code for _ in range(3)] == [200, 200, 200]
    clock.set(T0 + timedelta(seconds=20))
    over = alice.get("/api/v1/me")
    assert over.status_code == 429
    assert over.headers["Retry-After"] == "40"
    assert over.json["code"] == "too_many_requests" and over.json["status"] == 429 and over.json["message"]
    assert bob.get("/api/v1/me").status_code == 200
    # A POST over the limit changes nothing.
    assert alice.post("/api/v1/events", json={"category_code": "01001", "description": "x", "grid_code": "15029900100101"}).status_code == 429
    # The window ends a minute after its first request.
    clock.set(T0 + timedelta(seconds=60))
    assert alice.get("/api/v1/me").status_code == 200


def test_several_limits_apply_together(app, make_actor, clock):
    limits(app, RATE_LIMIT_USER="2/second; 4/minute")
    alice = make_actor("grid_worker", "g111")
    assert [alice.get("/api/v1/me").status_code for _ in range(3)] == [200, 200, 429]
    clock.set(T0 + timedelta(seconds=1))
    # A refused request counts too (hammering does not pay): this is the minute's fourth.
    assert alice.get("/api/v1/me").status_code == 200
    clock.set(T0 + timedelta(seconds=2))
    blocked = alice.get("/api/v1/me")
    assert blocked.status_code == 429 and blocked.headers["Retry-After"] == "58"


def test_requests_without_a_valid_token_are_not_counted_against_anyone(app, make_actor, clock):
    limits(app, RATE_LIMIT_USER="1/minute")
    alice = make_actor("grid_worker", "g111")
    for _ in range(3):
        assert alice.client.get("/api/v1/me", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert alice.get("/healthz").status_code in (200, 503)  # probes are not counted
        assert alice.get("/openapi.json").status_code == 200
    assert alice.get("/api/v1/me").status_code == 200


def test_rate_limits_are_off_in_tests_unless_switched_on(app, make_actor, clock):
    assert app.config["RATE_LIMITS_ENABLED"] is False
    app.config["RATE_LIMIT_USER"] = "1/minute"
    app.extensions["rate_limiter"] = build_limiter(app)
    alice = make_actor("grid_worker", "g111")
    assert {alice.get("/api/v1/me").status_code for _ in range(3)} == {200}


def test_the_off_switch(app, make_actor, clock):
    limits(app, RATE_LIMIT_USER="1/minute", RATE_LIMITS_ENABLED=False)
    alice = make_actor("grid_worker", "g111")
    assert {alice.get("/api/v1/me").status_code for _ in range(5)} == {200}


def test_the_counters_live_in_the_database_or_beside_a_sqlite_one(app, make_actor, clock, backend, tmp_path):
    """PostgreSQL: the service's own `rate_counters`. SQLite: a file of its own beside the database
    (test.db → test.counters.db), so that counting never waits for the main file's one write lock."""
    limits(app, RATE_LIMIT_USER="5/minute")
    alice = make_actor("grid_worker", "g111")
    alice.get("/api/v1/me")
    alice.get("/api/v1/me")
    key = f"user:{alice.user.id}:60"
    if backend == "sqlite":
        sidecar = tmp_path / "test.counters.db"
        assert sidecar.exists()
        with contextlib.closing(sqlite3.connect(sidecar)) as conn:
            row = conn.execute("SELECT hits, window_start FROM rate_counters WHERE key = ?", (key,)).fetchone()
        assert row == (2, int(T0.timestamp()))
        assert db.session.get(RateCounter, key) is None  # nothing in the main file
    else:
        row = db.session.get(RateCounter, key)
        assert row is not None and row.hits == 2 and row.window_start == int(T0.timestamp())


def test_counting_does_not_wait_for_the_main_databases_write_lock(app, make_actor, clock, backend):
    """SQLite has one write lock per file, held by every writing request and sweep batch until it
    commits. Counting a request must not wait for it (it used to wait its 2 s and then let the request
    through uncounted): reads go on under WAL, and the limit holds."""
    if backend != "sqlite":
        pytest.skip("SQLite's one write lock per database file")
    limits(app, RATE_LIMIT_USER="2/minute")
    alice = make_actor("grid_worker", "g111")
    holder = db.engine.connect()
    holder.exec_driver_sql("BEGIN IMMEDIATE")  # another writer holds the main database's write lock
    try:
        answers = [alice.get("/api/v1/me").status_code for _ in range(3)]
    finally:
        holder.rollback()
        holder.close()
    assert answers == [200, 200, 429]
    assert app.extensions["rate_limiter"].failures == 0


def test_workers_in_other_processes_share_the_counts(app, make_actor, database_url):
    """Two processes, like two gunicorn workers, on one database: together they get the limit once."""
    limits(app, RATE_LIMIT_USER="4/minute")
    alice = make_actor("grid_worker", "g111")
    assert [alice.get("/api/v1/me").status_code for _ in range(2)] == [200, 200]
    script = (
        "import json, sys\n"
        "from grid_service import create_app\n"
        "app = create_app('config.Config')\n"
        "client = app.test_client()\n"
        "headers = {'Authorization': 'Bearer ' + sys.argv[1]}\n"
        "print(json.dumps([client.get('/api/v1/me', headers=headers).status_code for _ in range(3)]))\n"
    )
    env = dict(os.environ, DATABASE_URL=database_url.replace("postgresql+psycopg://", "postgresql://"),
               RATE_LIMITS_ENABLED="1", RATE_LIMIT_USER="4/minute", LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    other = subprocess.run([sys.executable, "-c", script, alice.token], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout.strip().splitlines()[-1]) == [200, 200, 429]
    assert alice.get("/api/v1/me").status_code == 429


def _break_the_store(app) -> sa.Engine:
    """Drop the counters' table where the store keeps it; the caller puts it back."""
    engine = app.extensions["rate_limiter"].storage.engine()
    with engine.connect() as conn:
        conn.execute(sa.text("DROP TABLE rate_counters"))
    return engine


def test_a_broken_counter_store_still_limits_each_worker_logs_an_error_and_healthz_says_so(
        app, make_actor, clock, caplog, monkeypatch):
    # An in-process `flask db upgrade` (the migration tests) runs alembic's fileConfig, which disables
    # the loggers that existed before it; this test wants to see the error whatever ran earlier.
    monkeypatch.setattr(security.logger, "disabled", False)
    limits(app, RATE_LIMIT_USER="1/minute")
    alice = make_actor("grid_worker", "g111")
    engine = _break_the_store(app)
    try:
        answers = [alice.get("/api/v1/me") for _ in range(3)]
        # Not let through: this worker counts in its own memory while the shared store is down.
        assert [a.status_code for a in answers] == [200, 429, 429]
        assert answers[1].json["code"] == "too_many_requests" and answers[1].headers["Retry-After"] == "60"
        errors = [r for r in caplog.records if r.name == security.logger.name and r.levelno == logging.ERROR]
        assert len(errors) == 1 and "counter store" in errors[0].getMessage()  # once, not once per request
        health = alice.client.get("/healthz")
        assert health.status_code == 200 and health.json["status"] == "ok"  # HTTP semantics as before
        section = health.json["rate_limits"]
        assert section["status"] == "failing" and section["counting"] == "per_process" and section["failures"] >= 1
        assert "rate_counters" in section["error"] and section["last_failure_at"] == "2026-03-02T09:00:00+08:00"
    finally:
        RateCounter.__table__.create(engine)
    # Mended: the next /healthz probe finds the store taking writes, and the workers share counts again.
    assert alice.client.get("/healthz").json["rate_limits"]["counting"] == "shared"


def test_unknown_names_still_lock_while_the_counter_store_is_broken(app, client, territory, clock):
    """The lockout of names that belong to nobody counts in the same store: no 5xx, the same answers."""
    engine = _break_the_store(app)
    try:
        answers = [client.post("/api/v1/auth/login", json={"name": "nobody", "password": "x"}) for _ in range(6)]
    finally:
        RateCounter.__table__.create(engine)
    assert [a.status_code for a in answers] == [401] * 5 + [429]
    assert answers[-1].json["code"] == "too_many_attempts"


# ---------------------------------------------------------------- per address on login, per API client


def test_login_attempts_are_limited_per_address_whatever_the_name(app, client, territory, clock):
    limits(app, RATE_LIMIT_LOGIN="3/minute")
    answers = [client.post("/api/v1/auth/login", json={"name": f"user{i}", "password": "x"}) for i in range(4)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert answers[-1].json["code"] == "too_many_requests" and answers[-1].headers["Retry-After"] == "60"
    # Another address is not affected.
    other = client.post("/api/v1/auth/login", json={"name": "user9", "password": "x"}, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 401


def test_api_clients_have_their_own_limit(app, ctx):
    limits(app, RATE_LIMIT_CLIENT="2/minute")
    limiter = app.extensions["rate_limiter"]
    limiter.enforce("client", 7, T0)
    limiter.enforce("client", 7, T0)
    with pytest.raises(RateLimited) as caught:
        limiter.enforce("client", 7, T0 + timedelta(seconds=5))
    assert caught.value.status == 429 and caught.value.retry_after == 55
    limiter.enforce("client", 8, T0)  # another client
    limiter.enforce("user", 7, T0)  # a user with the same id is another key


# ---------------------------------------------------------------- settings and storage


@pytest.mark.parametrize(("text", "rates"), [
    ("600/minute", (Rate(600, 60),)),
    ("20 per 30s", (Rate(20, 30),)),
    ("5/second; 100/hour, 1000/day", (Rate(5, 1), Rate(100, 3600), Rate(1000, 86400))),
    ("10/5minutes", (Rate(10, 300),)),
    ("1/d, 2/h, 3/m, 4/s", (Rate(1, 86400), Rate(2, 3600), Rate(3, 60), Rate(4, 1))),
    ("", ()),
    ("off", ()),
])
def test_rate_settings_are_parsed(text, rates):
    assert parse_rates(text) == rates


@pytest.mark.parametrize("text", ["600", "minute/600", "0/minute", "5/fortnight", "5/2days", "10/ms", "10/mins"])
def test_bad_rate_settings_are_refused(text):
    with pytest.raises(ValueError):
        parse_rates(text)


def test_bad_storage_setting_is_refused(app):
    with pytest.raises(ValueError):
        limits(app, RATE_LIMIT_STORAGE="redis")


def test_workers_reserve_hits_in_chunks_and_never_exceed_the_limit():
    """A busy user costs one counter update per 10 requests; together the workers still stop at the limit."""
    shared = MemoryStorage()
    calls = []
    original = shared.incr

    def counting_incr(*args):
        calls.append(args)
        return original(*args)

    shared.incr = counting_incr
    rates = {"user": (Rate(600, 60),)}
    worker_a, worker_b = RateLimiter(shared, rates), RateLimiter(shared, rates)
    assert all(worker_a.check("user", 1, T0) is None for _ in range(5))  # holds 5 more in reserve
    allowed_b = 0
    while worker_b.check("user", 1, T0 + timedelta(seconds=1)) is None:
        allowed_b += 1
    assert allowed_b == 590
    assert all(worker_a.check("user", 1, T0 + timedelta(seconds=2)) is None for _ in range(5))
    assert worker_a.check("user", 1, T0 + timedelta(seconds=2)) == 58
    assert len(calls) <= 62  # 600 hits, 10 at a time (+ the refusals)
    # Small limits are counted one by one: exact across workers.
    assert Rate(30, 60).chunk == 1 and Rate(600, 60).chunk == 10
    # High limits (integrations, busy desks) write the shared counter once per 50 requests.
    assert Rate(6000, 60).chunk == 50 and Rate(1_000_000, 60).chunk == 50


def test_the_services_own_sqlite_file_is_refused_as_the_counter_store(app, tmp_path):
    """Counters in the main SQLite file would wait for the write lock of the very request they count."""
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'grid.db'}")
    with pytest.raises(ValueError, match="RATE_LIMIT_STORAGE_URL"):
        limits(app, RATE_LIMIT_STORAGE_URL=f"sqlite:///{tmp_path / '.' / 'grid.db'}")
    limits(app, RATE_LIMIT_STORAGE_URL="")
    assert app.extensions["rate_limiter"].storage.where == "sidecar"
    assert security.sidecar_url(sa.make_url(f"sqlite:///{tmp_path / 'grid.db'}")).database == str(tmp_path / "grid.counters.db")


def test_an_in_memory_database_counts_in_memory(app):
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", RATE_LIMIT_STORAGE_URL="")
    assert isinstance(build_limiter(app).storage, MemoryStorage)


def test_memory_storage_for_a_single_process():
    limiter = RateLimiter(MemoryStorage(), {"user": (Rate(2, 10),)})
    assert [limiter.check("user", 1, T0 + timedelta(seconds=s)) for s in (0, 1, 2, 9)] == [None, None, 8, 1]
    assert limiter.check("user", 1, T0 + timedelta(seconds=10)) is None


# ---------------------------------------------------------------- body size


def test_json_bodies_are_limited_to_max_json_bytes(app, make_actor, categories, clock):
    app.config["MAX_JSON_BYTES"] = 2000
    worker = make_actor("grid_worker", "g111")
    body = {"category_code": "01001", "description": "长" * 1500, "lat": 40.005, "lon": 110.005}
    response = worker.post("/api/v1/events", json=body)
    assert response.status_code == 413 and response.json["code"] == "payload_too_large"
    assert worker.get("/api/v1/events").json["total"] == 0


def test_chunked_bodies_without_a_length_are_limited_too(app, make_actor, categories, clock):
    app.config["MAX_JSON_BYTES"] = 2000
    worker = make_actor("grid_worker", "g111")
    payload = json.dumps({"category_code": "01001", "description": "长" * 1500, "lat": 40.005, "lon": 110.005}).encode()
    response = worker.client.post(
        "/api/v1/events", input_stream=io.BytesIO(payload),
        headers={**worker.headers, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # what gunicorn and the dev server set for chunked bodies
    )
    assert response.status_code == 413 and response.json["code"] == "payload_too_large"
    small = json.dumps({"category_code": "01001", "description": "短", "lat": 40.005, "lon": 110.005}).encode()
    response = worker.client.post(
        "/api/v1/events", input_stream=io.BytesIO(small),
        headers={**worker.headers, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 201, response.json


def test_photo_uploads_keep_the_larger_limit(app, make_actor, categories, clock):
    app.config.update(MAX_JSON_BYTES=1000, MAX_CONTENT_LENGTH=8000)
    worker = make_actor("grid_worker", "g111")
    event_id = worker.post("/api/v1/events", json={"category_code": "01001", "description": "x", "lat": 40.005, "lon": 110.005}).json["id"]
    small = photo("PNG", "a", pad=3000)  # larger than MAX_JSON_BYTES, smaller than MAX_CONTENT_LENGTH
    ok = worker.post(f"/api/v1/events/{event_id}/attachments", data={"kind": "before", "file": (io.BytesIO(small), "a.png")},
                     content_type="multipart/form-data")
    assert ok.status_code == 201, ok.json
    big = b"\x89PNG\r\n\x1a\n" + b"\1" * 9000
    too_big = worker.post(f"/api/v1/events/{event_id}/attachments", data={"kind": "before", "file": (io.BytesIO(big), "b.png")},
                          content_type="multipart/form-data")
    assert too_big.status_code == 413 and too_big.json["code"] == "payload_too_large"
