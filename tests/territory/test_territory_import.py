"""GeoJSON territory import: all or nothing, every problem reported, upsert without breaking events."""
from __future__ import annotations

import copy
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from grid_service.events.models import Event
from grid_service.infra.db import db
from grid_service.territory.importer import TerritoryImportError, export_units, import_units
from grid_service.territory.locator import territory_version
from grid_service.territory.models import Unit
from tests.helpers import T0, XIHU, rect, xihu

T1 = T0 + timedelta(days=1)
T2 = T0 + timedelta(days=2)


def feature(collection: dict, code: str) -> dict:
    return next(f for f in collection["features"] if f["properties"]["code"] == code)


def index_of(collection: dict, code: str) -> int:
    return next(i for i, f in enumerate(collection["features"]) if f["properties"]["code"] == code)


def unit(code: str) -> Unit | None:
    return db.session.scalar(sa.select(Unit).where(Unit.code == code))


def snapshot() -> tuple:
    """Everything an import may change: every unit row and the territory version."""
    rows = db.session.execute(
        sa.select(Unit.id, Unit.code, Unit.name, Unit.level, Unit.parent_id, Unit.path, Unit.region, Unit.boundary, Unit.updated_at)
        .order_by(Unit.id)
    ).all()
    return [tuple(row) for row in rows], territory_version(db.session)


def imported(collection: dict, now=T1, **kwargs):
    report = import_units(db.session, collection, now=now, **kwargs)
    db.session.commit()
    return report


def problems_of(collection: dict, **kwargs) -> list[tuple[int | None, str | None, str]]:
    with pytest.raises(TerritoryImportError) as caught:
        import_units(db.session, collection, now=T1, **kwargs)
    db.session.rollback()
    return [(p.index, p.code, p.message) for p in caught.value.problems]


def locate(app, lon: float, lat: float) -> tuple[str, str | None]:
    placement = app.extensions["locator"].get(db.session).locate(lon, lat)
    return db.session.get(Unit, placement.unit_id).code, placement.fallback


# ---------------------------------------------------------------- a valid district


def test_a_district_that_is_not_the_demo_imports_with_parents_listed_after_children(ctx):
    report = imported(xihu())

    assert (report.created, report.updated, report.unchanged) == (16, 0, 0)
    grid = unit("33010600200101")
    assert grid.path == "/330106/330106002/330106002001/33010600200101/"
    assert grid.parent_id == unit("330106002001").id
    assert grid.boundary["type"] == "MultiPolygon"
    street = unit("330106002")
    assert (street.name, street.region, street.boundary) == ("西溪街道", "东", None)
    assert unit("330106").parent_id is None
    assert unit("330106").created_at == T1
    assert territory_version(db.session) != ""


def test_import_never_commits(ctx):
    import_units(db.session, xihu(), now=T1)
    db.session.rollback()
    assert unit("330106") is None


@pytest.mark.parametrize(("lon", "lat", "code", "fallback"), [
    (120.105, 30.25, "33010600100101", None),
    (120.125, 30.265, "33010600100202", None),
    (120.135, 30.245, "33010600200101", None),  # first part of a MultiPolygon grid
    (120.155, 30.245, "33010600200101", None),  # its second part
    (120.145, 30.245, "33010600200103", None),  # the grid between the two parts
    (120.135, 30.255, "33010600200102", None),  # a grid with a hole, outside the hole
    (120.145, 30.255, "330106002001", "point_outside_grids"),  # inside the hole: the community
    (120.12, 30.275, "330106001002", "point_outside_grids"),  # a corner of 曙光社区 no grid covers
    (120.13, 30.285, "330106", "point_outside_grids"),  # the district's tip, under no street
    (121.50, 31.20, "330106", "point_outside_territory"),
])
def test_points_land_in_the_imported_grids(app, ctx, lon, lat, code, fallback):
    imported(xihu())
    assert locate(app, lon, lat) == (code, fallback)


def test_progress_counts_every_feature(ctx):
    steps: list[int] = []
    import_units(db.session, xihu(), now=T1, progress=steps.append)
    assert sum(steps) == 16


