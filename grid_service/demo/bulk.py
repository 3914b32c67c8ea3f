"""Bulk writers for demo events, their SLA clocks, audit rows and escalations: the fastest correct
way per database.

Each writer takes a chunk of event rows (dicts of column values, without ids) and returns their
ids in the same order, then the chunk's clocks (ids returned the same way), then the history and
escalation rows, which refer to those ids.
"""
from __future__ import annotations

import json
import operator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..events.models import Event, EventHistory
from ..infra.timeutil import UTCDateTime, sqlite_instant
from ..sla.models import Clock, Escalation


class CoreWriter:
    """executemany inserts; event ids come back through RETURNING in parameter order (any database)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def _insert_returning(self, table: sa.Table, rows: list[dict[str, Any]]) -> list[int]:
        statement = sa.insert(table).returning(table.c.id, sort_by_parameter_order=True)
        return [row_id for (row_id,) in self.session.execute(statement, rows)]

    def _insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.session.execute(sa.insert(table), rows)

    def events(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert event rows; their new ids, in the order of `rows`."""
        return self._insert_returning(Event.__table__, rows)

    def clocks(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert clock rows (their event ids already set); their new ids, in the order of `rows`."""
        return self._insert_returning(Clock.__table__, rows) if rows else []

    def history(self, rows: list[dict[str, Any]]) -> None:
        """Insert audit rows (their event ids already set)."""
        self._insert(EventHistory.__table__, rows)

    def escalations(self, rows: list[dict[str, Any]]) -> None:
        """Insert escalation rows (their event and clock ids already set)."""
        self._insert(Escalation.__table__, rows)

class SqliteWriter(CoreWriter):
    """Plain executemany through the driver, without RETURNING: SQLite cannot promise RETURNING rows
    in parameter order (SQLAlchemy would insert one row per statement, about ten times slower), and
    SQLAlchemy's per-value bind processing would cost more than the inserts themselves, so values
    are stored here exactly as the column types store them (UTCDateTime: naive UTC text; JSON:
    json.dumps).

    SQLite gives a new row the largest rowid plus one, and after the first insert this
    transaction holds the database's only write lock, so a chunk's ids are the last n ids in
    parameter order; the first and last rows are checked against that.
    """

    # Columns that tell the rows of a chunk apart, checked at the first and last id.
    _KEYS = {"events": ("received_at", "grid_id", "description"), "sla_clocks": ("event_id", "metric", "seq")}

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        # The chunk's instants as stored: an event's arrival, a step's time, a sweeper pass each
        # reach several rows (events, clocks, audit rows), and formatting costs 30 times a lookup.
        self._instants: dict[datetime, str] = {}

    def events(self, rows: list[dict[str, Any]]) -> list[int]:
        self._instants.clear()  # a new chunk
        return super().events(rows)

    def _insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        names = list(rows[0])
        instants = [i for i, name in enumerate(names) if isinstance(table.c[name].type, UTCDateTime)]
        documents = [i for i, name in enumerate(names) if isinstance(table.c[name].type, sa.JSON)]
        values_of, texts = operator.itemgetter(*names), self._instants
        values = []
        for row in rows:
            row_values = list(values_of(row))
            for i in instants:
                value = row_values[i]
                if value is not None:
                    text = texts.get(value)
                    if text is None:
                        text = texts[value] = sqlite_instant(value)
                    row_values[i] = text
            for i in documents:
                row_values[i] = json.dumps(row_values[i])
            values.append(tuple(row_values))
        columns = ", ".join(f'"{name}"' for name in names)
        marks = ", ".join("?" * len(names))
        self.session.connection().exec_driver_sql(f'INSERT INTO "{table.name}" ({columns}) VALUES ({marks})', values)

    def _insert_returning(self, table: sa.Table, rows: list[dict[str, Any]]) -> list[int]:
        self._insert(table, rows)
        last = self.session.scalar(sa.select(sa.func.max(table.c.id)))
        ids = list(range(last - len(rows) + 1, last + 1))
        keys = self._KEYS[table.name]
        for row_id, row in ((ids[0], rows[0]), (ids[-1], rows[-1])):
            stored = self.session.execute(
                sa.select(*(table.c[key] for key in keys)).where(table.c.id == row_id)
            ).one_or_none()
            if stored is None or tuple(stored) != tuple(row[key] for key in keys):
                raise RuntimeError(f"demo {table.name} did not get consecutive ids (another writer?); roll back")
        return ids

class PostgresWriter:
    """COPY into each table, inside the session's transaction.

    With 100,000 events (about 530,000 audit rows) executemany pays psycopg's per-row cost (75 s
    on the development machine) and one INSERT … SELECT FROM unnest(arrays) per chunk spends much
    of its time escaping arrays in Python; COPY leaves mostly the server's own foreign-key checks.
    Event and clock ids are drawn from their tables' sequences first, so the rows that refer to
    them need not rely on the order of RETURNING rows.
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

    def _copy_with_ids(self, table: sa.Table, rows: list[dict[str, Any]]) -> list[int]:
        """Reserve ids from the table's sequence, then COPY the rows with them; the ids, in order."""
        if not rows:
            return []
        sequence = sa.func.pg_get_serial_sequence(table.name, "id")
        reserve = sa.select(sa.func.nextval(sequence)).select_from(sa.func.generate_series(1, len(rows)))
        ids = sorted(self.session.scalars(reserve))
        self._copy(table, [{"id": row_id, **row} for row_id, row in zip(ids, rows)])
        return ids

    def events(self, rows: list[dict[str, Any]]) -> list[int]:
        """COPY event rows with ids reserved from the sequence; the ids, in order."""
        return self._copy_with_ids(Event.__table__, rows)

    def clocks(self, rows: list[dict[str, Any]]) -> list[int]:
        """COPY clock rows (their event ids already set) with reserved ids; the ids, in order."""
        return self._copy_with_ids(Clock.__table__, rows)

    def history(self, rows: list[dict[str, Any]]) -> None:
        """COPY audit rows (their event ids already set); the database assigns their ids."""
        if rows:
            self._copy(EventHistory.__table__, rows)

    def escalations(self, rows: list[dict[str, Any]]) -> None:
        """COPY escalation rows (their event and clock ids already set)."""
        if rows:
            self._copy(Escalation.__table__, rows)

def writer_for(session: Session) -> CoreWriter | PostgresWriter:
    """The fastest correct bulk writer for the session's database."""
    return {"postgresql": PostgresWriter, "sqlite": SqliteWriter}.get(session.get_bind().dialect.name, CoreWriter)(session)
