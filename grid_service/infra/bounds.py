"""Bounds on every wait for the database, so that a stuck database answers 503 within seconds
(config.py: DB_* and SQLITE_*_TIMEOUT_MS).

A PostgreSQL URL carries its connect timeout (every pool opened on it is bounded too); the pool's
wait for a free connection is bounded; each connection is set, as it is taken from the pool, for
whoever takes it — a web request (short statement, lock and busy timeouts) or a job or CLI command
(their own, longer ones). A server that is itself frozen enforces none of its own timeouts: a
watchdog cuts a web request's call still waiting a second past its statement timeout.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa
from flask import Flask, has_request_context

logger = logging.getLogger(__name__)


def engine_options(app: Flask) -> None:
    """Put the connect and pool bounds into the app's database URL and engine options (before the engine exists)."""
    options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    url = sa.make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:"):
        options.setdefault("pool_timeout", int(app.config.get("DB_POOL_TIMEOUT_SECONDS", 5)))
    if url.get_backend_name() != "sqlite":
        # A server can drop idle connections; a file database cannot.
        options.setdefault("pool_pre_ping", True)
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        # In the URL, not the engine's arguments: every pool opened on it (the rate counters') is bounded too.
        url = url.update_query_dict({"connect_timeout": str(int(app.config.get("DB_CONNECT_TIMEOUT_SECONDS", 3)))})
        app.config["SQLALCHEMY_DATABASE_URI"] = url.render_as_string(hide_password=False)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options


def configure_engine(app: Flask, engine: sa.Engine) -> None:
    """SQLite's pragmas, and the bounds on every wait (config.py: DB_* and SQLITE_*_TIMEOUT_MS).

    Web requests and everything else (the scheduler's jobs, CLI commands) have bounds of their own:
    a connection is set for whichever takes it from the pool, which costs a round trip only when a
    connection changes hands between the two (never in a web worker, never in the scheduler).
    """
    config = app.config
    if engine.dialect.name not in ("sqlite", "postgresql"):
        return  # the two databases the service runs on
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        bounds = {"web": f"PRAGMA busy_timeout={int(config.get('SQLITE_BUSY_TIMEOUT_MS', 5_000))}",
                  "job": f"PRAGMA busy_timeout={int(config.get('SQLITE_JOB_BUSY_TIMEOUT_MS', 30_000))}"}
    else:
        bounds = {mode: f"SET statement_timeout = {int(config.get(prefix + 'STATEMENT_TIMEOUT_MS', 0))}; "
                        f"SET lock_timeout = {int(config.get(prefix + 'LOCK_TIMEOUT_MS', 0))}"
                  for mode, prefix in (("web", "DB_"), ("job", "DB_JOB_"))}
    synchronous = config.get("SQLITE_SYNCHRONOUS", "FULL")
    statement_ms = int(config.get("DB_STATEMENT_TIMEOUT_MS", 0))
    # Each call of a web request on a server database is cut at its deadline, should the server be frozen.
    watched = None if sqlite or statement_ms <= 0 else WebCallWatch(
        engine, call_seconds=statement_ms / 1000 + 1, ping_seconds=int(config.get("DB_CONNECT_TIMEOUT_SECONDS", 3)))

    def set_bounds(dbapi_connection, record) -> None:
        mode = "web" if has_request_context() else "job"
        if record.info.get("bounds") != mode:
            if watched is not None:
                watched.mark(dbapi_connection, web=mode == "web")
            with watched.watching(dbapi_connection, "call") if watched is not None else nullcontext():
                cursor = dbapi_connection.cursor()
                cursor.execute(bounds[mode])
                cursor.close()
                if not sqlite:
                    dbapi_connection.commit()  # a SET rolled back with the request's transaction would not hold
            record.info["bounds"] = mode

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, record):
        if sqlite:
            cursor = dbapi_connection.cursor()
            if engine.url.database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
        set_bounds(dbapi_connection, record)

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy):
        set_bounds(dbapi_connection, record)