def test_import_takes_a_fixed_number_of_statements_whatever_the_size(ctx):
    def community_with_grids(count: int) -> dict:
        features = [
            {"type": "Feature", "properties": {"code": "440305", "name": "南山区", "level": "district"}, "geometry": None},
            {"type": "Feature", "properties": {"code": "440305001", "name": "粤海街道", "level": "street", "parent_code": "440305"}, "geometry": None},
            {"type": "Feature", "properties": {"code": "440305001001", "name": "科技园社区", "level": "community", "parent_code": "440305001"},
             "geometry": rect(113.9, 22.5, 113.9 + 0.001 * count, 22.501)},
        ]
        features += [
            {"type": "Feature", "properties": {"code": f"440305001001{i:03d}", "name": f"科技园网格{i}", "level": "grid", "parent_code": "440305001001"},
             "geometry": rect(113.9 + 0.001 * i, 22.5, 113.9 + 0.001 * (i + 1), 22.501)}
            for i in range(count)
        ]
        return {"type": "FeatureCollection", "features": features}

    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        import_units(db.session, community_with_grids(10), now=T1)
        small = len(statements)
        db.session.rollback()
        statements.clear()
        import_units(db.session, community_with_grids(300), now=T1)
        large = len(statements)
        db.session.rollback()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    assert large == small


# ---------------------------------------------------------------- bad files change nothing


def _grid(collection: dict) -> dict:
    return feature(collection, "33010600100101")


def _set_ring(collection: dict, ring: list) -> None:
    _grid(collection)["geometry"] = {"type": "Polygon", "coordinates": [ring]}


BOWTIE = [[120.10, 30.24], [120.11, 30.25], [120.11, 30.24], [120.10, 30.25], [120.10, 30.24]]

BAD_FEATURES = {
    "unclosed ring": (lambda fc: _grid(fc)["geometry"]["coordinates"][0].pop(), "33010600100101", "not closed"),
    "too few points": (lambda fc: _set_ring(fc, [[120.10, 30.24], [120.11, 30.25], [120.10, 30.24]]), "33010600100101", "too few points"),
    "self-intersection": (lambda fc: _set_ring(fc, BOWTIE), "33010600100101", "invalid polygon: Self-intersection"),
    "longitude out of range": (lambda fc: _set_ring(fc, [[200, 30.24], [201, 30.24], [201, 30.25], [200, 30.24]]), "33010600100101", "out of range"),
    "latitude out of range": (lambda fc: _set_ring(fc, [[120.1, 95], [120.2, 95], [120.2, 96], [120.1, 95]]), "33010600100101", "out of range"),
    "text coordinates": (lambda fc: _set_ring(fc, [["120.1", "30.24"]] * 4), "33010600100101", "2 numbers"),
    "grid without geometry": (lambda fc: _grid(fc).update(geometry=None), "33010600100101", "a grid needs a Polygon or MultiPolygon"),
    "point geometry": (lambda fc: _grid(fc).update(geometry={"type": "Point", "coordinates": [120.1, 30.24]}), "33010600100101", "must be a Polygon or MultiPolygon"),
    "empty polygon": (lambda fc: _grid(fc).update(geometry={"type": "Polygon", "coordinates": []}), "33010600100101", "non-empty array of linear rings"),
    "missing code": (lambda fc: _grid(fc)["properties"].pop("code"), None, "'code' is required"),
    "numeric code": (lambda fc: _grid(fc)["properties"].update(code=33010600100101), None, "'code' must be a string"),
    "code with a slash": (lambda fc: _grid(fc)["properties"].update(code="330106/01"), None, "'code' must be 1 to 32 letters"),
    "missing name": (lambda fc: _grid(fc)["properties"].pop("name"), "33010600100101", "'name' is required"),
    "name with a NUL": (lambda fc: _grid(fc)["properties"].update(name="网格\x00"), "33010600100101", "valid text"),
    "name with a lone surrogate": (lambda fc: _grid(fc)["properties"].update(name=json.loads('"\\ud800"')), "33010600100101", "valid text"),
    "parent code that is no code": (lambda fc: _grid(fc)["properties"].update(parent_code="x" * 40), "33010600100101", "'parent_code' must be a unit code"),
    "unknown level": (lambda fc: _grid(fc)["properties"].update(level="village"), "33010600100101", "'level' must be one of"),
    "numeric parent code": (lambda fc: _grid(fc)["properties"].update(parent_code=330106001001), "33010600100101", "'parent_code' must be a string"),
    "numeric region": (lambda fc: _grid(fc)["properties"].update(region=1), "33010600100101", "'region' must be a string"),
    "properties not an object": (lambda fc: _grid(fc).update(properties=["330106"]), None, "'properties' must be an object"),
    "unknown parent": (lambda fc: _grid(fc)["properties"].update(parent_code="330106009001"), "33010600100101", "unknown parent '330106009001'"),
    "grid under a street": (lambda fc: _grid(fc)["properties"].update(parent_code="330106001"), "33010600100101", "must be a community, but 330106001 is a street"),
    "street under a street": (lambda fc: feature(fc, "330106002")["properties"].update(parent_code="330106001"), "330106002", "must be a district"),
    "district with a parent": (lambda fc: feature(fc, "330106")["properties"].update(parent_code="150299"), "330106", "a district has no parent"),
    "street without parent": (lambda fc: feature(fc, "330106001")["properties"].pop("parent_code"), "330106001", "'parent_code' is required"),
    "grid outside its community": (lambda fc: _set_ring(fc, rect(120.10, 30.23, 120.115, 30.25)["coordinates"][0]), "33010600100101", "not inside its parent 330106001001"),
    "community outside its street": (lambda fc: feature(fc, "330106001001").update(geometry=rect(120.09, 30.24, 120.13, 30.26)), "330106001001", "not inside its parent 330106001"),
    "street outside the district": (lambda fc: feature(fc, "330106001").update(geometry=rect(120.10, 30.24, 120.13, 30.30)), "330106001", "not inside its parent 330106"),
    "level change of a stored unit": (lambda fc: fc["features"].append(
        {"type": "Feature", "properties": {"code": "150299001", "name": "改级", "level": "community", "parent_code": "330106001"}, "geometry": None}),
        "150299001", "exists as a street; its level cannot change to community"),
}


