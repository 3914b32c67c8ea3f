"""Delivering the outbox: signed POSTs to each client's callback URL, in order per event, with retries.

One run (`deliver_due`, called by the scheduler every few seconds):
1. claim the messages that are due and first in line for their event (no earlier message of the
   event is undelivered) — `FOR UPDATE SKIP LOCKED` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite —
   by stamping `claimed_until`, and commit: no transaction is open during the HTTP calls;
2. post each one, signed like the inbound requests (Standard Webhooks, every live secret of the
   client, so a rotation never breaks the receiver), with a stable `webhook-id` per message;
3. record each outcome in its own short transaction: delivered (2xx), or the next attempt after an
   exponential backoff with jitter, or `dead` after the last attempt (or at once on 410 Gone).
A dead message holds back the later messages of its event until an admin retries it: the receiver
never sees seq n+1 before n. Delivery is at least once (a crash between the POST and step 3 sends
again); receivers drop duplicates by `webhook-id`.

Lock contention delays a run, it does not fail it: when steps 1 or 3 meet a lock held past the
database's own wait (SQLite's busy timeout, PostgreSQL's lock timeout, a deadlock), the transaction
is rolled back and tried again after a growing pause, up to LOCK_RETRIES times; the run's summary
counts these `lock_waits`. A lock held through all of them is an outage, not contention: the run fails
and /healthz says so.
"""
from __future__ import annotations

import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from sqlalchemy.orm import Session

from ..auth.client_models import ApiClient
from ..auth.clients import live_keys
from ..infra import webhooks
from ..infra.db import MAX_ID, begin_writing, is_lock_refusal
from ..infra.errors import Conflict, NotFound
from .models import OutboxMessage

logger = logging.getLogger(__name__)

outbox_t = OutboxMessage.__table__
clients_t = ApiClient.__table__

T = TypeVar("T")
# A transaction refused for a lock is tried again this many times, after 0.5 s, 1 s, 2 s, 4 s (± a
# quarter), each attempt waiting the database's own time for the lock (SQLite's busy timeout,
# PostgreSQL's lock timeout) before it is refused.
LOCK_RETRIES = 4
LOCK_RETRY_SECONDS = 0.5

# What an HTTP poster returns: the status, optionally with the response headers (for Retry-After).
HttpResult = int | tuple[int, Mapping[str, str]]
HttpPost = Callable[[str, bytes, dict[str, str], float], HttpResult]


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 20  # 1.1–2.2 days of retries with the defaults below (jitter decides)
    base_seconds: float = 10.0
    cap_seconds: float = 6 * 3600.0
    timeout_seconds: float = 15.0  # the spec recommends 15-30 s
    batch_size: int = 20

    @property
    def claim_seconds(self) -> float:
        """How long a run holds its batch: every POST of it timing out, plus a margin (then another run may retry)."""
        return self.batch_size * self.timeout_seconds + 60.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DeliveryPolicy:
        return cls(max_attempts=int(config.get("OUTBOX_MAX_ATTEMPTS", cls.max_attempts)),
                   base_seconds=float(config.get("OUTBOX_BACKOFF_BASE_SECONDS", cls.base_seconds)),
                   cap_seconds=float(config.get("OUTBOX_BACKOFF_CAP_SECONDS", cls.cap_seconds)),
                   timeout_seconds=float(config.get("OUTBOX_TIMEOUT_SECONDS", cls.timeout_seconds)))


def backoff(attempts: int, policy: DeliveryPolicy, rng: random.Random | Any = random) -> timedelta:
    """Wait before attempt `attempts + 1`: base·2^(attempts-1), capped, with "equal jitter" (half fixed, half random)."""
    delay = min(policy.cap_seconds, policy.base_seconds * 2 ** max(0, attempts - 1))
    return timedelta(seconds=delay / 2 + rng.uniform(0, delay / 2))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is a failure (Standard Webhooks): the client should fix its URL, not make us follow it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def urllib_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> HttpResult:
    """POST with the standard library; HTTP errors are statuses, network errors raise OSError."""
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8", "User-Agent": "grid-service-outbox/1", **headers})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read(64 * 1024)
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers or {})


