"""Hotline load: 8 signed senders against `flask serve` (gunicorn, 2 workers, and the scheduler).

What `make run` starts serves POST /api/v1/hotline/petitions, signed per Standard Webhooks, from
8 sender processes, while the scheduler sweeps (every 2 s; a quarter of the petitions arrive 30 days
late, so each pass escalates some) and delivers the outbox (every 1 s) to a callback receiver in this
process. Three phases, each as another hotline client (so that their counters start apart):

1. `paced`: each sender posts `--rate` petitions a second (default 5: 40/s in all, tens of times a
   city hotline's peak), the client limit lifted above that (it still counts, in its store);
2. `flat_out`: each sender posts back to back — the server's throughput; with 8 requests always in
   flight and 2 workers, latency here is mostly the queue;
3. `limit`: flat out against a client limit of `--limit` (default 120/minute), on a server started
   with it: at most the limit may be accepted, the rest must be 429 — a limiter that fails open
   under load admits them all.

For each phase one JSON line: latency of every answer (p50/p99/max ms), requests, answers by status
and the rejected ones (4xx, 5xx, none), whether a scheduler job failed (the scheduler's log, and
/healthz polled every half second), the rate-limit store's status as /healthz reported it. Then a
summary line.

    .venv/bin/python bench/hotline.py --quick
    .venv/bin/python bench/hotline.py --quick --database-url postgresql://postgres@127.0.0.1:5432/bench
"""
from __future__ import annotations

import sys
from pathlib import Path

# bench/calendar.py is named like the stdlib module: keep bench/ itself off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
ROOT = _HERE.parent

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.intake import free_port, post, prepare_database, wait_ready
from grid_service.web.kit.security import parse_rates

PATH = "/api/v1/hotline/petitions"
PHASES = ("paced", "flat_out", "limit")
LIFTED = "1000000/minute"  # far above the senders' rate: counted, never refused
LATE_EVERY = 4  # every 4th petition was received 30 days ago: overdue, so the sweeper escalates it
SERVER_LOG_FAILURES = {
    "job_failures": re.compile(r"job (\S+) failed"),
    "rate_limit_store_failures": re.compile(r"rate-limit (?:storage|counter store) failed"),
    "database_locked": re.compile(r"database is locked"),
}


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, ensure_ascii=False), flush=True)


def prepare(url: str, callback_url: str) -> dict[str, str]:
    """The intake benchmark's territory and category, plus the hotline clients posting back to `callback_url`."""
    prepare_database(url)
    from grid_service import create_app
    from grid_service.auth.clients import create_client
    from grid_service.hotline.service import set_mapping
    from grid_service.infra.db import db
    from grid_service.infra.timeutil import utcnow

    app = create_app()
    with app.app_context():
        now = utcnow()
        secrets = {phase: create_client(db.session, name=f"bench-{phase.replace('_', '-')}", kind="hotline",
                                        callback_url=callback_url, unit_code="150204001", now=now)[1] for phase in PHASES}
        set_mapping(db.session, "*", "01001", now=now)
        db.session.commit()
        db.engine.dispose()
    return secrets


class Receiver:
    """The hotline's callback endpoint: answers 204 and counts what the outbox delivered."""

    def __init__(self) -> None:
        self.received = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def sender(port: int, client: str, secret: str, duration: float, rate: float, seed: int, start: Any, out: mp.Queue) -> None:
    """Post signed petitions for `duration` seconds, `rate` a second (0: back to back); report (latency, status) pairs."""
    from grid_service.infra import webhooks

    key = webhooks.secret_key(secret)
    results: list[tuple[float, int]] = []
    start.wait()
    began = time.perf_counter()
    deadline = began + duration
    offset = random.Random(seed).random() / rate if rate else 0.0  # the senders do not post in step
    n = 0
    while time.perf_counter() < deadline:
        if rate:
            pause = began + offset + n / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        n += 1
        now = datetime.now(UTC)
        received = now - (timedelta(days=30) if n % LATE_EVERY == 0 else timedelta(minutes=1))
        body = json.dumps({
            "petition_number": f"B{seed:02d}{os.getpid()}N{n}", "received_at": received.isoformat(), "channel": "phone",
            "citizen_name": "张女士", "citizen_phone": "13800001234", "content": "小区门口垃圾堆放三天无人清运",
            "category_code": "HJ-01", "urgency": "normal",
            "location": {"lat": 40.6 + (n % 97) / 1000, "lon": 109.81 + (n % 89) / 1000, "address": "青山区钢铁大街"},
        }, ensure_ascii=False).encode()
        msg_id = f"msg_{seed}_{os.getpid()}_{n}"
        headers = webhooks.sign_headers([key], msg_id, now, body) | {
            "Content-Type": "application/json", "webhook-client": client}
        started = time.perf_counter()
        status = post(port, PATH, body, headers, timeout=60)  # 0: no answer at all
        results.append((time.perf_counter() - started, status))
    out.put(results)