@pytest.mark.parametrize("case", list(BAD_FEATURES))
def test_a_bad_feature_is_reported_and_nothing_changes(territory, case):
    mutate, code, message = BAD_FEATURES[case]
    collection = xihu()
    before = snapshot()
    mutate(collection)
    index = next((i for i, f in enumerate(collection["features"])
                  if isinstance(f.get("properties"), dict) and f["properties"].get("code") == code), None)

    problems = problems_of(collection)

    assert len(problems) == 1, problems
    got_index, got_code, got_message = problems[0]
    assert message in got_message
    assert got_code == code
    if code is not None:
        assert got_index == index
    else:
        assert got_index == 0  # the first feature of the file is the grid that lost its code
    assert snapshot() == before
    assert unit("330106") is None


def test_duplicate_code_is_reported_on_the_second_feature(territory):
    collection = xihu()
    collection["features"].append(copy.deepcopy(_grid(collection)))
    before = snapshot()

    assert problems_of(collection) == [(16, "33010600100101", f"duplicate code: feature #{index_of(collection, '33010600100101')} has it too")]
    assert snapshot() == before


@pytest.mark.parametrize(("collection", "message"), [
    ({"type": "Feature", "properties": {}, "geometry": None}, "expected a GeoJSON FeatureCollection, got type 'Feature'"),
    ([], "expected a GeoJSON FeatureCollection object, got an array"),
    ({"type": "FeatureCollection", "features": {}}, "'features' must be an array, got an object"),
])
def test_a_file_that_is_not_a_feature_collection_is_refused(territory, collection, message):
    before = snapshot()
    assert problems_of(collection) == [(None, None, message)]
    assert snapshot() == before


def test_every_problem_is_reported_at_once_with_index_and_code(territory):
    collection = xihu()
    collection["features"][0]["geometry"]["coordinates"][0].pop()  # unclosed
    feature(collection, "33010600200202")["properties"]["parent_code"] = "999"
    feature(collection, "330106002001")["properties"]["level"] = "village"
    collection["features"][3] = 42
    before = snapshot()

    problems = problems_of(collection)

    assert [(index, code) for index, code, _ in problems] == [
        (0, "33010600100101"), (3, None), (4, "33010600200202"), (5, "330106002001"),
    ]
    assert snapshot() == before


def test_a_child_of_a_bad_parent_is_not_blamed_for_it(territory):
    collection = xihu()
    feature(collection, "330106001001")["properties"]["name"] = ""

    problems = problems_of(collection)

    assert [(code, message) for _, code, message in problems] == [("330106001001", "property 'name' is required and must be a non-empty string")]


def test_shared_edges_and_float_noise_are_inside_the_parent(territory):
    collection = xihu()
    _set_ring(collection, rect(120.10 - 1e-9, 30.24, 120.115, 30.26 + 1e-9)["coordinates"][0])
    assert imported(collection).created == 16


