"""Configuration read from the environment.

Every setting has a working default so that `make run` needs no setup; production sets at least
DATABASE_URL and SECRET_KEY.
"""
from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = BASE_DIR / "instance"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def normalize_database_url(url: str) -> str:
    """Let operators write postgres:// or postgresql:// and still get the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Config:
    SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-change-me")
    # Earlier SECRET_KEYs, comma-separated: sealed secrets and the audit chain still open/verify under them.
    SECRET_KEY_FALLBACKS = [k for k in os.environ.get("SECRET_KEY_FALLBACKS", "").split(",") if k]
    # The audit chain's HMAC key (keep it out of the database's reach); unset: derived from SECRET_KEY.
    AUDIT_KEY = os.environ.get("AUDIT_KEY") or None
    AUDIT_KEY_FALLBACKS = [k for k in os.environ.get("AUDIT_KEY_FALLBACKS", "").split(",") if k]
    SQLALCHEMY_DATABASE_URI = normalize_database_url(
        os.environ.get("DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'grid.db'}")
    )
    SQLALCHEMY_ENGINE_OPTIONS: dict = {}
    # How long anything waits on the database before giving up (a web request then answers 503
    # database_unavailable with Retry-After). Web requests get short bounds; the scheduler's jobs
    # and the CLI (a sweep batch, a demo seed, `audit verify` over millions of rows) get their own.
    # Seconds to open a connection (PostgreSQL; at least 2); also bounds every other pool using the URL.
    DB_CONNECT_TIMEOUT_SECONDS = _env_int("DB_CONNECT_TIMEOUT_SECONDS", 3)
    # Seconds to wait for a free connection of the pool.
    DB_POOL_TIMEOUT_SECONDS = _env_int("DB_POOL_TIMEOUT_SECONDS", 5)
    # PostgreSQL, web requests: one statement's time (its client also gives up a second later, should
    # the server itself be frozen), and its wait for a lock. 0 = no limit.
    DB_STATEMENT_TIMEOUT_MS = _env_int("DB_STATEMENT_TIMEOUT_MS", 5_000)
    DB_LOCK_TIMEOUT_MS = _env_int("DB_LOCK_TIMEOUT_MS", 2_000)
    # PostgreSQL, scheduler jobs and CLI commands. 0 = no limit.
    DB_JOB_STATEMENT_TIMEOUT_MS = _env_int("DB_JOB_STATEMENT_TIMEOUT_MS", 0)
    DB_JOB_LOCK_TIMEOUT_MS = _env_int("DB_JOB_LOCK_TIMEOUT_MS", 60_000)
    # Milliseconds a SQLite connection waits for the write lock before failing: web requests, jobs and CLI.
    SQLITE_BUSY_TIMEOUT_MS = _env_int("SQLITE_BUSY_TIMEOUT_MS", 5_000)
    SQLITE_JOB_BUSY_TIMEOUT_MS = _env_int("SQLITE_JOB_BUSY_TIMEOUT_MS", 30_000)

    # The calendar's and the UI's time zone; stored times are always UTC.
    GRID_TIMEZONE = os.environ.get("GRID_TIMEZONE", "Asia/Shanghai")
    UPLOAD_FOLDER = os.environ.get("UPLOAD_FOLDER", str(INSTANCE_DIR / "uploads"))
    # Whole request body limit (bytes) and the per-photo limit.
    MAX_CONTENT_LENGTH = _env_int("MAX_CONTENT_LENGTH", 12 * 1024 * 1024)
    MAX_ATTACHMENT_BYTES = _env_int("MAX_ATTACHMENT_BYTES", 10 * 1024 * 1024)
    # The request head the service reads (414 / 431 beyond; `flask serve` sets gunicorn's own limits
    # above these, so that the answer is always the service's JSON): the URL as sent (path and query),
    # one header (name and value), the number of headers. And how deep a JSON body may nest (400 beyond).
    MAX_URL_BYTES = _env_int("MAX_URL_BYTES", 4096)
    MAX_HEADER_BYTES = _env_int("MAX_HEADER_BYTES", 8192)
    MAX_HEADER_COUNT = _env_int("MAX_HEADER_COUNT", 100)
    MAX_JSON_DEPTH = _env_int("MAX_JSON_DEPTH", 32)
    # How far back a person's report may say it was received (a phone queued it offline), in days: 422 beyond.
    RECEIVED_AT_MAX_AGE_DAYS = _env_int("RECEIVED_AT_MAX_AGE_DAYS", 7)
    # One extension (延期) adds at most this share of the clock's own limit: 422 beyond.
    EXTENSION_MAX_RATIO = float(os.environ.get("EXTENSION_MAX_RATIO") or 1.0)
    # Lifetime of bearer tokens minted by the CLI, in days.
    TOKEN_TTL_DAYS = _env_int("TOKEN_TTL_DAYS", 30)
    # Seconds between checks for changed territory boundaries or categories in a running web worker.
    LOCATOR_REFRESH_SECONDS = _env_int("LOCATOR_REFRESH_SECONDS", 5)
    # Digits of each code segment below the district (GB/T 30428.1: 3 street, 3 community, 2 grid).
    UNIT_CODE_DIGITS = {
        "district": _env_int("CODE_DIGITS_DISTRICT", 6),
        "street": _env_int("CODE_DIGITS_STREET", 3),
        "community": _env_int("CODE_DIGITS_COMMUNITY", 3),
        "grid": _env_int("CODE_DIGITS_GRID", 2),
    }
    # The scheduler's tick for the escalation sweeper (seconds).
    SWEEP_INTERVAL_SECONDS = float(os.environ.get("SWEEP_INTERVAL_SECONDS", "30"))
    # Batches a PostgreSQL sweep runs at once, each on its own connection (at most 8; SQLite: always one).
    SWEEP_WORKERS = _env_int("SWEEP_WORKERS", 2)
    # Outbound hotline notifications (the outbox): delivery tick, attempts, backoff, HTTP timeout.
    OUTBOX_INTERVAL_SECONDS = float(os.environ.get("OUTBOX_INTERVAL_SECONDS", "5"))
    OUTBOX_MAX_ATTEMPTS = _env_int("OUTBOX_MAX_ATTEMPTS", 20)
    OUTBOX_BACKOFF_BASE_SECONDS = float(os.environ.get("OUTBOX_BACKOFF_BASE_SECONDS", "10"))
    OUTBOX_BACKOFF_CAP_SECONDS = float(os.environ.get("OUTBOX_BACKOFF_CAP_SECONDS", "21600"))
    OUTBOX_TIMEOUT_SECONDS = float(os.environ.get("OUTBOX_TIMEOUT_SECONDS", "15"))
    ENFORCE_UNIT_CODE_FORMAT = _env_bool("ENFORCE_UNIT_CODE_FORMAT", False)

    # Open311 GeoReport v2 (docs/open311.md); unset values fall back to sensible defaults.
    OPEN311_JURISDICTION_ID = os.environ.get("OPEN311_JURISDICTION_ID") or None
    OPEN311_PUBLIC_SOURCES = os.environ.get("OPEN311_PUBLIC_SOURCES") or None
    OPEN311_BASE_URL = os.environ.get("OPEN311_BASE_URL") or None
    OPEN311_CONTACT = os.environ.get("OPEN311_CONTACT") or None
    OPEN311_KEY_SERVICE = os.environ.get("OPEN311_KEY_SERVICE") or None
    OPEN311_ENDPOINT_TYPE = os.environ.get("OPEN311_ENDPOINT_TYPE") or None

    API_TITLE = "Grid Service API"
    API_VERSION = "v1"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/"
    OPENAPI_JSON_PATH = "openapi.json"
    OPENAPI_SWAGGER_UI_PATH = "/docs"
    # Swagger UI's assets come from the swagger-ui-bundle package (works offline).
    OPENAPI_SWAGGER_UI_URL = os.environ.get("OPENAPI_SWAGGER_UI_URL", "/docs/assets/")
    JSON_AS_ASCII = False
    TESTING = False


class TestConfig(Config):
    TESTING = True
    SECRET_KEY = "test-secret"
    SQLALCHEMY_DATABASE_URI = "sqlite://"
    LOCATOR_REFRESH_SECONDS = 0
