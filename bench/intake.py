"""Intake throughput: POST /api/v1/events under gunicorn (2 workers) vs a bare insert-and-commit.

Both endpoints are served by the same gunicorn, on the same database, in the same run; a load
generator in other processes keeps a fixed number of requests in flight. Prints JSON lines:
one per round and target, then the medians and the ratio intake / bare.

    .venv/bin/python bench/intake.py --quick
    .venv/bin/python bench/intake.py --database-url postgresql://postgres@127.0.0.1:5432/bench
"""
from __future__ import annotations

import sys
from pathlib import Path

# bench/calendar.py is named like the stdlib module (which `holidays` and `email` import): keep
# bench/ itself off the import path, and put the repository root on it.
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
import socket
import statistics
import subprocess
import tempfile
import time
from datetime import timedelta

GRID = (109.80, 40.60, 109.90, 40.70)  # one large grid so every random point is inside it


def post(port: int, path: str, body: str | bytes, headers: dict[str, str], *, timeout: float) -> int:
    """One POST to the local server on a fresh connection: its status, 0 when there was no answer."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status
    except OSError:
        return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_database(url: str) -> str:
    """Fresh schema, a one-grid territory, a category and a grid worker; returns their token."""
    os.environ["DATABASE_URL"] = url
    import sqlalchemy as sa

    from bench.bench_app import bench_rows
    from grid_service import create_app
    from grid_service.auth.service import create_user, issue_token
    from grid_service.events.models import Category
    from grid_service.infra.db import db
    from grid_service.infra.timeutil import utcnow
    from grid_service.territory.locator import bump_territory_version
    from grid_service.territory.models import Unit

    app = create_app()
    with app.app_context():
        db.drop_all()
        bench_rows.drop(db.engine, checkfirst=True)
        db.create_all()
        bench_rows.create(db.engine)
        now = utcnow()
        lon0, lat0, lon1, lat1 = GRID
        ring = [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]
        district = Unit(code="150204", name="青山区", level="district", path="/150204/", created_at=now, updated_at=now)
        db.session.add(district)
        db.session.flush()
        parent = district
        for code, level in (("150204001", "street"), ("150204001001", "community"), ("15020400100101", "grid")):
            unit = Unit(code=code, name=code, level=level, parent_id=parent.id, path=parent.path + code + "/",
                        boundary={"type": "Polygon", "coordinates": [ring]}, created_at=now, updated_at=now)
            db.session.add(unit)
            db.session.flush()
            parent = unit
        major = Category(code="01", name="市容环境", level="major")
        db.session.add(major)
        db.session.flush()
        db.session.add(Category(code="01001", name="暴露垃圾", level="minor", parent_id=major.id))
        bump_territory_version(db.session, now)
        user = create_user(db.session, name="bench-worker", role="grid_worker", unit_code="15020400100101", now=now)
        token = issue_token(db.session, user, now=now, ttl=timedelta(days=1))
        db.session.commit()
        db.session.execute(sa.text("SELECT 1"))
        db.engine.dispose()
    return token


def client_loop(port: int, path: str, token: str, duration: float, seed: int, out: mp.Queue) -> None:
    """Send requests back to back for `duration` seconds; report latencies and failures."""
    rng = random.Random(seed)
    latencies: list[float] = []
    failures = 0
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    deadline = time.perf_counter() + duration
    while time.perf_counter() < deadline:
        lon = rng.uniform(GRID[0] + 0.001, GRID[2] - 0.001)
        lat = rng.uniform(GRID[1] + 0.001, GRID[3] - 0.001)
        body = json.dumps({"category_code": "01001", "description": "路边暴露垃圾，请尽快清运", "lat": lat, "lon": lon,
                           "address": "青山区钢铁大街", "resident_name": "张三", "resident_phone": "13812345678"})
        started = time.perf_counter()
        ok = post(port, path, body, headers, timeout=30) == 201
        if ok:
            latencies.append(time.perf_counter() - started)
        else:
            failures += 1
    out.put((latencies, failures))


def measure(port: int, path: str, token: str, duration: float, clients: int) -> dict:
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=client_loop, args=(port, path, token, duration, i, out)) for i in range(clients)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    latencies = sorted(lat for lats, _ in results for lat in lats)
    failures = sum(f for _, f in results)
    n = len(latencies)
    return {
        "requests": n, "failures": failures, "rps": round(n / elapsed, 1),
        "p50_ms": round(latencies[n // 2] * 1000, 2) if n else None,
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 2) if n else None,
    }


def wait_ready(port: int, timeout: float = 30, server: subprocess.Popen | None = None) -> None:
    """Until the server at `port` answers /healthz with 200 (SystemExit if it exits or the time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise SystemExit("the server exited while starting")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rounds (well under a minute in all)")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--duration", type=float, default=None, help="seconds per round and target")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client connections")
    args = parser.parse_args()
    duration = args.duration or (4.0 if args.quick else 15.0)
    rounds = args.rounds or (2 if args.quick else 3)

    tmp = tempfile.mkdtemp(prefix="grid-bench-")
    url = args.database_url or f"sqlite:///{tmp}/bench.db"
    token = prepare_database(url)
    port = free_port()
    # One user sends hundreds of requests a second here: lift the per-user limit (it still counts).
    env = dict(os.environ, DATABASE_URL=url, LOG_LEVEL="WARNING", UPLOAD_FOLDER=f"{tmp}/uploads", PYTHONPATH=str(ROOT),
               RATE_LIMIT_USER="1000000/minute")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}", "bench.bench_app:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    backend = url.split(":", 1)[0].split("+")[0]
    try:
        wait_ready(port)
        measure(port, "/bench/bare", token, 1.0, args.clients)  # warm both workers and the caches
        measure(port, "/api/v1/events", token, 1.0, args.clients)
        summary: dict[str, list[float]] = {"bare_insert": [], "post_events": []}
        for round_no in range(rounds):
            # Alternate the order so drift on a shared machine hits both targets alike.
            targets = [("bare_insert", "/bench/bare"), ("post_events", "/api/v1/events")]
            for name, path in targets if round_no % 2 == 0 else targets[::-1]:
                result = measure(port, path, token, duration, args.clients)
                summary[name].append(result["rps"])
                print(json.dumps({"bench": "intake", "database": backend, "round": round_no, "target": name,
                                  "clients": args.clients, "gunicorn_workers": 2, **result}), flush=True)
        bare, intake = (round(statistics.median(summary[target]), 1) for target in ("bare_insert", "post_events"))
        print(json.dumps({"bench": "intake", "database": backend, "metric": "median_rps", "bare_insert": bare,
                          "post_events": intake, "ratio_intake_to_bare": round(intake / bare, 3) if bare else None,
                          "target_ratio": 0.5}), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
