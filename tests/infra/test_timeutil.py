"""UTC columns: what SQLite stores is SQLAlchemy's own DATETIME text, so old rows and new compare alike."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import given, strategies as st
from sqlalchemy.dialects import sqlite

from grid_service.infra.timeutil import UTCDateTime

SQLITE = sqlite.dialect()
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
INSTANTS = st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9998, 12, 30), timezones=OFFSETS)


def stock_text(value: datetime) -> str:
    """The text SQLAlchemy's plain DateTime stores on SQLite for this instant's UTC wall time."""
    plain = sa.DateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
    return plain(value.astimezone(UTC).replace(tzinfo=None))


@given(INSTANTS)
def test_sqlite_text_is_sqlalchemys_storage_format(value):
    bind = UTCDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
    assert bind(value) == stock_text(value)


@given(INSTANTS, INSTANTS)
def test_stored_text_sorts_in_time_order(a, b):
    bind = UTCDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
    assert (bind(a) < bind(b)) == (a < b)
    assert (bind(a) == bind(b)) == (a == b)


def test_naive_instants_are_refused():
    bind = UTCDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
    with pytest.raises(ValueError, match="naive"):
        bind(datetime(2026, 1, 4, 9, 0))
    assert bind(None) is None


def test_round_trip_through_sqlite_gives_the_same_aware_instant():
    table = sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("at", UTCDateTime()))
    engine = sa.create_engine("sqlite://")
    table.create(engine)
    shanghai = timezone(timedelta(hours=8))
    values = [datetime(2026, 1, 4, 9, 0, tzinfo=shanghai), datetime(2026, 10, 1, 0, 0, 0, 1, tzinfo=UTC)]
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"at": v} for v in values])
        stored = conn.execute(sa.text("SELECT at FROM t ORDER BY id")).scalars().all()
        back = conn.execute(sa.select(table.c.at).order_by(table.c.id)).scalars().all()
        # An instant written in another zone still finds the row.
        found = conn.execute(sa.select(table.c.id).where(table.c.at == datetime(2026, 1, 4, 1, 0, tzinfo=UTC))).scalar()
    assert stored == ["2026-01-04 01:00:00.000000", "2026-10-01 00:00:00.000001"]
    assert back == values and all(v.tzinfo is UTC for v in back)
    assert found == 1
