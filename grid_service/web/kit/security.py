"""Rate limits, CORS and request-body limits: the HTTP edge's defences (docs/security.md).

Rate limits count hits in windows shared by every worker process: in a `rate_counters` table (one
atomic upsert reserves a chunk of hits, on a connection that skips the durable flush) — in the
service's PostgreSQL database, or, for a SQLite service, in a file of its own beside the main one, so
that counting never waits for the main database's write lock —, or per process in memory
(`RATE_LIMIT_STORAGE=memory`, one process only). Nothing else needs installing. Over the limit is
429 with `Retry-After` and the JSON error payload. A failing counter store never switches the limits
off: each process counts in memory until the store answers again, logs it at ERROR, and /healthz says so.
"""
from __future__ import annotations

import functools
import io
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from ...infra.errors import RateLimited

logger = logging.getLogger(__name__)

# Settings, their defaults, and how the environment spells them (the variable has the same name).
# Values already in app.config win; documented in docs/security.md.
SETTINGS: dict[str, tuple[Callable[[str], Any], Any]] = {
    "RATE_LIMITS_ENABLED": (lambda v: v.strip().lower() in {"1", "true", "yes", "on"}, True),
    "RATE_LIMIT_STORAGE": (str, "database"),
    "RATE_LIMIT_STORAGE_URL": (str, ""),
    "RATE_LIMIT_USER": (str, "600/minute"),
    "RATE_LIMIT_CLIENT": (str, "1200/minute"),
    "RATE_LIMIT_LOGIN": (str, "30/minute"),
    "RATE_LIMIT_REFRESH": (str, "300/minute"),
    "CORS_ORIGINS": (str, ""),
    "CORS_MAX_AGE": (int, 600),
    "MAX_JSON_BYTES": (int, 1024 * 1024),
    "LOGIN_MAX_FAILURES": (int, 5),
    "LOGIN_LOCKOUT_MINUTES": (int, 15),
    "ACCESS_TOKEN_MINUTES": (int, 15),
    "SESSION_IDLE_MINUTES": (int, 30),
    "SESSION_MAX_HOURS": (int, 12),
    "ENROL_TOKEN_MINUTES": (int, 10),
    "MFA_ROLES": (str, "supervisor,admin"),
    "TOTP_ISSUER": (str, "网格化服务管理平台"),
    "PASSWORD_MIN_LENGTH": (int, 10),
    "ARGON2_TIME_COST": (int, 2),
    "ARGON2_MEMORY_KIB": (int, 19456),
    "ARGON2_PARALLELISM": (int, 1),
}

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}  # by the unit's first letter
_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d*)\s*(seconds?|minutes?|hours?|days?|[smhd])\s*$")
MAX_PERIOD = 86400
# A worker takes up to this many hits from the shared counter in one upsert and spends them locally,
# so a busy user costs one database write per chunk of requests, not one per request. A chunk is
# 1/60 of the limit (600/minute: 10) up to MAX_CHUNK. The price: each worker may hold up to a
# chunk - 1 reserved hits unused when a window ends, so a user can be refused that many requests
# early (at most 1/60 of the limit per worker).
MAX_CHUNK = 50


