"""Fixtures: an app per test on SQLite and, when TEST_DATABASE_URL is set, on PostgreSQL too."""
from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from config import TestConfig, normalize_database_url
from grid_service import create_app
from grid_service.auth.models import User
from grid_service.auth.service import create_user, issue_token
from grid_service.events import audit
from grid_service.events.intake import forget_reserved_event_ids
from grid_service.events.models import Category
from grid_service.infra.db import db
from grid_service.territory.models import LEVELS, Unit

PG_URL = os.environ.get("TEST_DATABASE_URL")
PG_SKIP_REASON = "TEST_DATABASE_URL is not set: the PostgreSQL variant of this test is skipped"
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # Monday 2026-03-02 09:00 in Shanghai

_pg_schema_ready = False


def pg_url() -> str:
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    return normalize_database_url(PG_URL)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    if request.param == "postgresql":
        pg_url()
    return request.param


@pytest.fixture
def database_url(backend, tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}" if backend == "sqlite" else pg_url()


def _reset_postgres() -> None:
    global _pg_schema_ready
    if not _pg_schema_ready:
        with db.engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        db.metadata.create_all(db.engine)
        _pg_schema_ready = True
    else:
        tables = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    # The sequences start again: a block of event ids held from an earlier test would come round twice.
    forget_reserved_event_ids()


@pytest.fixture
def app(database_url, backend, tmp_path, request):
    class Config(TestConfig):
        SQLALCHEMY_DATABASE_URI = database_url
        UPLOAD_FOLDER = str(tmp_path / "uploads")

    application = create_app(Config)
    with application.app_context():
        if backend == "sqlite":
            db.create_all()
        else:
            _reset_postgres()
    yield application
    with application.app_context():
        db.session.remove()
        # Whatever a test did through the service, the audit trail it left must verify.
        if not request.node.get_closest_marker("skip_audit_check"):
            report = audit.verify(db.session, audit.current_keys())
            db.session.remove()
            assert report.ok, f"the audit trail does not verify: {report.problem}"
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield


def rect(lon0: float, lat0: float, lon1: float, lat1: float) -> dict[str, Any]:
    """A GeoJSON Polygon: the rectangle between two corners."""
    ring = [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]
    return {"type": "Polygon", "coordinates": [ring]}


def square(lon: float, lat: float, size: float) -> dict[str, Any]:
    """A GeoJSON Polygon: the square with south-west corner (lon, lat)."""
    return rect(lon, lat, lon + size, lat + size)


def make_unit(code: str, level: str, name: str | None = None, parent: Unit | None = None,
              boundary: dict | None = None, region: str | None = None) -> Unit:
    assert level in LEVELS
    unit = Unit(
        code=code, name=name or f"单元{code}", level=level, parent_id=parent.id if parent else None,
        path=(parent.path if parent else "/") + code + "/", region=region, boundary=boundary,
        created_at=T0, updated_at=T0,
    )
    db.session.add(unit)
    db.session.flush()
    return unit


@pytest.fixture
def territory(ctx) -> dict[str, Unit]:
    """A small district: 2 streets × 2 communities × 2 grids, 0.01° squares from (110.00, 40.00).

    Street s1 covers lon 110.00–110.04, s2 covers 110.04–110.08; each grid is 0.02° wide.
    The district's boundary reaches lat 40.06, above every street: points up there fall in no grid.
    """
    units: dict[str, Unit] = {}
    units["d"] = make_unit("150299", "district", "测试区", boundary=rect(110.0, 40.0, 110.08, 40.06))
    for si in range(2):
        s_lon = 110.0 + 0.04 * si
        s = make_unit(f"150299{si + 1:03d}", "street", f"测试街道{si + 1}", units["d"],
                      rect(s_lon, 40.0, s_lon + 0.04, 40.04),
                      region="东" if si else "西")
        units[f"s{si + 1}"] = s
        for ci in range(2):
            c_lat = 40.0 + 0.02 * ci
            c = make_unit(f"{s.code}{ci + 1:03d}", "community", f"测试社区{si + 1}-{ci + 1}", s,
                          rect(s_lon, c_lat, s_lon + 0.04, c_lat + 0.02))
            units[f"c{si + 1}{ci + 1}"] = c
            for gi in range(2):
                g = make_unit(f"{c.code}{gi + 1:02d}", "grid", f"测试网格{si + 1}-{ci + 1}-{gi + 1}", c,
                              square(s_lon + 0.02 * gi, c_lat, 0.02))
                units[f"g{si + 1}{ci + 1}{gi + 1}"] = g
    db.session.commit()
    return units


@pytest.fixture
def categories(ctx) -> dict[str, Category]:
    major = Category(code="01", name="市容环境", level="major")
    db.session.add(major)
    db.session.flush()
    cats = {"01": major}
    for code, name in [("01001", "暴露垃圾"), ("01002", "道路不洁")]:
        cats[code] = Category(code=code, name=name, level="minor", parent_id=major.id)
        db.session.add(cats[code])
    db.session.commit()
    return cats


class Actor:
    """A user with a live token, and helpers to call the API as them."""

    def __init__(self, client, user: User, token: str) -> None:
        self.client, self.user, self.token = client, user, token
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, url, **kw):
        return self.client.get(url, headers=self.headers, **kw)

    def post(self, url, **kw):
        return self.client.post(url, headers=self.headers, **kw)

    def put(self, url, **kw):
        return self.client.put(url, headers=self.headers, **kw)

    def patch(self, url, **kw):
        return self.client.patch(url, headers=self.headers, **kw)

    def delete(self, url, **kw):
        return self.client.delete(url, headers=self.headers, **kw)


@pytest.fixture
def make_actor(client, territory):
    def factory(role: str, unit_key: str, name: str | None = None) -> Actor:
        unit = territory[unit_key]
        user = create_user(db.session, name=name or f"{role}-{unit.code}", role=role, unit_code=unit.code, now=T0)
        token = issue_token(db.session, user, now=T0, ttl=timedelta(days=3650))
        db.session.commit()
        return Actor(client, user, token)

    return factory


def pytest_sessionstart(session) -> None:
    if os.environ.get("REQUIRE_POSTGRES") and not PG_URL:
        raise pytest.UsageError("REQUIRE_POSTGRES is set but TEST_DATABASE_URL is not")
    if PG_URL:
        engine = sa.create_engine(normalize_database_url(PG_URL))
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.OperationalError as exc:
            raise pytest.UsageError(f"TEST_DATABASE_URL is set but PostgreSQL is unreachable: {exc}") from exc
        finally:
            engine.dispose()


class EdgeClock:
    """The instant the API reads at its edge (request_now), set by the test."""

    def __init__(self, monkeypatch) -> None:
        self.now: datetime | None = None
        import grid_service.web.kit.request as common

        real = common.utcnow
        monkeypatch.setattr(common, "utcnow", lambda: self.now or real())

    def set(self, instant: datetime | str) -> None:
        if isinstance(instant, str):
            instant = datetime.fromisoformat(instant)
        self.now = instant.astimezone(UTC)


@pytest.fixture
def edge_clock(monkeypatch) -> EdgeClock:
    return EdgeClock(monkeypatch)