class HealthPoller:
    """GET /healthz every half second: each scheduler job run seen (by its end time) and whether it failed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.runs: dict[str, dict[str, bool]] = {}
        self.errors: dict[str, str] = {}
        self.rate_limits: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.poll()

    def poll(self) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            conn.request("GET", "/healthz")
            body = json.loads(conn.getresponse().read())
            conn.close()
        except (OSError, ValueError):
            return
        for job, run in ((body.get("scheduler") or {}).get("jobs") or {}).items():
            self.runs.setdefault(job, {})[run["last_run"]] = run["ok"]
            if not run["ok"]:
                self.errors[job] = run.get("error") or ""
        if "rate_limits" in body:
            self.rate_limits[body["rate_limits"].get("status", "?")] += 1

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self.poll()
        return {"runs_seen": {job: len(runs) for job, runs in sorted(self.runs.items())},
                "failed_runs_seen": {job: sum(not ok for ok in runs.values()) for job, runs in sorted(self.runs.items())},
                "errors": self.errors, **({"rate_limits_status_seen": dict(self.rate_limits)} if self.rate_limits else {})}


def start_server(url: str, port: int, tmp: str, client_limit: str, log_path: str) -> subprocess.Popen:
    """`flask serve` on `url`: gunicorn with 2 workers and the scheduler, its log (stderr) in `log_path`."""
    env = dict(os.environ, DATABASE_URL=url, LOG_LEVEL="WARNING", UPLOAD_FOLDER=f"{tmp}/uploads", PYTHONPATH=str(ROOT),
               RATE_LIMIT_CLIENT=client_limit, SWEEP_INTERVAL_SECONDS="2", OUTBOX_INTERVAL_SECONDS="1",
               WEB_CONCURRENCY="2")
    log = open(log_path, "w")  # noqa: SIM115 - the server's stderr, read after it stops
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
    )


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()  # `flask serve` stops gunicorn and the scheduler
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def send_load(port: int, client: str, secret: str, senders: int, duration: float,
              rate: float) -> tuple[list[tuple[float, int]], float]:
    out: mp.Queue = mp.Queue()
    start = mp.Event()
    procs = [mp.Process(target=sender, args=(port, client, secret, duration, rate, i, start, out)) for i in range(senders)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let every sender import and sign before the clock starts
    started = time.perf_counter()
    start.set()
    results = [r for _ in procs for r in out.get()]
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join()
    return results, elapsed


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return round(sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))] * 1000, 1)


def database_counts(url: str) -> dict[str, Any]:
    import sqlalchemy as sa

    from config import normalize_database_url

    engine = sa.create_engine(normalize_database_url(url))
    try:
        with engine.connect() as conn:
            outbox = dict(conn.execute(sa.text("SELECT state, count(*) FROM outbox GROUP BY state")).all())
            escalations = conn.execute(sa.text("SELECT count(*) FROM escalations")).scalar_one()
    finally:
        engine.dispose()
    return {"outbox": outbox, "escalations": escalations}


def log_counts(text: str) -> dict[str, Any]:
    counts: dict[str, Any] = {name: len(pattern.findall(text)) for name, pattern in SERVER_LOG_FAILURES.items()}
    counts["failed_jobs"] = dict(Counter(SERVER_LOG_FAILURES["job_failures"].findall(text)))
    return counts


def measure(phase: str, args: argparse.Namespace, port: int, secret: str, duration: float, rate: float,
            log_path: str, receiver: Receiver, client_limit: str) -> dict[str, Any]:
    """One phase on a running server: the load, then what the scheduler and the server's log said meanwhile."""
    log_from = os.path.getsize(log_path)
    delivered_before = receiver.received
    poller = HealthPoller(port)
    results, elapsed = send_load(port, f"bench-{phase.replace('_', '-')}", secret, args.senders, duration, rate)
    time.sleep(1.5)  # the outbox job's next tick, so that its runs during the load are all seen
    scheduler = poller.stop()
    with open(log_path, errors="replace") as log:
        log.seek(log_from)
        server_log = log_counts(log.read())
    latencies = sorted(lat for lat, _ in results)
    statuses = Counter(status for _, status in results)
    record: dict[str, Any] = {
        "bench": "hotline", "phase": phase, "database": args.backend, "senders": args.senders,
        "rate_per_sender": rate or None, "gunicorn_workers": 2, "client_limit": client_limit,
        "seconds": round(elapsed, 1), "requests": len(results), "rps": round(len(results) / elapsed, 1),
        "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99), "max_ms": percentile(latencies, 1.0),
        "accepted": statuses[201] + statuses[200],
        "rejected": {"4xx": sum(n for s, n in statuses.items() if 400 <= s < 500),
                     "5xx": sum(n for s, n in statuses.items() if s >= 500), "no_answer": statuses[0]},
        "statuses": {str(s): n for s, n in sorted(statuses.items())},
        "scheduler": scheduler, "server_log": server_log, "callbacks_received": receiver.received - delivered_before,
    }
    record["scheduler_job_failed"] = bool(server_log["job_failures"] or any(scheduler["failed_runs_seen"].values()))
    return record