def test_code_convention_is_enforced_when_asked(ctx):
    collection = xihu()
    _grid(collection)["properties"]["code"] = "3301060010011"
    feature(collection, "330106")["properties"]["code"] = "33010"
    for f in collection["features"]:
        if f["properties"].get("parent_code") == "330106":
            f["properties"]["parent_code"] = "33010"
    digits = {"district": 6, "street": 3, "community": 3, "grid": 2}

    problems = problems_of(collection, code_digits=digits)

    assert {(code, message) for _, code, message in problems} == {
        ("33010", "a district code must be 6 digits"),
        ("330106001", "a street code must be its parent's code 33010 followed by 3 digits"),
        ("330106002", "a street code must be its parent's code 33010 followed by 3 digits"),
        ("3301060010011", "a grid code must be its parent's code 330106001001 followed by 2 digits"),
    }
    assert imported(xihu(), code_digits=digits).created == 16


# ---------------------------------------------------------------- re-import


def _event_in(grid: Unit, categories) -> Event:
    event = Event(
        source="grid_worker", category_id=categories["01001"].id, priority="normal", state="registered", level="grid",
        owner_id=grid.id, located_unit_id=grid.id, grid_id=grid.id, description="暴露垃圾", lon=120.105, lat=30.265,
        received_at=T1, created_at=T1, updated_at=T1,
    )
    db.session.add(event)
    db.session.commit()
    return event


def test_reimporting_the_same_file_changes_nothing(ctx):
    imported(xihu())
    before = snapshot()

    report = imported(xihu(), now=T2)

    assert (report.created, report.updated, report.unchanged) == (0, 0, 16)
    assert snapshot() == before


@pytest.mark.skip_audit_check  # events inserted directly to pin them to units
def test_reimport_renames_reshapes_and_moves_units_and_their_descendants(app, ctx, categories):
    imported(xihu())
    grid = unit("33010600100201")
    event = _event_in(grid, categories)
    grid_id, version = grid.id, territory_version(db.session)
    assert locate(app, 120.1125, 30.265) == ("33010600100201", None)

    changed = xihu()
    feature(changed, "33010600100201")["properties"]["name"] = "曙光网格（新）"
    # The grid shrinks to its western half…
    feature(changed, "33010600100201")["geometry"] = rect(120.10, 30.26, 120.1075, 30.28)
    # …and 曙光社区 (with both its grids) moves from 北山街道 to 西溪街道.
    feature(changed, "330106001002")["properties"]["parent_code"] = "330106002"

    report = imported(changed, now=T2)

    # The grid (renamed, reshaped, moved), its community (moved) and the community's other grid (moved).
    assert (report.created, report.updated, report.unchanged) == (0, 3, 13)
    grid = unit("33010600100201")
    assert grid.id == grid_id
    assert grid.name == "曙光网格（新）"
    assert grid.path == "/330106/330106002/330106001002/33010600100201/"
    assert unit("33010600100202").path == "/330106/330106002/330106001002/33010600100202/"
    assert unit("330106001002").parent_id == unit("330106002").id
    assert unit("33010600100101").updated_at == T1  # untouched
    assert grid.updated_at == T2
    assert territory_version(db.session) != version
    db.session.expire_all()
    kept = db.session.get(Event, event.id)
    assert (kept.grid.code, kept.owner.code, kept.grid.name) == ("33010600100201", "33010600100201", "曙光网格（新）")
    # The locator sees the new boundary: the eastern half now belongs to no grid.
    assert locate(app, 120.1125, 30.265) == ("330106001002", "point_outside_grids")
    assert locate(app, 120.105, 30.265) == ("33010600100201", None)


def test_moving_a_unit_alone_rewrites_the_paths_of_the_units_under_it(ctx):
    imported(xihu())
    only_the_community = {"type": "FeatureCollection", "features": [feature(xihu(), "330106001002")]}
    only_the_community["features"][0]["properties"]["parent_code"] = "330106002"

    report = imported(only_the_community, now=T2)

    assert (report.created, report.updated, report.unchanged) == (0, 1, 0)
    for code in ("33010600100201", "33010600100202"):
        moved = unit(code)
        assert moved.path == f"/330106/330106002/330106001002/{code}/"
        assert moved.updated_at == T2


def test_a_new_boundary_must_still_hold_the_stored_children_it_does_not_move(ctx):
    imported(xihu())
    before = snapshot()
    smaller = {"type": "FeatureCollection", "features": [feature(xihu(), "330106001001")]}
    smaller["features"][0]["geometry"] = rect(120.10, 30.24, 120.12, 30.26)

    problems = problems_of(smaller)

    assert problems == [(0, "330106001001", "the new boundary leaves out the stored grid 33010600100102, which this file does not move")]
    assert snapshot() == before


