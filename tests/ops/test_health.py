def test_healthz_reports_database_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json["database"] == "ok"
    assert response.json["time"].endswith("+08:00")


def test_unknown_url_answers_json_error(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert response.json["code"] == "not_found"
    assert set(response.json) >= {"code", "message", "errors"}


def test_docs_page_and_openapi_are_served(client):
    assert client.get("/openapi.json").json["openapi"].startswith("3.")
    page = client.get("/docs")
    assert page.status_code == 200 and b"swagger" in page.data.lower()
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_healthz_reports_the_scheduler_heartbeat(app, client, edge_clock):
    from datetime import datetime, timedelta

    from grid_service.infra.db import db
    from grid_service.ops.jobs import write_heartbeat

    beat = datetime.fromisoformat("2026-03-02T09:00:00+08:00")
    edge_clock.set(beat)
    assert client.get("/healthz").json["scheduler"] == {"status": "never_seen", "last_heartbeat": None,
                                                        "age_seconds": None, "jobs": {}}
    with app.app_context():
        write_heartbeat(db.session, beat, {"job": "sla-sweep"})

    edge_clock.set(beat + timedelta(seconds=20))
    fresh = client.get("/healthz")
    assert fresh.status_code == 200
    assert fresh.json["scheduler"] == {"status": "ok", "last_heartbeat": "2026-03-02T09:00:00+08:00", "age_seconds": 20.0,
                                       "jobs": {}}

    # Three sweep intervals (30 s each) and a little slack without a beat: the scheduler is reported dead,
    # but the web side still answers 200 (it can serve; escalations wait).
    edge_clock.set(beat + timedelta(minutes=5))
    stale = client.get("/healthz")
    assert stale.status_code == 200 and stale.json["database"] == "ok"
    assert stale.json["scheduler"]["status"] == "stale" and stale.json["scheduler"]["age_seconds"] == 300.0


def test_healthz_shows_each_jobs_last_run_and_a_failing_sweep(app, client, edge_clock, monkeypatch):
    from datetime import datetime

    import grid_service.ops.scheduler as scheduler
    from grid_service.infra.db import db
    from grid_service.infra.state import ServiceState

    instants = iter(datetime.fromisoformat(f"2026-03-02T09:00:{s:02d}+08:00") for s in range(0, 60, 2))
    monkeypatch.setattr(scheduler, "utcnow", lambda: next(instants))
    sweep_job = next(job for job in scheduler.JOBS if job.id == "sla-sweep")
    scheduler._tick(app, sweep_job)
    edge_clock.set("2026-03-02T09:01:00+08:00")
    body = client.get("/healthz").json["scheduler"]
    assert body["status"] == "ok"
    run = body["jobs"]["sla-sweep"]
    assert run["ok"] is True and run["error"] is None and run["seconds"] >= 0
    assert {"claimed", "warned", "breached", "escalated"} <= set(run["summary"])

    # The database refuses the sweep's writes (say, the disk is full): the scheduler lives, the sweep
    # fails, and /healthz says which job and why — not only, minutes later, that the heartbeat is stale.
    def broken(app, now):
        raise RuntimeError("database or disk is full")

    monkeypatch.setattr(scheduler, "JOBS", [scheduler.Job("sla-sweep", broken, "SWEEP_INTERVAL_SECONDS", 30.0)])
    scheduler._tick(app, scheduler.JOBS[0])
    body = client.get("/healthz").json["scheduler"]
    assert body["status"] == "failing"
    assert body["jobs"]["sla-sweep"]["ok"] is False
    assert body["jobs"]["sla-sweep"]["error"] == "RuntimeError: database or disk is full"
    assert body["jobs"]["sla-sweep"]["summary"] is None

    # A very long error is cut to fit; the next good run clears the failure.
    def verbose(app, now):
        raise ValueError("x" * 500)

    scheduler._tick(app, scheduler.Job("sla-sweep", verbose, "SWEEP_INTERVAL_SECONDS", 30.0))
    with app.app_context():
        assert len(db.session.get(ServiceState, "job:sla-sweep").value) <= 256
    assert client.get("/healthz").json["scheduler"]["jobs"]["sla-sweep"]["error"].startswith("ValueError: xxx")
    scheduler._tick(app, sweep_job)
    assert client.get("/healthz").json["scheduler"]["status"] == "ok"


def test_healthz_reports_the_rate_limit_counter_store(client, backend):
    section = client.get("/healthz").json["rate_limits"]
    # Off under TESTING; the store is there all the same (the login lockout counts in it too).
    assert section == {"enabled": False, "store": "sidecar" if backend == "sqlite" else "database", "status": "ok",
                       "counting": "shared", "failures": 0, "last_failure_at": None, "error": None}


def test_healthz_says_when_the_rate_limit_store_fails_and_when_it_answers_again(app, client, edge_clock):
    import sqlite3

    import sqlalchemy as sa

    from grid_service.web.kit.security import MemoryStorage, Rate, RateLimiter

    class FlakyStore(MemoryStorage):
        """A shared store whose disk can fail."""

        where = "separate"
        broken = False

        def incr(self, *args):
            if self.broken:
                raise sa.exc.OperationalError("INSERT INTO rate_counters …", {}, sqlite3.OperationalError("disk I/O error"))
            return super().incr(*args)

        def probe(self, now):
            self.incr("healthz:probe", now, 1)

    ticks = [1000.0]  # the limiter's monotonic clock
    store = FlakyStore()
    app.extensions["rate_limiter"] = RateLimiter(store, {"client": (Rate(1200, 60),)}, clock=lambda: ticks[0])
    edge_clock.set("2026-03-02T09:00:00+08:00")
    healthy = {"enabled": True, "store": "separate", "status": "ok", "counting": "shared", "failures": 0,
               "last_failure_at": None, "error": None}
    assert client.get("/healthz").json["rate_limits"] == healthy

    store.broken = True
    failing = client.get("/healthz")
    assert failing.status_code == 200 and failing.json["status"] == "ok"  # HTTP 200/503 as before: only the database
    assert failing.json["rate_limits"] == healthy | {
        "status": "failing", "counting": "per_process", "failures": 1,
        "last_failure_at": "2026-03-02T09:00:00+08:00", "error": "OperationalError: disk I/O error"}

    store.broken = False  # mended: it takes the probe's write, counting is shared again at once …
    ticks[0] += 30
    mended = client.get("/healthz").json["rate_limits"]
    assert (mended["status"], mended["counting"]) == ("failing", "shared")  # … but it failed within the minute
    ticks[0] += 31
    assert client.get("/healthz").json["rate_limits"] == healthy | {
        "failures": 1, "last_failure_at": "2026-03-02T09:00:00+08:00"}