@dataclass
class _Claimed:
    id: int
    client_id: int
    msg_id: str
    body: str
    attempts: int
    url: str


def _patiently(session: Session, work: Callable[[], T], summary: dict[str, int], what: str) -> T:
    """`work` (one transaction, committed inside), tried again after a pause while a lock refuses it."""
    attempt = 0
    while True:
        try:
            return work()
        except sa.exc.OperationalError as error:
            session.rollback()
            if attempt == LOCK_RETRIES or not is_lock_refusal(error):
                raise
            pause = LOCK_RETRY_SECONDS * 2 ** attempt * random.uniform(0.75, 1.25)  # noqa: S311 - spreading retries
            attempt += 1
            summary["lock_waits"] += 1
            logger.warning("outbox %s: the database is locked by another writer; trying again in %.1f s", what, pause)
            time.sleep(pause)


def _claim(session: Session, now: datetime, policy: DeliveryPolicy) -> list[_Claimed]:
    postgres = session.get_bind().dialect.name == "postgresql"
    begin_writing(session)  # one claimer at a time on SQLite
    o, earlier = outbox_t, outbox_t.alias("earlier")
    blocked = sa.exists().where(earlier.c.event_id == o.c.event_id, earlier.c.seq < o.c.seq, earlier.c.state != "delivered")
    query = (
        sa.select(o.c.id, o.c.client_id, o.c.msg_id, o.c.body, o.c.attempts, clients_t.c.callback_url)
        .join(clients_t, clients_t.c.id == o.c.client_id)
        .where(o.c.state == "pending", o.c.next_attempt_at <= now,
               sa.or_(o.c.claimed_until.is_(None), o.c.claimed_until <= now),
               clients_t.c.is_active.is_(True), clients_t.c.callback_url.is_not(None), ~blocked)
        .order_by(o.c.next_attempt_at, o.c.id)
        .limit(policy.batch_size)
    )
    if postgres:
        query = query.with_for_update(of=o, skip_locked=True)
    rows = [_Claimed(r.id, r.client_id, r.msg_id, r.body, r.attempts, r.callback_url) for r in session.execute(query)]
    if rows:
        session.execute(sa.update(outbox_t).where(outbox_t.c.id.in_([r.id for r in rows]))
                        .values(claimed_until=now + timedelta(seconds=policy.claim_seconds)))
    session.commit()
    return rows


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: ignore, the backoff applies


def _attempt(session: Session, message: _Claimed, http_post: HttpPost, policy: DeliveryPolicy,
             signed_at: datetime) -> tuple[int | None, str | None, float | None]:
    """(status, error, retry-after seconds) of one POST."""
    client = session.get(ApiClient, message.client_id)
    try:
        keys = live_keys(session, client, signed_at)
    except ValueError as exc:
        return None, str(exc), None
    if not keys:
        return None, "the client has no live signing secret", None
    body = message.body.encode()
    headers = webhooks.sign_headers(keys, message.msg_id, signed_at, body)
    try:
        result = http_post(message.url, body, headers, policy.timeout_seconds)
    except Exception as exc:  # network errors, timeouts, a broken poster: all are failed attempts
        return None, f"{type(exc).__name__}: {exc}"[:300], None
    status, response_headers = (result, {}) if isinstance(result, int) else result
    if 200 <= status < 300:
        return status, None, None
    return status, f"HTTP {status}", _retry_after(response_headers)


def _record(session: Session, message: _Claimed, outcome: tuple[int | None, str | None, float | None], now: datetime,
            policy: DeliveryPolicy, rng: Any) -> str:
    status, error, retry_after = outcome
    attempts = message.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "last_status": status, "last_attempt_at": now, "claimed_until": None}
    if error is None:
        state = "delivered"
        values |= {"state": state, "delivered_at": now, "next_attempt_at": None, "last_error": None}
    elif attempts >= policy.max_attempts or status == 410:
        state = "dead"
        values |= {"state": state, "next_attempt_at": None, "last_error": error}
    else:
        state = "failed"
        wait = backoff(attempts, policy, rng)
        if retry_after is not None:
            wait = max(wait, timedelta(seconds=min(retry_after, policy.cap_seconds)))
        values |= {"next_attempt_at": now + wait, "last_error": error}
    session.execute(sa.update(outbox_t).where(outbox_t.c.id == message.id, outbox_t.c.state == "pending").values(**values))
    session.commit()
    if state != "delivered":
        logger.warning("outbox %s (attempt %d) to client %s failed: %s%s", message.msg_id, attempts, message.client_id,
                       error, " — now dead" if state == "dead" else "")
    return state


