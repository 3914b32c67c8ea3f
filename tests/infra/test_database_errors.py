"""What a request answers when the database refuses its write: another request took the same key between
our read and our write (409), or the database stays locked beyond its timeout (503 with Retry-After).
Never a 500, and nothing of the refused request is written."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from config import TestConfig
from grid_service.hotline.models import CategoryMapping
from grid_service.infra.db import db

LOCK_WAIT_MS = 300


@pytest.fixture
def short_lock_waits(monkeypatch, backend):
    """Requested before `app`: its engine then gives up on a held lock after LOCK_WAIT_MS."""
    monkeypatch.setattr(TestConfig, "SQLITE_BUSY_TIMEOUT_MS" if backend == "sqlite" else "DB_LOCK_TIMEOUT_MS", LOCK_WAIT_MS)


def mappings() -> list[tuple[str, str]]:
    db.session.rollback()
    return [(m.external_code, m.category.code) for m in db.session.scalars(sa.select(CategoryMapping))]


def test_two_admins_mapping_the_same_code_at_once_the_later_one_gets_409(app, make_actor, categories):
    admin = make_actor("admin", "d")
    other_id = categories["01002"].id
    raced: list[str] = []

    def the_other_admin_gets_there_first(_conn, _cursor, statement, *_args) -> None:
        # Between this request's check ("no mapping for HJ-01 yet") and its insert, another commits one.
        if statement.lstrip().startswith("INSERT INTO hotline_category_map") and not raced:
            raced.append(statement)
            with db.engine.connect() as other:
                other.execute(sa.insert(CategoryMapping).values(external_code="HJ-01", category_id=other_id,
                                                                note="另一位管理员", updated_at=sa.func.now()))
                other.commit()

    sa.event.listen(db.engine, "before_cursor_execute", the_other_admin_gets_there_first)
    try:
        response = admin.put("/api/v1/hotline/category-map/HJ-01", json={"category_code": "01001"})
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", the_other_admin_gets_there_first)
    assert raced, "the request never tried to insert the mapping"
    assert response.status_code == 409, response.json
    assert response.json["code"] == "conflict" and "同时修改" in response.json["message"]
    assert mappings() == [("HJ-01", "01002")]  # the other admin's, untouched
    # Asked again, the same request now updates the mapping it sees.
    again = admin.put("/api/v1/hotline/category-map/HJ-01", json={"category_code": "01001"})
    assert again.status_code == 200 and mappings() == [("HJ-01", "01001")]


def test_a_database_locked_beyond_its_timeout_answers_503_and_the_retry_works(short_lock_waits, app, make_actor,
                                                                              categories, backend):
    admin = make_actor("admin", "d")
    holder = db.engine.connect()
    try:
        if backend == "sqlite":
            holder.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite's one write lock, held by someone else
        else:
            holder.begin()
            holder.exec_driver_sql("LOCK TABLE hotline_category_map IN ACCESS EXCLUSIVE MODE")
        response = admin.put("/api/v1/hotline/category-map/HJ-01", json={"category_code": "01001"})
    finally:
        holder.rollback()
        holder.close()
    assert response.status_code == 503, response.json
    assert response.json["code"] == "database_unavailable" and response.headers["Retry-After"] == "2"
    assert mappings() == []
    retry = admin.put("/api/v1/hotline/category-map/HJ-01", json={"category_code": "01001"})
    assert retry.status_code == 201 and mappings() == [("HJ-01", "01001")]
