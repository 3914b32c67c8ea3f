"""How long anything waits on the database: a web request never longer than its bounds (connect timeout,
statement_timeout, lock_timeout, SQLite's busy timeout, the pool's wait, and a cut connection when the
server itself is frozen), then 503 `database_unavailable` with Retry-After; jobs and CLI commands get
bounds of their own (config.py: DB_*, SQLITE_*_TIMEOUT_MS)."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress

import pytest
import sqlalchemy as sa
from flask import request

from config import TestConfig
from grid_service import create_app
from grid_service.infra.db import db

SHORT = {
    "DB_STATEMENT_TIMEOUT_MS": 300, "DB_LOCK_TIMEOUT_MS": 200,
    "DB_JOB_STATEMENT_TIMEOUT_MS": 0, "DB_JOB_LOCK_TIMEOUT_MS": 1500,
    "SQLITE_BUSY_TIMEOUT_MS": 200, "SQLITE_JOB_BUSY_TIMEOUT_MS": 1500,
    "DB_CONNECT_TIMEOUT_SECONDS": 2, "DB_POOL_TIMEOUT_SECONDS": 1,
}


@pytest.fixture
def short_bounds(monkeypatch):
    """Requested before `app`: bounds of a fraction of a second, so that no test waits long."""
    for name, value in SHORT.items():
        monkeypatch.setattr(TestConfig, name, value, raising=False)


def add_sql_route(app) -> None:
    """GET /test/sql?sql=… runs one statement in a web request (a route of the tests only)."""
    def run_sql():
        rows = db.session.execute(sa.text(request.args["sql"])).all()
        if request.args.get("then"):
            request.environ["test.then"]()
            rows = db.session.execute(sa.text(request.args["then"])).all()
        return {"value": str(rows[0][0]) if rows else None}

    app.add_url_rule("/test/sql", view_func=run_sql)


@pytest.fixture
def sql_app(short_bounds, app):
    add_sql_route(app)
    return app


def answered_within(seconds: float, call: Callable[[], object], on_timeout: Callable[[], None] = lambda: None):
    """`call()`'s result and how long it took; fails when it takes longer than `seconds` (then
    `on_timeout` releases whatever it waits for, so that the test ends)."""
    outcome: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            outcome["result"] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        on_timeout()
        thread.join(30)
        pytest.fail(f"still waiting after {seconds} s (it took {outcome.get('seconds', 'more than 30')} s in all)")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"], outcome["seconds"]


def unavailable(response) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.json["code"] == "database_unavailable" and response.headers["Retry-After"] == "2"


# ---------------------------------------------------------------- web requests and jobs


def test_a_web_request_has_the_web_bounds_and_a_job_its_own(sql_app, client, backend):
    def in_request(sql: str) -> str:
        response = client.get("/test/sql", query_string={"sql": sql})
        assert response.status_code == 200, response.json
        return response.json["value"]

    def in_job(sql: str) -> str:  # the scheduler's jobs and the CLI run outside any request
        with sql_app.app_context():
            value = str(db.session.execute(sa.text(sql)).scalar())
            db.session.remove()
        return value

    if backend == "sqlite":
        assert (in_request("PRAGMA busy_timeout"), in_job("PRAGMA busy_timeout")) == ("200", "1500")
    else:
        assert (in_request("SHOW statement_timeout"), in_request("SHOW lock_timeout")) == ("300ms", "200ms")
        assert (in_job("SHOW statement_timeout"), in_job("SHOW lock_timeout")) == ("0", "1500ms")
        # And back: a connection a job used is set for the next request again.
        assert in_request("SHOW statement_timeout") == "300ms"


def test_a_statement_longer_than_the_web_timeout_answers_503_and_a_job_may_run_it(sql_app, client, backend):
    if backend != "postgresql":
        pytest.skip("SQLite has no statement timeout: its waits are for the write lock (busy timeout)")
    started = time.monotonic()
    unavailable(client.get("/test/sql", query_string={"sql": "SELECT pg_sleep(3)"}))
    assert time.monotonic() - started < 2
    with sql_app.app_context():  # a job's statements are not limited (DB_JOB_STATEMENT_TIMEOUT_MS=0)
        assert db.session.execute(sa.text("SELECT pg_sleep(0.5), 1")).one()[1] == 1
        db.session.remove()


def test_a_request_waiting_for_a_lock_answers_503_within_the_lock_timeout(short_bounds, app, make_actor, categories, backend):
    admin = make_actor("admin", "d")
    holder = db.engine.connect()
    if backend == "sqlite":
        holder.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite's one write lock, held by someone else
    else:
        holder.begin()
        holder.exec_driver_sql("LOCK TABLE hotline_category_map IN ACCESS EXCLUSIVE MODE")
    try:
        response, seconds = answered_within(
            5, lambda: admin.put("/api/v1/hotline/category-map/HJ-01", json={"category_code": "01001"}), holder.rollback)
    finally:
        holder.rollback()
        holder.close()
    unavailable(response)
    assert seconds < 1.5  # the lock wait is 0.2 s; the rest is the request itself


def test_a_request_finding_no_free_connection_answers_503_within_the_pool_timeout(monkeypatch, short_bounds, backend,
                                                                                 database_url, tmp_path):
    monkeypatch.setattr(TestConfig, "SQLALCHEMY_ENGINE_OPTIONS", {"pool_size": 1, "max_overflow": 0})
    monkeypatch.setattr(TestConfig, "SQLALCHEMY_DATABASE_URI", database_url)
    app = create_app(TestConfig)
    add_sql_route(app)
    with app.app_context():
        holder = db.engine.connect()  # the pool's only connection
    try:
        response, seconds = answered_within(5, lambda: app.test_client().get("/test/sql?sql=SELECT 1"), holder.close)
    finally:
        holder.close()
        with app.app_context():
            db.engine.dispose()
    unavailable(response)
    assert seconds < 3


# ---------------------------------------------------------------- a server that does not answer


def test_connecting_to_a_server_that_never_answers_gives_up_at_the_connect_timeout(monkeypatch, short_bounds):
    """A listening socket that never speaks: what a stopped (SIGSTOP) PostgreSQL looks like to a new connection."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        url = f"postgresql+psycopg://grid@127.0.0.1:{silent.getsockname()[1]}/grid"
        monkeypatch.setattr(TestConfig, "SQLALCHEMY_DATABASE_URI", url)
        app = create_app(TestConfig)
        # In the URL itself, so every pool opened on it (the rate counters') has the bound too.
        assert sa.make_url(app.config["SQLALCHEMY_DATABASE_URI"]).query["connect_timeout"] == "2"
        try:
            response, seconds = answered_within(6, lambda: app.test_client().get(
                "/api/v1/me", headers={"Authorization": "Bearer some-token"}), silent.close)
        finally:
            with app.app_context():
                db.engine.dispose()
    unavailable(response)
    assert seconds < 4