def deliver_due(session: Session, now: datetime, http_post: HttpPost = urllib_post, *,
                policy: DeliveryPolicy | None = None, rng: Any = random,
                wall_clock: Callable[[], datetime] | None = None, max_rounds: int = 20) -> dict[str, int]:
    """Post every message due at `now`, in order per event; returns counts. Commits as it goes.

    Round after round, so that seq n+1 goes right after n succeeded; `wall_clock` gives the signed
    timestamp of each attempt (default `now`). Call it with a session that holds no open transaction.
    """
    if policy is None:
        policy = DeliveryPolicy.from_config(current_app.config) if has_app_context() else DeliveryPolicy()
    summary = {"claimed": 0, "delivered": 0, "failed": 0, "dead": 0, "rounds": 0, "lock_waits": 0}
    for _ in range(max_rounds):
        claimed = _patiently(session, lambda: _claim(session, now, policy), summary, "claim")
        if not claimed:
            break
        summary["rounds"] += 1
        summary["claimed"] += len(claimed)
        for message in claimed:
            outcome = _attempt(session, message, http_post, policy, wall_clock() if wall_clock else now)
            state = _patiently(session, lambda m=message, o=outcome: _record(session, m, o, now, policy, rng), summary,
                               f"record of {message.msg_id}")
            summary[state] += 1
    return summary


def run_delivery(app: Flask, now: datetime) -> dict[str, int]:
    """The scheduler's job: one delivery run at `now` (register as Job("outbox-delivery", run_delivery, …))."""
    from ..infra.db import db
    from ..infra.timeutil import utcnow

    return deliver_due(db.session, now, policy=DeliveryPolicy.from_config(app.config), wall_clock=utcnow)


# -- admin ----------------------------------------------------------------------------------------


def list_deliveries(session: Session, *, state: str | None = None, client_name: str | None = None,
                    limit: int = 50, offset: int = 0) -> tuple[list[OutboxMessage], int]:
    """Messages newest first, filtered by state and client, and the total."""
    query = sa.select(OutboxMessage)
    if state is not None:
        query = query.where(OutboxMessage.state == state)
    if client_name is not None:
        query = query.join(ApiClient, ApiClient.id == OutboxMessage.client_id).where(ApiClient.name == client_name)
    total = session.scalar(sa.select(sa.func.count()).select_from(query.with_only_columns(OutboxMessage.id).subquery()))
    rows = session.scalars(query.order_by(OutboxMessage.id.desc()).limit(limit).offset(offset)).unique()
    return list(rows), int(total or 0)


def get_delivery(session: Session, delivery_id: int) -> OutboxMessage:
    message = session.get(OutboxMessage, delivery_id) if 0 < delivery_id <= MAX_ID else None
    if message is None:
        raise NotFound(f"未找到推送记录 {delivery_id}（delivery {delivery_id} not found）")
    return message


def retry_delivery(session: Session, delivery_id: int, *, now: datetime) -> OutboxMessage:
    """Give a dead message a fresh series of attempts, starting now; 409 unless it is dead."""
    message = get_delivery(session, delivery_id)
    if message.state != "dead":
        raise Conflict(f"推送记录 {delivery_id} 的状态为 {message.state}，只有 dead 状态的可以重试"
                       f"（delivery {delivery_id} is {message.state}; only a dead one can be retried）",
                       {"state": [message.state]})
    message.state, message.attempts, message.next_attempt_at, message.claimed_until = "pending", 0, now, None
    session.flush()
    return message


def retry_all_dead(session: Session, *, now: datetime) -> int:
    """Retry every dead message; returns how many."""
    return session.execute(sa.update(outbox_t).where(outbox_t.c.state == "dead")
                           .values(state="pending", attempts=0, next_attempt_at=now, claimed_until=None)).rowcount
