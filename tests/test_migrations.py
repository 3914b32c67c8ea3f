"""Alembic: upgrading an empty database gives exactly the models' schema, on both databases."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from config import TestConfig
from grid_service import create_app
from grid_service.extensions import db
from tests.conftest import pg_url

SCHEMA = "migration_test"


@pytest.fixture
def empty_database_url(backend, tmp_path):
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrated.db'}"
        return
    base = pg_url()
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}options=-csearch_path%3D{SCHEMA}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    engine.dispose()


@pytest.fixture
def migrated_app(empty_database_url):
    class Config(TestConfig):
        SQLALCHEMY_DATABASE_URI = empty_database_url

    app = create_app(Config)
    with app.app_context():
        upgrade()
        yield app
        db.session.remove()
        db.engine.dispose()


def test_upgrade_from_empty_gives_exactly_the_models_schema(migrated_app):
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        differences = compare_metadata(context, db.metadata)
    assert differences == []


def test_audit_trail_is_append_only_in_the_migrated_database(migrated_app):
    with db.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO units (id, code, name, level, path, created_at, updated_at) "
                             "VALUES (1, '150299', 'd', 'district', '/150299/', '2026-01-01', '2026-01-01')"))
        conn.execute(sa.text("INSERT INTO categories (id, code, name, level, parent_id, description, keywords, is_active, sort_order) "
                             "VALUES (1, '01', 'c', 'major', NULL, '', '', true, 0), (2, '01001', 'm', 'minor', 1, '', '', true, 0)"))
        conn.execute(sa.text(
            "INSERT INTO events (id, source, category_id, priority, state, level, owner_id, located_unit_id, description, "
            "address, needs_triage, return_count, rework_count, reopen_count, received_at, created_at, updated_at, version) "
            "VALUES (1, 'grid_worker', 2, 'normal', 'reported', 'district', 1, 1, 'x', '', false, 0, 0, 0, "
            "'2026-01-01', '2026-01-01', '2026-01-01', 1)"))
        conn.execute(sa.text("INSERT INTO event_history (event_id, at, actor_role, action, to_state, to_level, to_owner_id, note, details) "
                             "VALUES (1, '2026-01-01', 'system', 'report', 'reported', 'district', 1, '', '{}')"))
    for statement in ("UPDATE event_history SET note = 'changed'", "DELETE FROM event_history"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with db.engine.begin() as conn:
                conn.execute(sa.text(statement))


def test_downgrade_to_base_removes_everything(migrated_app):
    downgrade(revision="base")
    tables = set(sa.inspect(db.engine).get_table_names()) - {"alembic_version"}
    assert tables == set()
