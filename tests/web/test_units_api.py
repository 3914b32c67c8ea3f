"""Units API: a unit with its parent chain and children; units as GeoJSON for maps."""
from __future__ import annotations

import pytest

from grid_service.infra.db import db
from grid_service.territory.importer import import_units
from tests.helpers import T0, xihu


def test_a_community_shows_its_parent_chain_and_its_grids(worker):
    response = worker.get("/api/v1/units/150299001001")

    assert response.status_code == 200
    body = response.json
    assert {k: body[k] for k in ("code", "name", "level", "region", "parent_code", "path", "has_boundary")} == {
        "code": "150299001001", "name": "测试社区1-1", "level": "community", "region": None,
        "parent_code": "150299001", "path": ["150299", "150299001", "150299001001"], "has_boundary": True,
    }
    assert body["ancestors"] == [
        {"code": "150299001", "name": "测试街道1", "level": "street"},
        {"code": "150299", "name": "测试区", "level": "district"},
    ]
    assert body["children"] == [
        {"code": "15029900100101", "name": "测试网格1-1-1", "level": "grid"},
        {"code": "15029900100102", "name": "测试网格1-1-2", "level": "grid"},
    ]
    assert body["updated_at"].endswith("+08:00")


def test_a_district_has_no_parent_and_a_grid_no_children(worker):
    district = worker.get("/api/v1/units/150299").json
    assert (district["parent_code"], district["ancestors"]) == (None, [])
    assert [c["code"] for c in district["children"]] == ["150299001", "150299002"]

    street = worker.get("/api/v1/units/150299002").json
    assert street["region"] == "东"

    grid = worker.get("/api/v1/units/15029900200202").json
    assert grid["children"] == []
    assert [a["code"] for a in grid["ancestors"]] == ["150299002002", "150299002", "150299"]


@pytest.mark.parametrize("code", ["999999", "nope", "x" * 200, "%00", "150299%20"])
def test_an_unknown_unit_is_404(worker, code):
    response = worker.get(f"/api/v1/units/{code}")
    assert response.status_code == 404
    assert response.json["code"] == "not_found"


@pytest.mark.parametrize("url", ["/api/v1/units/150299", "/api/v1/units.geojson"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer gs_not-a-token"}, {"Authorization": "Basic abc"}])
def test_units_need_a_valid_bearer_token(client, territory, url, headers):
    response = client.get(url, headers=headers)
    assert response.status_code == 401
    assert response.json["code"] == "unauthorized"


def test_map_of_the_grids_under_a_street(worker):
    response = worker.get("/api/v1/units.geojson?level=grid&within=150299001")

    assert response.status_code == 200
    assert response.mimetype == "application/geo+json"
    collection = response.json
    assert collection["type"] == "FeatureCollection"
    assert [f["id"] for f in collection["features"]] == ["15029900100101", "15029900100102", "15029900100201", "15029900100202"]
    first = collection["features"][0]
    assert first["properties"] == {"code": "15029900100101", "name": "测试网格1-1-1", "level": "grid", "parent_code": "150299001001", "region": None}
    assert first["geometry"]["type"] == "Polygon"
    assert first["geometry"]["coordinates"][0][0] == [110.0, 40.0]


def test_map_of_everything_lists_parents_first(worker):
    collection = worker.get("/api/v1/units.geojson").json
    codes = [f["id"] for f in collection["features"]]
    assert len(codes) == 15
    assert codes[:3] == ["150299", "150299001", "150299001001"]


def test_map_of_an_imported_district_keeps_multipolygons_and_streets_without_boundary(worker):
    import_units(db.session, xihu(), now=T0)
    db.session.commit()

    collection = worker.get("/api/v1/units.geojson?within=330106002").json

    by_code = {f["id"]: f for f in collection["features"]}
    assert by_code["330106002"]["geometry"] is None
    assert by_code["330106002"]["properties"]["region"] == "东"
    assert by_code["33010600200101"]["geometry"]["type"] == "MultiPolygon"
    assert len(by_code) == 8


@pytest.mark.parametrize("query", ["level=village", "level=", "within=", "within=" + "1" * 40, "colour=red", "within=%00"])
def test_a_bad_map_query_is_422(worker, query):
    response = worker.get(f"/api/v1/units.geojson?{query}")
    assert response.status_code == 422
    assert response.json["code"] == "validation_error"
    assert response.json["errors"]


def test_a_map_within_an_unknown_unit_is_404(worker):
    response = worker.get("/api/v1/units.geojson?within=999999")
    assert response.status_code == 404
    assert response.json["code"] == "not_found"


def test_the_openapi_document_describes_both_endpoints(client):
    paths = client.get("/openapi.json").json["paths"]
    detail = paths["/api/v1/units/{code}"]["get"]
    assert {"200", "401", "404"} <= set(detail["responses"])
    assert detail["security"] == [{"bearerAuth": []}]
    geo = paths["/api/v1/units.geojson"]["get"]
    assert {"200", "401", "404", "422"} <= set(geo["responses"])
    assert "application/geo+json" in geo["responses"]["200"]["content"]
    assert {p["name"] for p in geo["parameters"]} == {"level", "within"}
