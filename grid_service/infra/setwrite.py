"""Set-based writes: many rows in one statement, on SQLite as on PostgreSQL.

A statement reads its rows as a table `r` (`WITH r(…) AS …`): on PostgreSQL one JSON document
read by json_to_recordset, on SQLite a multi-row VALUES list. INSERT … SELECT … FROM r and
UPDATE … FROM r then do in one round trip what would otherwise be a statement per row. The
sweeper's batches and the inbox write this way.
"""
from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session


class GuardFailed(RuntimeError):
    """A guarded write matched fewer rows than it was given."""


TIME, BIGINT, FLOAT, TEXT, JSON, BOOL = "timestamptz", "bigint", "double precision", "text", "json", "boolean"
Columns = tuple[tuple[str, str], ...]  # (name, PostgreSQL type) of each per-row value
Consts = dict[str, tuple[str, Any]]  # {name: (PostgreSQL type, value)} for the {name} slots of a statement
_SLOT = re.compile(r"\{(\w+)\}")
_to_json = json.JSONEncoder().encode  # what SQLAlchemy's JSON type stores (json.dumps' defaults)


class SetWriter:
    """Runs one batch's statements: each reads the batch's rows as a table `r`, in one round trip.

    On PostgreSQL the rows travel as one JSON document read by json_to_recordset; on SQLite as one
    multi-row VALUES list (binding a parameter costs far less there than extracting a JSON field).
    The statements are the same SQL on both; `{name}` slots take constants (the instant, a clock's
    limits) as parameters.
    """

    SQLITE_MAX_PARAMS = 32766  # SQLite's default limit since 3.32

    def __init__(self, session: Session) -> None:
        self.connection = session.connection()
        self.pg = self.connection.dialect.name == "postgresql"

    def instant(self, value: datetime) -> str:
        """An instant as the text each database reads back exactly (on SQLite: what UTCDateTime stores)."""
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the sweeper")
        if self.pg:
            return value.isoformat()
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")

    def json(self, value: dict[str, Any]) -> Any:
        """A JSON column's value: nested as is in PostgreSQL's document, serialised text on SQLite."""
        return value if self.pg else _to_json(value)

    def run(self, body: str, rows: list[tuple[Any, ...]], columns: Columns, consts: Consts | None = None) -> int:
        """Execute `body` with `WITH r(…)` in front; returns how many rows it changed or inserted."""
        if not rows:
            return 0
        slots = [consts[name] for name in _SLOT.findall(body)] if consts else []
        if self.pg:
            spec = ", ".join(f'"{name}" {pg_type}' for name, pg_type in columns)
            keys = [name for name, _ in columns]
            document = json.dumps([dict(zip(keys, row)) for row in rows], ensure_ascii=False, separators=(",", ":"))
            types = iter(pg_type for pg_type, _ in slots)
            sql = (f"WITH r AS (SELECT * FROM json_to_recordset(CAST(%s AS json)) AS x({spec})) "
                   + _SLOT.sub(lambda _: f"CAST(%s AS {next(types)})", body))
            return self.connection.exec_driver_sql(sql, (document, *(value for _, value in slots))).rowcount
        names = ", ".join(f'"{name}"' for name, _ in columns)
        row_marks = f"({', '.join('?' * len(columns))})"
        statement = _SLOT.sub("?", body)
        step = max(1, (self.SQLITE_MAX_PARAMS - len(slots)) // len(columns))
        total = 0
        for lo in range(0, len(rows), step):
            chunk = rows[lo:lo + step]
            sql = f"WITH r({names}) AS (VALUES {', '.join([row_marks] * len(chunk))}) {statement}"
            params = (*itertools.chain.from_iterable(chunk), *(value for _, value in slots))
            self.connection.exec_driver_sql(sql, params)
            # sqlite3 reports no rowcount for a statement that starts with WITH; SQLite itself knows.
            total += self.connection.exec_driver_sql("SELECT changes()").scalar_one()
        return total

    def update(self, body: str, rows: list[tuple[Any, ...]], columns: Columns, what: str,
               consts: Consts | None = None) -> None:
        """A guarded UPDATE: every row must pass its guard, or GuardFailed (the caller rolls back)."""
        count = self.run(body, rows, columns, consts)
        if count != len(rows):
            raise GuardFailed(f"{what}: {count} of {len(rows)} rows passed their guard; the batch is rolled back")