class FreezableRelay:
    """A TCP relay to PostgreSQL that can freeze as a server stopped with SIGSTOP does: its connections
    stay open and take what is sent, new ones queue in the kernel, and nothing is answered."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.port = self.listener.getsockname()[1]
        self.thawed = threading.Event()
        self.thawed.set()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()

    def close(self) -> None:
        self.thaw()
        for sock in [self.listener, *self.sockets]:
            with suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        with suppress(OSError):
            while True:
                self.thawed.wait()
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
                self.sockets += [client, server]
                for source, sink in ((client, server), (server, client)):
                    threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                self.thawed.wait()
                sink.sendall(data)
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def frozen_pg(monkeypatch, short_bounds, backend, database_url):
    """An app on PostgreSQL through a FreezableRelay, with /test/sql; (app, relay)."""
    if backend != "postgresql":
        pytest.skip("a frozen server: PostgreSQL only (SQLite has no server)")
    url = sa.make_url(database_url)
    relay = FreezableRelay(url.host or "127.0.0.1", url.port or 5432)
    monkeypatch.setattr(TestConfig, "SQLALCHEMY_DATABASE_URI",
                        url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False))
    app = create_app(TestConfig)
    add_sql_route(app)
    try:
        yield app, relay  # each request in an app context of its own, as in a server
    finally:
        relay.close()
        with app.app_context():
            db.engine.dispose()


def test_a_server_freezing_during_a_request_answers_503_a_second_after_the_statement_timeout(frozen_pg):
    app, relay = frozen_pg
    client = app.test_client()
    assert client.get("/test/sql?sql=SELECT 1").json == {"value": "1"}
    response, seconds = answered_within(6, lambda: client.get(
        "/test/sql?sql=SELECT 1&then=SELECT 2", environ_base={"test.then": relay.freeze}), relay.thaw)
    unavailable(response)
    assert seconds < 3  # 0.3 s of statement_timeout the server cannot enforce, then 1 s of grace
    relay.thaw()
    assert client.get("/test/sql?sql=SELECT 3").json == {"value": "3"}  # the pool recovers


def test_a_request_after_the_server_froze_answers_503_within_the_ping_and_connect_timeouts(frozen_pg):
    app, relay = frozen_pg
    client = app.test_client()
    assert client.get("/test/sql?sql=SELECT 1").json == {"value": "1"}  # a connection waits in the pool
    relay.freeze()
    response, seconds = answered_within(8, lambda: client.get("/test/sql?sql=SELECT 2"), relay.thaw)
    unavailable(response)
    assert seconds < 5.5  # the pool's ping is cut after 2 s, a new connection gives up after 2 s
    relay.thaw()
    assert client.get("/test/sql?sql=SELECT 3").json == {"value": "3"}