def test_a_failed_reimport_keeps_the_previous_import(ctx):
    imported(xihu())
    before = snapshot()
    changed = xihu()
    feature(changed, "330106001")["properties"]["name"] = "新名字"
    _grid(changed)["geometry"] = {"type": "Polygon", "coordinates": [BOWTIE]}

    assert len(problems_of(changed)) == 1
    assert snapshot() == before
    assert unit("330106001").name == "北山街道"


def test_export_imports_again_unchanged(ctx, territory):
    imported(xihu())
    exported = json.loads(json.dumps(export_units(db.session)))
    assert [f["id"] for f in exported["features"][:2]] == ["150299", "150299001"]  # parents first

    report = imported(exported, now=T2)

    assert (report.created, report.updated, report.unchanged) == (0, 0, 31)


# ---------------------------------------------------------------- CLI


def test_cli_imports_a_file_and_prints_a_summary(runner, ctx):
    result = runner.invoke(args=["territory", "import", str(XIHU)])
    assert result.exit_code == 0, result.output
    assert "16 created, 0 updated, 0 unchanged" in result.output
    assert unit("33010600200202").name == "文新第二网格"

    again = runner.invoke(args=["territory", "import", str(XIHU)])
    assert again.exit_code == 0
    assert "0 created, 0 updated, 16 unchanged" in again.output


def test_cli_prints_every_problem_and_fails(runner, ctx, tmp_path):
    collection = xihu()
    collection["features"][0]["geometry"]["coordinates"][0].pop()
    feature(collection, "33010600200202")["properties"]["parent_code"] = "999"
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps(collection, ensure_ascii=False), encoding="utf-8")

    result = runner.invoke(args=["territory", "import", str(path)])

    assert result.exit_code == 1
    assert "feature #0 (33010600100101): ring 0 (exterior) is not closed: its first and last positions differ" in result.output
    assert "feature #4 (33010600200202): unknown parent '999': neither in this file nor in the database" in result.output
    assert "2 problems; nothing was imported." in result.output
    assert unit("330106") is None


def test_cli_refuses_a_file_that_is_not_json(runner, ctx, tmp_path):
    path = tmp_path / "broken.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [', encoding="utf-8")

    result = runner.invoke(args=["territory", "import", str(path)])

    assert result.exit_code == 1
    assert "file: not valid JSON" in result.output


def test_cli_dry_run_saves_nothing(runner, ctx):
    result = runner.invoke(args=["territory", "import", "--dry-run", str(XIHU)])
    assert result.exit_code == 0
    assert "16 created, 0 updated, 0 unchanged (dry run: nothing saved)" in result.output
    assert unit("330106") is None


def test_cli_shows_progress_for_large_files(runner, ctx, tmp_path):
    features = [{"type": "Feature", "properties": {"code": "440305", "name": "南山区", "level": "district"}, "geometry": None},
                {"type": "Feature", "properties": {"code": "440305001", "name": "粤海街道", "level": "street", "parent_code": "440305"}, "geometry": None},
                {"type": "Feature", "properties": {"code": "440305001001", "name": "科技园社区", "level": "community", "parent_code": "440305001"}, "geometry": None}]
    features += [{"type": "Feature", "properties": {"code": f"440305001001{i:04d}", "name": f"网格{i}", "level": "grid", "parent_code": "440305001001"},
                  "geometry": rect(113.9 + 0.001 * i, 22.5, 113.901 + 0.001 * i, 22.501)} for i in range(1200)]
    path = tmp_path / "large.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")

    result = runner.invoke(args=["territory", "import", str(path)])

    assert result.exit_code == 0, result.output
    assert "Checking 1203 features" in result.output
    assert "1203 created" in result.output


def test_cli_exports_one_level_under_one_unit(runner, ctx):
    runner.invoke(args=["territory", "import", str(XIHU)])

    result = runner.invoke(args=["territory", "export", "--level", "grid", "--within", "330106002"])

    assert result.exit_code == 0
    collection = json.loads(result.output)
    assert collection["type"] == "FeatureCollection"
    assert [f["properties"]["code"] for f in collection["features"]] == [
        "33010600200101", "33010600200102", "33010600200103", "33010600200201", "33010600200202",
    ]
    assert collection["features"][0]["properties"] == {
        "code": "33010600200101", "name": "古荡第一网格", "level": "grid", "parent_code": "330106002001", "region": None,
    }
    assert collection["features"][0]["geometry"]["type"] == "MultiPolygon"


def test_cli_export_of_an_unknown_unit_fails(runner, ctx):
    result = runner.invoke(args=["territory", "export", "--within", "999999"])
    assert result.exit_code != 0
    assert "unknown unit '999999'" in result.output
