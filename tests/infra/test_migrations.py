"""Alembic: upgrading an empty database gives exactly the models' schema, on both databases."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from grid_service.infra.db import db
from tests.helpers import base_rows


@pytest.fixture
def migrated_app(blank_app):
    upgrade()
    return blank_app


def test_upgrade_from_empty_gives_exactly_the_models_schema(migrated_app):
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        differences = compare_metadata(context, db.metadata)
    assert differences == []


def _event_row(conn, event_id: int, version: int) -> None:
    """An event in the district (base_rows), written in SQL at whatever revision the schema is."""
    conn.execute(sa.text(
        "INSERT INTO events (id, source, category_id, priority, state, level, owner_id, located_unit_id, description, "
        "address, needs_triage, return_count, rework_count, reopen_count, received_at, created_at, updated_at, version) "
        f"VALUES ({event_id}, 'grid_worker', 2, 'normal', 'reported', 'district', 1, 1, '井盖破损', '', false, 0, 0, 0, "
        f"'2026-01-01', '2026-01-01', '2026-01-01', {version})"))


def test_upgrading_chains_the_audit_rows_already_there(blank_app):
    """A trail written before the hash chain existed is chained by the upgrade and then verifies."""
    from grid_service.events import audit

    upgrade(revision="0003")
    with db.engine.begin() as conn:
        base_rows(conn)
        _event_row(conn, 1, 3)
        _event_row(conn, 2, 1)
        for event_id, action, note in ((1, "report", ""), (2, "report", "热线来电"), (1, "register", "立案"),
                                       (1, "dispatch", "派给环卫")):
            conn.execute(sa.text(
                "INSERT INTO event_history (event_id, at, actor_role, action, to_state, to_level, to_owner_id, note, details) "
                f"VALUES ({event_id}, '2026-01-01 08:00:00.000000', 'system', '{action}', 'reported', 'district', 1, "
                f"'{note}', '{{\"source\": \"grid_worker\"}}')"))
    upgrade()
    report = audit.verify(db.session, audit.current_keys())
    assert report.ok, report.problem
    assert (report.events, report.rows) == (2, 4)
    seqs = db.session.execute(sa.text("SELECT event_id, seq FROM event_history ORDER BY id")).all()
    assert [tuple(row) for row in seqs] == [(1, 1), (2, 1), (1, 2), (1, 3)]
    with pytest.raises(sa.exc.DatabaseError, match="append-only"):  # the triggers are back
        with db.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM event_history"))


def test_audit_trail_is_append_only_in_the_migrated_database(migrated_app):
    with db.engine.begin() as conn:
        base_rows(conn)
        _event_row(conn, 1, 1)
        conn.execute(sa.text(
            "INSERT INTO event_history (event_id, seq, at, actor_role, action, to_state, to_level, to_owner_id, note, details, "
            "prev_hash, row_hash) VALUES (1, 1, '2026-01-01', 'system', 'report', 'reported', 'district', 1, '', '{}', "
            "'0', '0')"))
    for statement in ("UPDATE event_history SET note = 'changed'", "DELETE FROM event_history"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with db.engine.begin() as conn:
                conn.execute(sa.text(statement))


def test_downgrade_to_base_removes_everything(migrated_app):
    downgrade(revision="base")
    tables = set(sa.inspect(db.engine).get_table_names()) - {"alembic_version"}
    assert tables == set()


def test_the_migrated_outbox_takes_every_message_kind_and_no_other(migrated_app):
    from grid_service.outbox.models import MESSAGE_KINDS

    check = next(c for c in sa.inspect(db.engine).get_check_constraints("outbox") if c["name"] == "ck_outbox_kind")
    assert all(f"'{kind}'" in check["sqltext"] for kind in MESSAGE_KINDS)
    assert "'bogus'" not in check["sqltext"]
