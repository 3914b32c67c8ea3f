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

    from grid_service.extensions import db
    from grid_service.scheduler import write_heartbeat

    beat = datetime.fromisoformat("2026-03-02T09:00:00+08:00")
    edge_clock.set(beat)
    assert client.get("/healthz").json["scheduler"] == {"status": "never_seen", "last_heartbeat": None,
                                                        "age_seconds": None}
    with app.app_context():
        write_heartbeat(db.session, beat, {"job": "sla-sweep"})

    edge_clock.set(beat + timedelta(seconds=20))
    fresh = client.get("/healthz")
    assert fresh.status_code == 200
    assert fresh.json["scheduler"] == {"status": "ok", "last_heartbeat": "2026-03-02T09:00:00+08:00", "age_seconds": 20.0}

    # Three sweep intervals (30 s each) and a little slack without a beat: the scheduler is reported dead,
    # but the web side still answers 200 (it can serve; escalations wait).
    edge_clock.set(beat + timedelta(minutes=5))
    stale = client.get("/healthz")
    assert stale.status_code == 200 and stale.json["database"] == "ok"
    assert stale.json["scheduler"]["status"] == "stale" and stale.json["scheduler"]["age_seconds"] == 300.0