def serve_and_measure(url: str, tmp: str, client_limit: str, phases: list[tuple[str, float, float]],
                      args: argparse.Namespace, secrets: dict[str, str], receiver: Receiver) -> list[dict[str, Any]]:
    """Start the server with this client limit, run the (phase, seconds, rate) phases on it, stop it."""
    port = free_port()
    log_path = f"{tmp}/server-{phases[0][0]}.log"
    server = start_server(url, port, tmp, client_limit, log_path)
    try:
        wait_ready(port, 60, server)
        return [measure(phase, args, port, secrets[phase], seconds, rate, log_path, receiver, client_limit)
                for phase, seconds, rate in phases]
    finally:
        stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases (well under a minute in all)")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--duration", type=float, default=None, help="seconds of the paced phase (default 10, --quick 8); "
                                                                     "the others run 3/4 of it")
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--rate", type=float, default=5.0, help="petitions a second per sender in the paced phase")
    parser.add_argument("--limit", default="120/minute", help="the client limit of the limit phase")
    args = parser.parse_args()
    duration = args.duration or (8.0 if args.quick else 30.0)

    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):  # the outbox posts to loopback
        os.environ.pop(name, None)
    tmp = tempfile.mkdtemp(prefix="grid-bench-hotline-")
    url = args.database_url or f"sqlite:///{tmp}/bench.db"
    args.backend = url.split(":", 1)[0].split("+")[0]
    receiver = Receiver()
    secrets = prepare(url, receiver.url)
    paced, flat_out = serve_and_measure(url, tmp, LIFTED, [("paced", duration, args.rate), ("flat_out", duration * 0.75, 0.0)],
                                        args, secrets, receiver)
    counts = database_counts(url)
    emit(paced)
    emit(flat_out | counts)
    [limit] = serve_and_measure(url, tmp, args.limit, [("limit", duration * 0.75, 0.0)], args, secrets, receiver)
    allowed = parse_rates(args.limit)[0].hits
    limit["limit_holds"] = limit["accepted"] <= allowed and limit["statuses"].get("429", 0) > 0
    emit(limit)
    failed = any(r["scheduler_job_failed"] for r in (paced, flat_out, limit))
    emit({"bench": "hotline", "metric": "summary", "database": args.backend, "senders": args.senders,
          "paced": {"rps": paced["rps"], "p50_ms": paced["p50_ms"], "p99_ms": paced["p99_ms"], "rejected": paced["rejected"]},
          "flat_out": {"rps": flat_out["rps"], "p50_ms": flat_out["p50_ms"], "p99_ms": flat_out["p99_ms"],
                       "rejected": flat_out["rejected"]},
          "target_p99_ms": 100,
          "scheduler_job_failed": failed,
          "limit": {"accepted": limit["accepted"], "allowed": allowed, "holds": limit["limit_holds"]},
          **({"server_logs": tmp} if failed else {})})
    if not failed:
        shutil.rmtree(tmp, ignore_errors=True)  # kept, with the server's logs, when a job failed


if __name__ == "__main__":
    main()
