"""Prepared inserts write what Core would write, in the caller's transaction, and fail as Core fails."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from grid_service.infra.db import db
from grid_service.infra.prepared import PreparedInsert, SequenceIds, insert_together
from grid_service.infra.timeutil import UTCDateTime

metadata = sa.MetaData()

probe = sa.Table(
    "prepared_probe", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("label", sa.String(20), nullable=False, unique=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("flag", sa.Boolean, nullable=False),
    sa.Column("note", sa.String(20), default="from python"),
)


@pytest.fixture
def table(ctx):
    probe.create(db.engine)
    yield probe
    db.session.rollback()
    probe.drop(db.engine)


def test_rows_read_back_as_core_wrote_them(table):
    at = datetime(2026, 10, 8, 9, 30, tzinfo=timezone(timedelta(hours=8)))
    rows = [{"label": "a", "at": at, "details": {"来源": "热线", "n": [1, 2]}, "flag": True, "note": "x"},
            {"label": "b", "at": at + timedelta(minutes=1), "details": {}, "flag": False, "note": None}]
    ids = PreparedInsert(table, returning=table.c.id).execute(db.session.connection(), rows)
    db.session.execute(sa.insert(table), [{"label": "core", "at": at, "details": {"来源": "热线", "n": [1, 2]},
                                            "flag": True, "note": "x"}])
    db.session.commit()
    stored = db.session.execute(sa.select(table).order_by(table.c.id)).all()
    assert [r.id for r in stored[:2]] == ids and ids[1] == ids[0] + 1
    assert stored[0].at == at and stored[0].at.tzinfo is UTC
    assert stored[0].details == {"来源": "热线", "n": [1, 2]} and stored[0].flag is True
    assert stored[1].flag is False and stored[1].note is None
    # The stored text/values match what Core stores for the same row.
    same = db.session.execute(sa.select(table.c.at, table.c.details, table.c.flag).where(table.c.at == at)).all()
    assert len(same) == 2 and same[0] == same[1]


def test_a_constraint_violation_is_sqlalchemys_integrity_error_and_the_transaction_rolls_back(table):
    insert = PreparedInsert(table)
    row = {"label": "dup", "at": datetime(2026, 1, 4, tzinfo=UTC), "details": {}, "flag": True, "note": ""}
    insert.execute(db.session.connection(), [row])
    db.session.commit()
    insert.execute(db.session.connection(), [{**row, "label": "kept?"}])
    with pytest.raises(sa.exc.IntegrityError):
        insert.execute(db.session.connection(), [{**row, "label": "dup"}])
    db.session.rollback()
    assert db.session.scalars(sa.select(table.c.label)).all() == ["dup"]


def test_a_column_with_a_python_default_must_be_given(table):
    with pytest.raises(ValueError, match="note"):
        PreparedInsert(table).execute(db.session.connection(), [
            {"label": "n", "at": datetime(2026, 1, 4, tzinfo=UTC), "details": {}, "flag": True}])


def test_naive_instants_are_refused_before_anything_is_written(table):
    with pytest.raises(ValueError, match="naive"):
        PreparedInsert(table).execute(db.session.connection(), [
            {"label": "n", "at": datetime(2026, 1, 4), "details": {}, "flag": True, "note": ""}])
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(table)) == 0


def test_inserts_together_run_in_order_and_a_failure_anywhere_is_an_integrity_error(table):
    at = datetime(2026, 1, 4, tzinfo=UTC)
    insert = PreparedInsert(table)
    rows = [{"label": label, "at": at, "details": {}, "flag": True, "note": ""} for label in ("one", "two", "three")]
    insert_together(db.session.connection(), [(insert, rows[:1]), (insert, []), (insert, rows[1:])])
    db.session.commit()
    assert db.session.scalars(sa.select(table.c.label).order_by(table.c.id)).all() == ["one", "two", "three"]
    with pytest.raises(sa.exc.IntegrityError):  # the second statement repeats a label (on psycopg: in one pipeline)
        insert_together(db.session.connection(), [(insert, [{**rows[0], "label": "four"}]), (insert, rows[:1])])
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(table)) == 3


def test_sequence_ids_come_from_the_sequence_once_each_and_a_forked_worker_takes_its_own_block(table, backend, monkeypatch):
    ids = SequenceIds(table.c.id, block=4)
    connection = db.session.connection()
    if backend == "sqlite":
        assert ids.take(connection) is None  # SQLite numbers rows itself
        return
    first = [ids.take(connection) for _ in range(6)]
    assert first == sorted(first) and len(set(first)) == 6
    other = SequenceIds(table.c.id, block=4)  # another process's block
    assert not set(first) & {other.take(connection) for _ in range(4)}
    monkeypatch.setattr("grid_service.infra.prepared.os.getpid", lambda: -1)  # as in a freshly forked worker
    assert ids.take(connection) > max(first) + 4
    # The ids are the table's own: a row inserted without one does not collide with them.
    taken = ids.take(connection)
    PreparedInsert(table).execute(connection, [{"id": taken, "label": "x", "at": datetime(2026, 1, 4, tzinfo=UTC),
                                                "details": {}, "flag": True, "note": ""}])
    db.session.execute(sa.insert(table).values(label="y", at=datetime(2026, 1, 4, tzinfo=UTC), details={}, flag=False))
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count(sa.distinct(table.c.id))).select_from(table)) == 2