# ---------------------------------------------------------------- a frozen database server


class WaitWatchdog:
    """Cuts the connection of a database call still waiting at its deadline.

    statement_timeout and lock_timeout are the server's: a server that is itself frozen (stopped, a
    stalled disk, a paused VM) enforces neither, and its kernel keeps the connection open, so a call
    would wait for as long as the freeze lasts. At the deadline the call's socket is shut down
    instead: the driver sees a lost connection, the pool discards it, the request answers 503.
    One thread per process, started on first use (after a fork too). It wakes at the earliest
    deadline armed when it fell asleep (later ones wait for that wake-up), or sleeps until
    something is armed: at most one wake-up per deadline's length, however many calls are watched.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a child has no thread yet, and maybe a held lock

    def _reset(self) -> None:
        self._armed: dict[int, tuple[float, int]] = {}  # id(call) -> (deadline, socket's file descriptor)
        self._changed = threading.Condition()
        self._pid = 0
        self._asleep_until: float | None = None  # None: until something is armed

    @contextmanager
    def watch(self, fileno: int, seconds: float) -> Iterator[None]:
        call = object()
        with self._changed:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="db-wait-watchdog", daemon=True).start()
            deadline = time.monotonic() + seconds
            if self._asleep_until is None or deadline < self._asleep_until:
                self._changed.notify()
            self._armed[id(call)] = (deadline, fileno)
        try:
            yield
        finally:
            with self._changed:
                self._armed.pop(id(call), None)

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for key, (deadline, fileno) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[key]
                        _cut(fileno)
                self._asleep_until = min((deadline for deadline, _ in self._armed.values()), default=None)
                self._changed.wait(None if self._asleep_until is None else self._asleep_until - now)


def _cut(fileno: int) -> None:
    logger.error("the database has not answered a web request's call in time: its connection is cut")
    try:
        with socket.socket(fileno=os.dup(fileno)) as sock:  # a duplicate: the driver still owns the original
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        logger.warning("cutting a database connection failed", exc_info=True)


class WebCallWatch:
    """Watches every call on the connections web requests hold (statements, commit, rollback, the
    pool's ping): a statement is cut a second after its statement_timeout, a ping after the connect
    timeout. The connections of jobs and CLI commands are not watched."""

    watchdog = WaitWatchdog()  # one per process

    def __init__(self, engine: sa.Engine, *, call_seconds: float, ping_seconds: float) -> None:
        self.seconds = {"call": call_seconds, "ping": ping_seconds}
        self._web: weakref.WeakSet = weakref.WeakSet()
        dialect = engine.dialect
        for name in ("do_execute", "do_executemany", "do_execute_no_params"):
            setattr(dialect, name, self._wrap(getattr(dialect, name), "call", lambda cursor: cursor.connection))
        for name in ("do_commit", "do_rollback"):
            setattr(dialect, name, self._wrap(getattr(dialect, name), "call", _dbapi))
        dialect.do_ping = self._wrap(dialect.do_ping, "ping", _dbapi)

    def mark(self, dbapi_connection, *, web: bool) -> None:
        (self._web.add if web else self._web.discard)(dbapi_connection)

    @contextmanager
    def watching(self, dbapi_connection, kind: str) -> Iterator[None]:
        if dbapi_connection not in self._web or dbapi_connection.closed:
            yield
            return
        with self.watchdog.watch(dbapi_connection.fileno(), self.seconds[kind]):
            yield

    def _wrap(self, call: Callable[..., Any], kind: str, connection_of: Callable[[Any], Any]) -> Callable[..., Any]:
        def watched(first, *args, **kwargs):
            with self.watching(connection_of(first), kind):
                return call(first, *args, **kwargs)
        return watched


def _dbapi(connection: Any) -> Any:
    """The driver's connection, also behind the pool's proxy (which the pool's own rollback passes)."""
    return getattr(connection, "dbapi_connection", connection)