@dataclass(frozen=True)
class Rate:
    """At most `hits` in a window of `seconds`."""

    hits: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.hits}/{self.seconds}s"

    @property
    def chunk(self) -> int:
        """Hits a worker reserves from the shared counter at once (1 for small limits: exact)."""
        return max(1, min(MAX_CHUNK, self.hits // 60))


def parse_rates(text: str) -> tuple[Rate, ...]:
    """"600/minute; 10000/hour" → rates; "" or "off" → no limit. ValueError on anything else."""
    if text.strip().lower() in ("", "off", "none"):
        return ()
    rates = []
    for part in re.split(r"[;,]", text):
        if not part.strip():
            continue
        match = _RATE.match(part.lower())
        if match is None:
            raise ValueError(f"not a rate: {part.strip()!r} (write e.g. 600/minute, 20/30s)")
        hits, multiple, unit = int(match.group(1)), int(match.group(2) or 1), _PERIODS[match.group(3)[0]]
        seconds = multiple * unit
        if hits < 1 or not 1 <= seconds <= MAX_PERIOD:
            raise ValueError(f"rate out of range: {part.strip()!r} (1 hit or more per 1 s … 1 day)")
        rates.append(Rate(hits, seconds))
    return tuple(rates)


def epoch_seconds(now: datetime) -> int:
    return math.floor(now.timestamp())


# ---------------------------------------------------------------- storage

# What a failing counter store raises: the database's errors, and the file system's (a sidecar file
# that cannot be created or written).
STORE_ERRORS: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError, OSError)
# The row /healthz rewrites to see that the store takes writes (its window is one second).
PROBE_KEY = "healthz:probe"
# A SQLite counter store waits this long for its own lock; its writes take microseconds, so
# only a broken store (or a disk that has stopped) ever waits this long.
STORE_BUSY_TIMEOUT_MS = 2000


class MemoryStorage:
    """Windows in this process only: for tests and a single-process server."""

    where = "memory"

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def incr(self, key: str, now: int, period: int, amount: int = 1) -> tuple[int, int]:
        """Count `amount` hits; (hits in the live window, window start)."""
        with self._lock:
            hits, start = self._windows.get(key, (0, now))
            if start <= now - period:
                hits, start = 0, now
            self._windows[key] = (hits + amount, start)
            return hits + amount, start

    def peek(self, key: str) -> tuple[int, int] | None:
        with self._lock:
            return self._windows.get(key)

    def clear(self, key: str) -> None:
        with self._lock:
            self._windows.pop(key, None)

    def probe(self, now: int) -> None:
        """Memory always answers."""


_UPSERT = sa.text(
    "INSERT INTO rate_counters (key, window_start, hits) VALUES (:key, :now, :amount) "
    "ON CONFLICT (key) DO UPDATE SET "
    "hits = CASE WHEN rate_counters.window_start > :expired THEN rate_counters.hits + :amount ELSE :amount END, "
    "window_start = CASE WHEN rate_counters.window_start > :expired THEN rate_counters.window_start ELSE :now END "
    "RETURNING hits, window_start"
)
_PEEK = sa.text("SELECT hits, window_start FROM rate_counters WHERE key = :key")
_CLEAR = sa.text("DELETE FROM rate_counters WHERE key = :key")
_PRUNE = sa.text("DELETE FROM rate_counters WHERE window_start < :before")


def sidecar_url(main: sa.URL) -> sa.URL:
    """Where a SQLite service keeps its counters: a file beside its database (grid.db → grid.counters.db)."""
    path = Path(main.database or "")
    return main.set(database=str(path.with_name(f"{path.stem}.counters{path.suffix}")))


def _same_sqlite_file(a: sa.URL, b: sa.URL) -> bool:
    return (a.get_backend_name() == b.get_backend_name() == "sqlite" and bool(a.database) and bool(b.database)
            and os.path.realpath(a.database) == os.path.realpath(b.database))


class DatabaseStorage:
    """Windows in a `rate_counters` table: one atomic upsert per chunk of hits, shared by every process.

    `where` says which database: `database` (the service's own PostgreSQL, table under migrations),
    `sidecar` (a SQLite service: a file of its own beside the main one, so that a counter never waits
    for the main database's write lock — which the request being counted may hold itself), or
    `separate` (RATE_LIMIT_STORAGE_URL). The table of a sidecar or separate store is created on first use.

    The counters use their own small connection pool, in autocommit mode and set to skip the durable
    flush (SQLite synchronous=NORMAL under WAL, PostgreSQL synchronous_commit=off): a crash may forget
    the last hits, which only resets a window. No pre-ping either: a dropped connection fails one
    count, which the limiter then makes in memory (RateLimiter). The pool is created lazily in each
    process (safe across gunicorn's fork) and disposed together with the app's engine.
    """

    def __init__(self, main_engine_getter: Callable[[], sa.Engine], url: str | sa.URL = "", *,
                 where: str = "database") -> None:
        self._main = main_engine_getter
        self._url = url
        self.where = where
        self._engine: sa.Engine | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def engine(self) -> sa.Engine:
        if self._engine is None or self._pid != os.getpid():
            with self._lock:
                if self._engine is None or self._pid != os.getpid():
                    self._engine, self._pid = self._make_engine(), os.getpid()
        return self._engine

    def _make_engine(self) -> sa.Engine:
        main = self._main()
        url = sa.make_url(self._url) if self._url else main.url
        if url.get_backend_name() == "sqlite":
            if url.database:
                os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
            engine = sa.create_engine(url, pool_size=2, max_overflow=8, isolation_level="AUTOCOMMIT",
                                      pool_reset_on_return=None)

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
                cursor = dbapi_connection.cursor()
                cursor.execute(f"PRAGMA busy_timeout={STORE_BUSY_TIMEOUT_MS}")
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()
        else:
            engine = sa.create_engine(url, pool_size=2, max_overflow=8, isolation_level="AUTOCOMMIT",
                                      pool_reset_on_return=None, connect_args={"options": "-c synchronous_commit=off"})
        if self._url:
            try:
                _create_table(engine)
            except BaseException:
                engine.dispose()
                raise

        @sa.event.listens_for(main, "engine_disposed")
        def _dispose_with_main(_engine):
            self.dispose()

        return engine

    def dispose(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
            self._engine = None

    def incr(self, key: str, now: int, period: int, amount: int = 1) -> tuple[int, int]:
        """Count `amount` hits; (hits in the live window, window start)."""
        # One statement is atomic on its own: the pool's autocommit mode saves BEGIN and COMMIT.
        with self.engine().connect() as conn:
            hits, start = conn.execute(_UPSERT, {"key": key, "now": now, "expired": now - period, "amount": amount}).one()
            if random.random() < 0.001:  # noqa: S311 - housekeeping, not security
                conn.execute(_PRUNE, {"before": now - MAX_PERIOD})
        return int(hits), int(start)

    def peek(self, key: str) -> tuple[int, int] | None:
        with self.engine().connect() as conn:
            row = conn.execute(_PEEK, {"key": key}).first()
        return (int(row[0]), int(row[1])) if row else None

    def clear(self, key: str) -> None:
        with self.engine().connect() as conn:
            conn.execute(_CLEAR, {"key": key})

    def probe(self, now: int) -> None:
        """One write, as a count does: raises what a failing store raises."""
        self.incr(PROBE_KEY, now, 1)


def _create_table(engine: sa.Engine) -> None:
    """`rate_counters` in a store the migrations do not manage; every worker may try at once."""
    from ...auth.models import RateCounter

    table = RateCounter.__table__
    with engine.connect() as conn:
        conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
        for index in table.indexes:
            conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))


