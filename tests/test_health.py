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
