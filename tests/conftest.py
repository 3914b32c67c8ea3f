"""Fixtures: an app per test on SQLite and, when TEST_DATABASE_URL is set, on PostgreSQL too."""
from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from config import TestConfig, normalize_database_url
from grid_service import create_app
from grid_service.auth.clients import create_client
from grid_service.auth.models import User
from grid_service.auth.service import create_user, issue_token
from grid_service.events import audit
from grid_service.events.intake import forget_reserved_event_ids
from grid_service.events.models import Category
from grid_service.hotline.service import set_mapping
from grid_service.infra.db import db
from grid_service.open311.attributes import AttributeSpec, add_attributes, seed_demo_attributes
from grid_service.sla.defaults import ensure_calendars
from grid_service.sla.models import Policy
from grid_service.territory.models import LEVELS, Unit
from tests.helpers import T0, Hotline, rect, sh, square

PG_URL = os.environ.get("TEST_DATABASE_URL")
PG_SKIP_REASON = "TEST_DATABASE_URL is not set: the PostgreSQL variant of this test is skipped"

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
        # The fixtures date their reports in March 2026 whatever today is; the 7-day window is tested on its own.
        RECEIVED_AT_MAX_AGE_DAYS = 36500

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


@pytest.fixture
def worker(make_actor, categories) -> Actor:
    """A grid worker in g111, where reports at (110.005, 40.005) land; the categories exist to report in."""
    return make_actor("grid_worker", "g111")


# ---------------------------------------------------------------- SLA


@pytest.fixture
def policies(app, categories):
    """暴露垃圾 01001: accept 60, each level 60, resolve 240; 道路不洁 01002: accept 60, levels 120, resolve 120.

    Working minutes on the default calendar, warnings at 80 %.
    """
    at = sh("2026-01-01T00:00")
    calendars = ensure_calendars(db.session, at)
    for code, levels, resolve in (("01001", 60, 240), ("01002", 120, 120)):
        db.session.add(Policy(scope=f"{code}|*", category_id=categories[code].id, priority=None, version=1, is_current=True,
                              accept_minutes=60, level_minutes=dict.fromkeys(("grid", "community", "street", "district"), levels),
                              resolve_minutes=resolve, warn_ratio=0.8, calendar_id=calendars["default"].id, created_at=at))
    db.session.commit()


# ---------------------------------------------------------------- integration clients


@pytest.fixture
def hotline(app, client, territory, categories, edge_clock) -> Hotline:
    """The hotline client `h12345` (default unit: street s2), its category 'HJ-01' mapped to 01001, '*' to 01002."""
    api_client, secret, _ = create_client(db.session, name="h12345", kind="hotline", unit_code=territory["s2"].code, now=T0)
    set_mapping(db.session, "HJ-01", "01001", now=T0)
    set_mapping(db.session, "*", "01002", now=T0)
    db.session.commit()
    return Hotline(client, "h12345", secret, edge_clock)


@pytest.fixture
def open311(client, territory, categories):
    """An Open311 client's API key, the demo questions on 01001, and one more service asking every datatype."""
    db.session.add(Category(code="01003", name="私搭乱建", level="minor", parent_id=categories["01"].id,
                            description="未经批准搭建建筑物", keywords="违建,搭建"))
    db.session.add(Category(code="01099", name="停用小类", level="minor", parent_id=categories["01"].id, is_active=False))
    db.session.flush()
    seed_demo_attributes(db.session, now=T0)
    every = db.session.scalar(sa.select(Category).where(Category.code == "01003"))
    add_attributes(db.session, every, [
        AttributeSpec("INFO", "text", "仅供参考：违建认定以规划部门意见为准。", variable=False),
        AttributeSpec("FLOORS", "number", "搭建了几层？", required=True),
        AttributeSpec("SINCE", "datetime", "什么时候开始搭建？"),
        AttributeSpec("OWNER", "string", "业主姓名或门牌号"),
        AttributeSpec("DETAIL", "text", "详细情况"),
        AttributeSpec("USE", "singlevaluelist", "用途", values=(("shop", "经营"), ("home", "居住"))),
        AttributeSpec("MATERIAL", "multivaluelist", "材料", values=(("steel", "彩钢"), ("brick", "砖混"), ("wood", "木结构"))),
    ], now=T0)
    _, _, api_key = create_client(db.session, name="resident-app", kind="open311", now=T0)
    db.session.commit()
    return api_key


# ---------------------------------------------------------------- an empty database, for migrations

MIGRATION_SCHEMA = "migration_test"


@pytest.fixture
def empty_database_url(backend, tmp_path):
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.db'}"
        return
    base = pg_url()
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {MIGRATION_SCHEMA} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {MIGRATION_SCHEMA}"))
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}options=-csearch_path%3D{MIGRATION_SCHEMA}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {MIGRATION_SCHEMA} CASCADE"))
    engine.dispose()


@pytest.fixture
def blank_app(empty_database_url):
    """An app on a database with no tables at all (not even Alembic's): for the migrations to build."""
    class Config(TestConfig):
        SQLALCHEMY_DATABASE_URI = empty_database_url

    app = create_app(Config)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


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