# ---------------------------------------------------------------- the limiter


@dataclass
class _Reserve:
    """What this worker holds of one shared window: hits still to spend, or a block until its end."""

    ends_at: int
    left: int
    blocked: bool


# After the shared store fails, this process counts in its own memory for this long before it asks
# the store again: a store that times out must not add its timeout to every request.
STORE_RETRY_SECONDS = 5.0
# /healthz reports the store `failing` while a count failed this recently (or its probe fails).
RECENT_FAILURE_SECONDS = 60
ERROR_CHARS = 160


def _describe(error: BaseException) -> str:
    """`OperationalError: database is locked`: the driver's error and its first line, cut to fit /healthz."""
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    text = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS - 1] + "…"


class RateLimiter:
    """Named limits ("user", "client", "login", "refresh") over one shared counter store.

    It never fails open. When the store fails, this process counts in its own memory instead, so
    every limit still holds per worker process (with N workers, at most N × the limit in all) while
    the store is down; the failure is logged at ERROR (once a minute) and /healthz reports it. After
    STORE_RETRY_SECONDS, or when a /healthz probe succeeds, counting is shared again. The limiter is
    also the login lockout's AttemptStore, with the same fallback.
    """

    def __init__(self, storage: MemoryStorage | DatabaseStorage, limits: dict[str, tuple[Rate, ...]], *,
                 enabled: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.storage, self.limits, self.enabled = storage, limits, enabled
        self.fallback = MemoryStorage()
        self._clock = clock
        self._reserves: dict[str, _Reserve] = {}
        self._lock = threading.Lock()
        self._down_until = 0.0  # on self._clock: until then, count in self.fallback
        self._failed_at: float | None = None  # on self._clock
        self._logged_at: float | None = None
        self.failures = 0  # counts (and probes) the store failed, in this process
        self.last_failure_at: datetime | None = None  # the instant of the request it failed in
        self.last_error: str | None = None

    def check(self, kind: str, ident: str | int, now: datetime) -> int | None:
        """Count one hit of `ident` against the `kind` limits; seconds to wait when over, else None."""
        rates = self.limits.get(kind, ())
        if not self.enabled or not rates:
            return None
        at = epoch_seconds(now)
        wait = None
        for rate in rates:
            over = self._hit(f"{kind}:{ident}:{rate.seconds}", rate, at)
            if over is not None:
                wait = max(wait or 0, over)
        return wait

    def _hit(self, key: str, rate: Rate, at: int) -> int | None:
        with self._lock:
            reserve = self._reserves.get(key)
            if reserve is not None and at < reserve.ends_at:
                if reserve.blocked:
                    return reserve.ends_at - at
                if reserve.left > 0:
                    reserve.left -= 1
                    return None
        chunk = rate.chunk
        hits, start = self.incr(key, at, rate.seconds, chunk)
        granted = min(chunk, rate.hits - (hits - chunk))
        ends_at = start + rate.seconds
        with self._lock:
            if len(self._reserves) > 10_000:
                self._reserves = {k: r for k, r in self._reserves.items() if r.ends_at > at}
            self._reserves[key] = _Reserve(ends_at, max(0, granted - 1), granted <= 0)
        return ends_at - at if granted <= 0 else None

    def enforce(self, kind: str, ident: str | int, now: datetime) -> None:
        """Raise RateLimited when `ident` is over a `kind` limit."""
        wait = self.check(kind, ident, now)
        if wait is not None:
            raise RateLimited(f"请求过于频繁，请 {max(1, wait)} 秒后再试", retry_after=wait)

    # -- the counters, shared while the store answers (also the login lockout's AttemptStore)

    def incr(self, key: str, now: int, period: int, amount: int = 1) -> tuple[int, int]:
        """Count `amount` hits in the shared store, else in this process; (hits in the window, its start)."""
        return self._counted(lambda store: store.incr(key, now, period, amount), now)

    def peek(self, key: str) -> tuple[int, int] | None:
        return self._counted(lambda store: store.peek(key), None)

    def clear(self, key: str) -> None:
        self._counted(lambda store: store.clear(key), None)

    def _counted(self, operation: Callable[[MemoryStorage | DatabaseStorage], Any], now: int | None) -> Any:
        if self._clock() >= self._down_until:
            try:
                result = operation(self.storage)
            except STORE_ERRORS as error:
                self._store_failed(error, now)
            else:
                self._store_answered()
                return result
        return operation(self.fallback)

    def _store_failed(self, error: BaseException, now: int | None) -> None:
        clock = self._clock()
        with self._lock:
            self.failures += 1
            self.last_error, self._failed_at = _describe(error), clock
            if now is not None:  # peek and clear do not know the instant
                self.last_failure_at = datetime.fromtimestamp(now, UTC)
            self._down_until = clock + STORE_RETRY_SECONDS
            log = self._logged_at is None or clock - self._logged_at > 60
            if log:
                self._logged_at = clock
        if log:
            logger.error("rate-limit counter store (%s) failed: counting in this worker process instead, so limits "
                         "hold per worker until it answers again", self.storage.where, exc_info=error)

    def _store_answered(self) -> None:
        if self._down_until:
            with self._lock:
                was_down, self._down_until = self._down_until, 0.0
            if was_down:
                logger.warning("rate-limit counter store (%s) answers again: counts are shared again", self.storage.where)

    # -- health

    def health(self, now: datetime) -> dict[str, Any]:
        """For /healthz: the store, whether it takes a write now (one probe), this process's last failure."""
        try:
            self.storage.probe(epoch_seconds(now))
        except STORE_ERRORS as error:
            self._store_failed(error, epoch_seconds(now))
        else:
            self._store_answered()
        recent = self._failed_at is not None and self._clock() - self._failed_at < RECENT_FAILURE_SECONDS
        shared = self.storage.where != "memory" and self._clock() >= self._down_until
        return {"enabled": bool(self.enabled and any(self.limits.values())), "store": self.storage.where,
                "status": "failing" if recent else "ok", "counting": "shared" if shared else "per_process",
                "failures": self.failures, "last_failure_at": self.last_failure_at,
                "error": self.last_error if recent else None}


def limiter() -> RateLimiter:
    return current_app.extensions["rate_limiter"]


def enforce_rate_limit(kind: str, ident: str | int, now: datetime) -> None:
    """For views: 429 when `ident` (a user id, an API client id, an IP address) is over its `kind` limit."""
    limiter().enforce(kind, ident, now)


def build_limiter(app: Flask) -> RateLimiter:
    """The limiter app.config describes (tests rebuild it after changing the settings)."""
    from ...infra.db import db

    config = app.config
    limits = {kind: parse_rates(config[f"RATE_LIMIT_{kind.upper()}"]) for kind in ("user", "client", "login", "refresh")}
    backend = str(config["RATE_LIMIT_STORAGE"]).strip().lower()
    storage: MemoryStorage | DatabaseStorage
    if backend == "memory":
        storage = MemoryStorage()
    elif backend == "database":
        main = sa.make_url(config["SQLALCHEMY_DATABASE_URI"])
        separate = str(config["RATE_LIMIT_STORAGE_URL"] or "").strip()
        url = sa.make_url(separate) if separate else main
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            # An in-memory database lives in one process and on one connection: count in memory.
            storage = MemoryStorage()
        elif separate:
            if _same_sqlite_file(url, main):
                raise ValueError("RATE_LIMIT_STORAGE_URL must not be the service's own SQLite file: a request holding "
                                 "its write lock would wait for itself (leave it empty for the sidecar file)")
            storage = DatabaseStorage(lambda: db.engine, separate, where="separate")
        elif main.get_backend_name() == "sqlite":
            storage = DatabaseStorage(lambda: db.engine, sidecar_url(main), where="sidecar")
        else:
            storage = DatabaseStorage(lambda: db.engine, where="database")
    else:
        raise ValueError(f"RATE_LIMIT_STORAGE must be 'database' or 'memory', not {backend!r}")
    return RateLimiter(storage, limits, enabled=bool(config["RATE_LIMITS_ENABLED"]))


def _rate_limited_response(error: RateLimited):
    response = jsonify(error.payload())
    response.status_code = error.status
    response.headers["Retry-After"] = str(error.retry_after)
    return response


# ---------------------------------------------------------------- CORS

CORS_METHODS = "GET, POST, PUT, PATCH, DELETE"
CORS_HEADERS = ("authorization", "content-type", "accept", "accept-language")
CORS_EXPOSE = "Retry-After, Location, Content-Disposition"


@functools.lru_cache(maxsize=8)
def parse_origins(text: str) -> frozenset[str]:
    """Comma- or space-separated origins (scheme://host[:port]); "*" allows any origin."""
    return frozenset(o.strip().rstrip("/") for o in re.split(r"[,\s]+", text or "") if o.strip())


def _cors_origins() -> frozenset[str]:
    return parse_origins(str(current_app.config["CORS_ORIGINS"] or ""))


def _allowed_origin(origins: frozenset[str]) -> str | None:
    origin = request.headers.get("Origin")
    if not origin or not origins:
        return None
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


def _answer_preflight():
    """A CORS preflight from an allowed origin gets 204 and the CORS headers; any other falls through."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    allowed = _allowed_origin(_cors_origins())
    if allowed is None:
        return None  # Flask's own OPTIONS answer, without CORS headers: the browser refuses
    asked = [h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")]
    response = current_app.response_class(status=204)
    response.headers["Access-Control-Allow-Origin"] = allowed
    response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
    response.headers["Access-Control-Allow-Headers"] = ", ".join(h for h in CORS_HEADERS if h in asked) or "authorization, content-type"
    response.headers["Access-Control-Max-Age"] = str(int(current_app.config["CORS_MAX_AGE"]))
    response.vary.add("Origin")
    return response


def _cors_headers(response):
    origins = _cors_origins()
    if not origins:
        return response  # closed: no response carries CORS headers, so browsers refuse cross-origin reads
    response.vary.add("Origin")
    allowed = _allowed_origin(origins)
    if allowed is not None and "Access-Control-Allow-Origin" not in response.headers:
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
    return response


# ---------------------------------------------------------------- body size


def _limit_body() -> None:
    """MAX_CONTENT_LENGTH (photo uploads) is the ceiling; every other body gets MAX_JSON_BYTES."""
    if request.mimetype != "multipart/form-data":
        limit = int(current_app.config["MAX_JSON_BYTES"])
        ceiling = request.max_content_length
        request.max_content_length = min(limit, ceiling) if ceiling else limit
    # Werkzeug refuses a Content-Length over the limit outright, but silently cuts a chunked body
    # (no length; the server terminates the stream and sets wsgi.input_terminated) at the limit.
    # Read such a body here, one byte past the limit, so that too long is a 413 and not a mangled body.
    environ = request.environ
    if (request.content_length is None and environ.get("wsgi.input_terminated")
            and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()):
        limit = request.max_content_length
        body = environ["wsgi.input"].read(limit + 1 if limit is not None else -1)
        if limit is not None and len(body) > limit:
            raise RequestEntityTooLarge()
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))


# ---------------------------------------------------------------- install


def apply_setting_defaults(app: Flask) -> None:
    """Fill each security setting missing from app.config from the environment, else its default.

    Under TESTING, rate limits default to off (a fuzzer is not a user); the tests of the limits
    switch them on. The environment variable still wins.
    """
    for name, (convert, default) in SETTINGS.items():
        if name in app.config:
            continue
        raw = os.environ.get(name)
        if name == "RATE_LIMITS_ENABLED" and app.testing:
            default = False
        app.config[name] = convert(raw) if raw not in (None, "") else default


def install_security(app: Flask) -> None:
    """Rate limiting, CORS and body limits for `app` (call once, in the factory)."""
    apply_setting_defaults(app)
    if not app.testing and app.config.get("SECRET_KEY") in (None, "", "dev-only-change-me"):
        logger.warning("SECRET_KEY is the development default: set it before real users log in (docs/security.md)")
    app.extensions["rate_limiter"] = build_limiter(app)
    app.register_error_handler(RateLimited, _rate_limited_response)
    app.before_request(_limit_body)
    app.before_request(_answer_preflight)
    app.after_request(_cors_headers)
