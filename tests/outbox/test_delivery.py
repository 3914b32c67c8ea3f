"""The outbox and its delivery: rows written with each change, posted signed and in order to a real
HTTP receiver on loopback that fails first, with backoff, dead letters and retries."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from flask import current_app

from config import TestConfig
from grid_service.auth.clients import get_client, rotate_secret
from grid_service.events import service as events
from grid_service.events.models import Event
from grid_service.infra.db import db
from grid_service.infra.timeutil import utcnow
from grid_service.outbox import delivery
from grid_service.outbox.delivery import DeliveryPolicy, backoff, deliver_due
from grid_service.outbox.models import OutboxMessage
from tests.helpers import T0, act, report, run_sweep, sh


class Receiver:
    """The hotline's callback endpoint: a real HTTP server on 127.0.0.1 that checks every signature."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.statuses: list[int] = []  # answers to give, in order; then 200
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                                          "valid": receiver.verify(self.headers, body)})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hotline/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def verify(self, headers, body: bytes) -> bool:
        """Standard Webhooks, written out by hand as a vendor would: any listed v1 signature, any known secret."""
        content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        given = [s.split(",", 1)[1] for s in headers["webhook-signature"].split(" ") if s.startswith("v1,")]
        for secret in self.secrets:
            key = base64.b64decode(secret.removeprefix("whsec_"))
            expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
            if any(hmac.compare_digest(expected, g) for g in given):
                return True
        return False

    def messages(self) -> list[tuple[int, int, str]]:
        return [(json.loads(r["body"])["data"]["event_id"], json.loads(r["body"])["data"]["seq"],
                 json.loads(r["body"])["type"]) for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def wired(hotline, receiver, make_actor):
    """The hotline client posting back to the receiver, and the people who work on its petitions."""
    client = get_client(db.session, "h12345")
    client.callback_url = receiver.url
    db.session.commit()
    receiver.secrets = [hotline.secret]
    return {"community": make_actor("supervisor", "c11"), "handler": make_actor("handler", "s1"),
            "worker": make_actor("grid_worker", "g111"), "admin": make_actor("admin", "d")}


def outbox(event_id: int | None = None) -> list[OutboxMessage]:
    db.session.expire_all()
    query = sa.select(OutboxMessage).order_by(OutboxMessage.event_id, OutboxMessage.seq)
    if event_id is not None:
        query = query.where(OutboxMessage.event_id == event_id)
    return list(db.session.scalars(query))


POLICY = DeliveryPolicy(max_attempts=4, base_seconds=10, cap_seconds=3600, timeout_seconds=5)


def run(at, **kw) -> dict:
    """One delivery run at `at`, in its own app context (a fresh session, as a scheduler tick has)."""
    app = current_app._get_current_object()
    with app.app_context():
        return deliver_due(db.session, at, policy=kw.pop("policy", POLICY), rng=random.Random(7), **kw)


# ---------------------------------------------------------------- writing the outbox


def test_each_change_the_hotline_must_know_writes_one_message_in_order(hotline, wired):
    eid = hotline.petition().json["event_id"]
    c, h = wired["community"], wired["handler"]
    steps = [(c, "register", {}), (c, "dispatch", {"handler_id": h.user.id}), (h, "return", {"note": "不归我们管"}),
             (c, "dispatch", {"handler_id": h.user.id}), (h, "accept", {}), (c, "urge", {}),
             (h, "resolve", {"note": "已清运"}), (c, "verify", {})]
    for actor, action, extra in steps:
        assert act(actor, eid, action, **extra).status_code == 200
    rows = outbox(eid)
    assert [(m.seq, m.kind) for m in rows] == [(1, "registered"), (2, "dispatched"), (3, "returned"), (4, "dispatched"),
                                               (5, "accepted"), (6, "resolved"), (7, "closed")]  # an urge is internal
    body = json.loads(rows[2].body)
    assert body["type"] == "petition.returned" and body["data"]["petition_number"] == "GD0001"
    assert body["data"]["note"] == "不归我们管" and body["data"]["state"] == "registered"
    assert body["timestamp"].endswith("+08:00") and rows[2].state == "pending"


def test_rejecting_writes_a_message_too(hotline, wired):
    eid = hotline.petition().json["event_id"]
    assert act(wired["community"], eid, "reject", note="不属于受理范围").status_code == 200
    assert [m.kind for m in outbox(eid)] == ["rejected"]


def test_the_hotline_hears_when_its_deadline_moves_or_a_resolved_petition_goes_back_to_work(hotline, wired):
    eid = hotline.petition().json["event_id"]
    c, h = wired["community"], wired["handler"]
    for actor, action, extra in [(c, "register", {}), (c, "dispatch", {"handler_id": h.user.id}), (h, "accept", {}),
                                 (c, "suspend", {"note": "等待产权单位"}), (c, "resume", {}),
                                 (c, "extend", {"minutes": 120, "metric": "resolve", "note": "需协调产权单位"}), (h, "resolve", {}),
                                 (c, "rework", {"note": "现场仍有垃圾"})]:
        assert act(actor, eid, action, **extra).status_code == 200, action
    bodies = [json.loads(m.body) for m in outbox(eid)]
    kinds = [b["type"].removeprefix("petition.") for b in bodies]
    assert kinds == ["registered", "dispatched", "accepted", "suspended", "resumed", "extended", "resolved", "reworked"]
    by_kind = {k: b["data"] for k, b in zip(kinds, bodies)}
    assert by_kind["suspended"]["state"] == "suspended" and by_kind["suspended"]["note"] == "等待产权单位"
    assert by_kind["reworked"]["state"] == "in_progress" and by_kind["reworked"]["note"] == "现场仍有垃圾"
    extended, before = by_kind["extended"]["resolve_due_at"], by_kind["resumed"]["resolve_due_at"]
    assert extended is not None and before is not None and extended > before  # the new 处置时限 reaches the hotline


def test_an_escalation_by_hand_writes_a_message_with_the_new_owner(hotline, wired):
    eid = hotline.petition().json["event_id"]
    assert act(wired["community"], eid, "escalate", note="需街道协调").status_code == 200
    (message,) = outbox(eid)
    data = json.loads(message.body)["data"]
    assert message.kind == "escalated" and data["owner"]["code"] == "150299001001" and data["level"] == "community"


def test_a_refused_action_writes_nothing(hotline, wired):
    eid = hotline.petition().json["event_id"]
    assert act(wired["community"], eid, "verify").status_code == 409
    assert act(wired["worker"], eid, "register").status_code == 403
    assert outbox(eid) == []


def test_the_message_is_in_the_changes_transaction(app, hotline, wired):
    eid = hotline.petition().json["event_id"]
    event = db.session.get(Event, eid)
    events.apply_action(db.session, event, wired["community"].user, events.ActionRequest("register"),
                        sla=app.extensions["sla"], now=T0 + timedelta(hours=1))
    assert [m.kind for m in outbox(eid)] == ["registered"]  # written inside the change's transaction …
    db.session.rollback()  # … and gone with it
    assert outbox(eid) == [] and db.session.get(Event, eid).state == "reported"


def test_events_from_elsewhere_and_clients_without_a_callback_get_no_messages(hotline, wired):
    own = report(wired["worker"])["id"]
    act(wired["community"], own, "register")
    get_client(db.session, "h12345").callback_url = None
    db.session.commit()
    eid = hotline.petition("GD0002").json["event_id"]
    act(wired["community"], eid, "register")
    assert outbox() == []


def test_the_sweepers_escalation_writes_a_message_in_its_batch(app, hotline, wired, policies):
    hotline.at(sh("2026-03-02T09:00"))
    eid = hotline.petition(received_at="2026-03-02T09:00:00+08:00").json["event_id"]
    act(wired["community"], eid, "register")
    assert run_sweep(app, "2026-03-02T10:01")["escalated"] == 1
    rows = outbox(eid)
    assert [(m.seq, m.kind) for m in rows] == [(1, "registered"), (2, "escalated")]
    data = json.loads(rows[1].body)["data"]
    assert data["level"] == "community" and data["owner"]["code"] == "150299001001" and data["late_minutes"] == 1.0
    assert run_sweep(app, "2026-03-02T10:02")["escalated"] == 0
    assert len(outbox(eid)) == 2


# ---------------------------------------------------------------- delivering it


def test_delivery_retries_with_backoff_then_delivers_in_order_signed(hotline, wired, receiver):
    eid = hotline.petition().json["event_id"]
    act(wired["community"], eid, "register")
    act(wired["community"], eid, "dispatch", handler_id=wired["handler"].user.id)
    receiver.statuses = [503, 500]
    t = T0 + timedelta(hours=1)

    assert run(t) == {"claimed": 1, "delivered": 0, "failed": 1, "dead": 0, "rounds": 1, "lock_waits": 0}
    first, second = outbox(eid)
    wait1 = first.next_attempt_at - t
    assert timedelta(seconds=5) <= wait1 <= timedelta(seconds=10)  # 10 s, half of it jittered
    assert (first.attempts, first.last_status, first.last_error) == (1, 503, "HTTP 503")
    assert second.attempts == 0  # seq 2 waits for seq 1

    assert run(t + wait1 - timedelta(seconds=1))["claimed"] == 0  # not yet due
    t2 = t + wait1
    assert run(t2)["failed"] == 1
    wait2 = outbox(eid)[0].next_attempt_at - t2
    assert timedelta(seconds=10) <= wait2 <= timedelta(seconds=20)

    assert run(t2 + wait2) == {"claimed": 2, "delivered": 2, "failed": 0, "dead": 0, "rounds": 2, "lock_waits": 0}
    assert receiver.messages() == [(eid, 1, "petition.registered")] * 3 + [(eid, 2, "petition.dispatched")]
    assert all(r["valid"] for r in receiver.received)
    assert len({r["headers"]["webhook-id"] for r in receiver.received[:3]}) == 1  # one id across the retries
    assert [m.state for m in outbox(eid)] == ["delivered", "delivered"]
    assert run(t2 + wait2 + timedelta(minutes=5))["claimed"] == 0


def test_after_the_last_attempt_a_delivery_is_dead_listed_and_can_be_retried(hotline, wired, receiver, runner):
    eid = hotline.petition().json["event_id"]
    act(wired["community"], eid, "register")
    act(wired["community"], eid, "reject", note="重复工单")
    receiver.statuses = [500] * 4
    t = T0 + timedelta(hours=1)
    for i in range(4):
        run(t + timedelta(hours=i))
    first, second = outbox(eid)
    assert (first.state, first.attempts, second.state, second.attempts) == ("dead", 4, "pending", 0)
    assert receiver.messages() == [(eid, 1, "petition.registered")] * 4  # seq 2 never overtook seq 1

    admin = wired["admin"]
    listed = admin.get("/api/v1/deliveries?state=dead").json
    assert listed["total"] == 1 and listed["items"][0]["id"] == first.id and listed["items"][0]["last_error"] == "HTTP 500"
    assert wired["community"].get("/api/v1/deliveries?state=dead").status_code == 403
    out = runner.invoke(args=["deliveries", "list", "--state", "dead"])
    assert out.exit_code == 0 and f"{first.id}\tdead\th12345\tevent {eid} #1" in out.output

    assert admin.post(f"/api/v1/deliveries/{second.id}/retry").status_code == 409  # not dead
    assert runner.invoke(args=["deliveries", "retry", "--all-dead"]).output.strip() == "1 delivery queued again"
    assert run(utcnow()) == {"claimed": 2, "delivered": 2, "failed": 0, "dead": 0, "rounds": 2, "lock_waits": 0}
    assert receiver.messages()[-2:] == [(eid, 1, "petition.registered"), (eid, 2, "petition.rejected")]


def test_a_dead_delivery_retried_through_the_api(hotline, wired, receiver):
    eid = hotline.petition().json["event_id"]
    act(wired["community"], eid, "register")
    receiver.statuses = [410]  # Gone: no use trying again
    assert run(T0 + timedelta(hours=1))["dead"] == 1
    message = outbox(eid)[0]
    response = wired["admin"].post(f"/api/v1/deliveries/{message.id}/retry")
    assert response.status_code == 200 and response.json["state"] == "pending" and response.json["attempts"] == 0
    assert run(T0 + timedelta(hours=2))["delivered"] == 1


def test_one_events_failures_do_not_hold_back_another_event(hotline, wired, receiver):
    a = hotline.petition("A").json["event_id"]
    b = hotline.petition("B").json["event_id"]
    for eid in (a, b):
        act(wired["community"], eid, "register")
    receiver.statuses = [500]
    summary = run(T0 + timedelta(hours=1))
    assert summary["failed"] == 1 and summary["delivered"] == 1
    assert {m.event_id: m.state for m in outbox()} == {a: "pending", b: "delivered"}


def test_during_a_rotation_messages_are_signed_with_both_secrets(hotline, wired, receiver):
    new = rotate_secret(db.session, get_client(db.session, "h12345"), grace=timedelta(days=1), now=T0)
    db.session.commit()
    eid = hotline.petition().json["event_id"]
    act(wired["community"], eid, "register")
    assert run(T0 + timedelta(hours=1))["delivered"] == 1
    sent = receiver.received[0]
    assert len(sent["headers"]["webhook-signature"].split(" ")) == 2
    for secrets in ([hotline.secret], [new]):  # a receiver that knows only one of them still verifies
        receiver.secrets = secrets
        assert receiver.verify(sent["headers"], sent["body"])


def test_an_unreachable_endpoint_is_a_failed_attempt(hotline, wired):
    get_client(db.session, "h12345").callback_url = "http://127.0.0.1:9/closed"  # discard port: refused
    db.session.commit()
    eid = hotline.petition().json["event_id"]
    act(wired["community"], eid, "register")
    assert run(T0 + timedelta(hours=1))["failed"] == 1
    message = outbox(eid)[0]
    assert message.last_status is None and "URLError" in message.last_error


def test_a_deactivated_clients_messages_wait(hotline, wired, receiver):
    eid = hotline.petition().json["event_id"]
    act(wired["community"], eid, "register")
    get_client(db.session, "h12345").is_active = False
    db.session.commit()
    assert run(T0 + timedelta(hours=1))["claimed"] == 0 and outbox(eid)[0].state == "pending"


def test_two_delivery_runs_at_once_send_each_message_once(app, hotline, wired, receiver):
    """A second scheduler is harmless: claims are exclusive (SKIP LOCKED / BEGIN IMMEDIATE, then a lease)."""
    for number in ("A", "B", "C", "D", "E", "F"):
        act(wired["community"], hotline.petition(number).json["event_id"], "register")
    barrier = threading.Barrier(2)
    summaries = []

    def deliver():
        with app.app_context():
            barrier.wait()
            summaries.append(deliver_due(db.session, T0 + timedelta(hours=1), policy=DeliveryPolicy(batch_size=2)))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(receiver.messages()) == sorted(set(receiver.messages())) and len(receiver.messages()) == 6
    assert sum(s["delivered"] for s in summaries) == 6


def test_a_claimed_message_is_left_alone_until_its_lease_ends(hotline, wired, receiver):
    eid = hotline.petition().json["event_id"]
    act(wired["community"], eid, "register")
    message = outbox(eid)[0]
    message.claimed_until = T0 + timedelta(hours=1, minutes=5)  # another run is posting it
    db.session.commit()
    assert run(T0 + timedelta(hours=1))["claimed"] == 0
    assert run(T0 + timedelta(hours=1, minutes=5))["delivered"] == 1  # that run died: the lease ran out


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter():
    policy = DeliveryPolicy(base_seconds=10, cap_seconds=300)
    rng = random.Random(1)
    for attempts, (low, high) in {1: (5, 10), 2: (10, 20), 3: (20, 40), 6: (150, 300), 20: (150, 300)}.items():
        waits = {backoff(attempts, policy, rng).total_seconds() for _ in range(20)}
        assert all(low <= w <= high for w in waits) and len(waits) > 1


# ---------------------------------------------------------------- lock contention

LOCK_WAIT_MS = 200


@pytest.fixture
def short_lock_waits(monkeypatch, backend):
    """Requested before `app`: its engine then gives up on a held lock after LOCK_WAIT_MS, in web
    requests and in jobs alike."""
    for name in ("SQLITE_BUSY_TIMEOUT_MS", "SQLITE_JOB_BUSY_TIMEOUT_MS", "DB_LOCK_TIMEOUT_MS", "DB_JOB_LOCK_TIMEOUT_MS"):
        monkeypatch.setattr(TestConfig, name, LOCK_WAIT_MS, raising=False)
    if backend != "sqlite":
        monkeypatch.setattr(TestConfig, "SQLALCHEMY_ENGINE_OPTIONS",
                            {"connect_args": {"options": f"-c lock_timeout={LOCK_WAIT_MS}"}})


def test_a_delivery_run_waits_out_a_writer_holding_the_lock_instead_of_failing(short_lock_waits, app, hotline, wired,
                                                                               receiver, backend, monkeypatch):
    """Another writer (a burst of hotline requests, a sweep batch) holds the lock past the database's own
    wait: the run is refused, waits, and delivers once the lock is free — the job does not fail."""
    monkeypatch.setattr(delivery, "LOCK_RETRY_SECONDS", 0.05, raising=False)
    eid = hotline.petition().json["event_id"]
    act(wired["community"], eid, "register")
    engine = db.engine
    locked, refused = threading.Event(), threading.Event()

    def other_writer() -> None:
        with engine.connect() as holder:
            if backend == "sqlite":
                holder.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite's one write lock
            else:
                holder.exec_driver_sql("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
            locked.set()
            refused.wait(timeout=30)  # held until the run has been refused at least once
            holder.rollback()

    def on_error(context) -> None:
        refused.set()

    holder = threading.Thread(target=other_writer)
    holder.start()
    sa.event.listen(engine, "handle_error", on_error)
    try:
        assert locked.wait(timeout=30)
        summary = run(T0 + timedelta(hours=1))
    finally:
        sa.event.remove(engine, "handle_error", on_error)
        refused.set()
        holder.join(timeout=30)
    assert summary["delivered"] == 1 and summary["lock_waits"] >= 1, summary
    assert [(event_id, seq) for event_id, seq, _ in receiver.messages()] == [(eid, 1)]
    assert outbox(eid)[0].state == "delivered"
