"""Bulk writers for demo events and their audit rows: the fastest correct way per database.

Each writer takes a chunk of event rows (dicts of column values, without ids) and returns their
ids in the same order, then takes the chunk's history rows, which refer to those ids.
"""
from __future__ import annotations

import json
import operator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..events.models import Event, EventHistory


class CoreWriter:
    """executemany inserts; event ids come back through RETURNING in parameter order (any database)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        events = Event.__table__
        self._events = sa.insert(events).returning(events.c.id, sort_by_parameter_order=True)
        self._history = sa.insert(EventHistory.__table__)

    def events(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert event rows; their new ids, in the order of `rows`."""
        return [event_id for (event_id,) in self.session.execute(self._events, rows)]

    def history(self, rows: list[dict[str, Any]]) -> None:
        """Insert audit rows (their event ids already set)."""
        self.session.execute(self._history, rows)


class SqliteWriter(CoreWriter):
    """executemany without RETURNING: SQLite cannot promise RETURNING rows in parameter order,
    so SQLAlchemy would insert one row per statement (about ten times slower).

    SQLite gives a new row the largest rowid plus one, and after the first insert this
    transaction holds the database's only write lock, so a chunk's ids are the last n ids in
    parameter order; the first and last rows are checked against that.
    """

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._plain = sa.insert(Event.__table__)

    def events(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert event rows; their new ids, in the order of `rows`."""
        self.session.execute(self._plain, rows)
        table = Event.__table__
        last = self.session.scalar(sa.select(sa.func.max(table.c.id)))
        ids = list(range(last - len(rows) + 1, last + 1))
        for event_id, row in ((ids[0], rows[0]), (ids[-1], rows[-1])):
            stored = self.session.execute(
                sa.select(table.c.received_at, table.c.grid_id, table.c.description).where(table.c.id == event_id)
            ).one_or_none()
            if stored is None or tuple(stored) != (row["received_at"], row["grid_id"], row["description"]):
                raise RuntimeError("demo events did not get consecutive ids (another writer?); roll back")
        return ids


class PostgresWriter:
    """COPY into both tables, inside the session's transaction.

    With 100,000 events (about 530,000 audit rows) executemany pays psycopg's per-row cost (75 s
    on the development machine) and one INSERT … SELECT FROM unnest(arrays) per chunk spends much
    of its time escaping arrays in Python; COPY leaves mostly the server's own foreign-key checks.
    Event ids are drawn from the table's sequence first, so history rows can refer to them
    without relying on the order of RETURNING rows.
    """

    def __init__(self, session: Session) -> None:
        self.session = session

    def _copy(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        names = list(rows[0])
        # executemany would fill in Python-side defaults; COPY needs them spelled out.
        defaults = {column.name: column.default.arg for column in table.columns
                    if column.name not in rows[0] and column.default is not None and column.default.is_scalar}
        json_positions = [i for i, name in enumerate(names) if isinstance(table.c[name].type, sa.JSON)]
        columns = ", ".join(f'"{name}"' for name in [*names, *defaults])
        values_of = operator.itemgetter(*names)
        tail = list(defaults.values())
        driver = self.session.connection().connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
            for row in rows:
                values = [*values_of(row), *tail]
                for i in json_positions:
                    values[i] = json.dumps(values[i])
                copy.write_row(values)

    def events(self, rows: list[dict[str, Any]]) -> list[int]:
        """Reserve ids from the sequence, then COPY the rows with them; the ids, in order."""
        sequence = sa.func.pg_get_serial_sequence(Event.__table__.name, "id")
        reserve = sa.select(sa.func.nextval(sequence)).select_from(sa.func.generate_series(1, len(rows)))
        ids = sorted(self.session.scalars(reserve))
        self._copy(Event.__table__, [{"id": event_id, **row} for event_id, row in zip(ids, rows)])
        return ids

    def history(self, rows: list[dict[str, Any]]) -> None:
        """COPY audit rows (their event ids already set); the database assigns their ids."""
        self._copy(EventHistory.__table__, rows)


def writer_for(session: Session) -> CoreWriter | PostgresWriter:
    """The fastest correct bulk writer for the session's database."""
    return {"postgresql": PostgresWriter, "sqlite": SqliteWriter}.get(session.get_bind().dialect.name, CoreWriter)(session)
