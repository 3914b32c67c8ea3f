"""Inserts on the hottest write paths, compiled once by SQLAlchemy and sent straight to the driver.

A Core `execute` spends about 0.1 ms per statement on top of the driver (cache lookup, an
execution context, parameter processing through it, result setup). Intake runs three inserts per
report (event, first audit link, clocks), and on SQLite it runs them while holding the database's
write lock, so that overhead is paid three times inside the lock. A `PreparedInsert` compiles its
statement once per dialect and set of columns with SQLAlchemy, applies the columns' own bind
processors (the ones Core applies: UTC instants, JSON, booleans) and runs the SQL on the DBAPI
cursor of the caller's connection, inside its transaction. Driver errors come out as SQLAlchemy's
exceptions (`IntegrityError` …), as from Core.

On PostgreSQL every statement is also a round trip. There `insert_together` sends several inserts
in one (psycopg's pipeline mode), and `SequenceIds` gives a new row its id beforehand, so that the
rows referring to it can go in the same trip.

Only plain inserts: every column that has a Python-side default must be given in the rows (the
statement refuses to compile otherwise), and engine `before_cursor_execute` hooks do not see them.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the bind names, in the statement's order
    keys: tuple[str, ...]  # the row key each bind takes its value from
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool


class PreparedInsert:
    """INSERT INTO `table` (the rows' keys) [RETURNING `returning`], run on the DBAPI cursor."""

    def __init__(self, table: sa.Table, returning: sa.Column | None = None) -> None:
        self.table, self.returning = table, returning
        self._compiled: dict[tuple[str, str, tuple[str, ...]], _Compiled] = {}

    def _for(self, dialect: sa.Dialect, keys: tuple[str, ...]) -> _Compiled:
        cache_key = (dialect.name, dialect.driver, keys)
        compiled = self._compiled.get(cache_key)
        if compiled is None:
            compiled = self._compiled[cache_key] = self._compile(dialect, keys)
        return compiled

    def _compile(self, dialect: sa.Dialect, keys: tuple[str, ...]) -> _Compiled:
        columns = self.table.c
        stmt = sa.insert(self.table).values({key: sa.bindparam(key, type_=columns[key].type) for key in keys})
        if self.returning is not None:
            stmt = stmt.returning(self.returning)
        compiled = stmt.compile(dialect=dialect)
        names = tuple(compiled.positiontup) if compiled.positional else tuple(compiled.binds)
        binds = [compiled.binds[name] for name in names]
        extra = sorted({bind.key for bind in binds} - set(keys))
        if extra:  # a Python-side default Core would have computed per row
            raise ValueError(f"PreparedInsert on {self.table.name}: give {', '.join(extra)} explicitly")
        return _Compiled(
            sql=compiled.string, names=names, keys=tuple(bind.key for bind in binds),
            processors=tuple(bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds),
            positional=compiled.positional,
        )

    def _params(self, compiled: _Compiled, row: dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
        values = [row[key] if process is None else process(row[key]) for key, process in zip(compiled.keys, compiled.processors)]
        return tuple(values) if compiled.positional else dict(zip(compiled.names, values))

    def execute(self, connection: sa.Connection, rows: Sequence[dict[str, Any]]) -> list[Any]:
        """Insert `rows` (same keys each) in the connection's transaction; the RETURNING values, if any."""
        if not rows:
            return []
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            with _DriverErrors(connection.dialect) as errors:
                return self._send(cursor, errors, rows, fetch=self.returning is not None)
        finally:
            cursor.close()

    def _send(self, cursor: Any, errors: _DriverErrors, rows: Sequence[dict[str, Any]], *, fetch: bool) -> list[Any]:
        compiled = self._for(errors.dialect, tuple(rows[0]))
        params = [self._params(compiled, row) for row in rows]
        errors.statement, errors.params = compiled.sql, params
        if not fetch and len(params) > 1:
            cursor.executemany(compiled.sql, params)
            return []
        returned = []
        for one in params:  # one row at a time: each RETURNING row is read before the next
            cursor.execute(compiled.sql, one)
            if fetch:
                returned.append(cursor.fetchone()[0])
        return returned


class _DriverErrors:
    """Re-raise the driver's errors as SQLAlchemy's (IntegrityError, OperationalError …), as Core does."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self.dialect = dialect
        self.statement: str = ""
        self.params: Any = None

    def __enter__(self) -> _DriverErrors:
        return self

    def __exit__(self, _kind, exc, _tb) -> bool:
        base = self.dialect.loaded_dbapi.Error
        if isinstance(exc, base):
            raise sa.exc.DBAPIError.instance(self.statement, self.params, exc, base, dialect=self.dialect) from exc
        return False


def insert_together(connection: sa.Connection, inserts: Sequence[tuple[PreparedInsert, Sequence[dict[str, Any]]]]) -> None:
    """Run several inserts (their RETURNING values unread) in order, in the connection's transaction.

    On psycopg they go in one round trip (pipeline mode: the statements are sent together and the
    server answers them in order); elsewhere one after the other.
    """
    dbapi_connection = connection.connection.dbapi_connection
    pipelined = connection.dialect.driver == "psycopg"
    cursor = dbapi_connection.cursor()
    try:
        with _DriverErrors(connection.dialect) as errors, (dbapi_connection.pipeline() if pipelined else nullcontext()):
            for insert, rows in inserts:
                if rows:
                    insert._send(cursor, errors, rows, fetch=False)
    finally:
        cursor.close()


class SequenceIds:
    """Primary keys taken from a PostgreSQL sequence a block at a time, for rows inserted together.

    Knowing a new row's id before inserting it lets the rows that refer to it (its audit link,
    its clocks) go in the same round trip. Each process holds its own block: ids stay unique (the
    sequence hands each value out once) but no longer follow creation order across processes, and
    a process that ends leaves the rest of its block unused, a gap like a rolled-back insert's.
    Only for PostgreSQL; elsewhere `take` answers None and the caller lets the database number it.
    """

    def __init__(self, column: sa.Column, block: int = 32) -> None:
        self.column, self.block = column, block
        self._ids: deque[int] = deque()
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def take(self, connection: sa.Connection) -> int | None:
        if connection.dialect.name != "postgresql":
            return None
        with self._lock:
            if self._pid != os.getpid():  # a forked worker must not reuse its parent's block
                self._ids.clear()
                self._pid = os.getpid()
            if not self._ids:
                sequence = sa.func.pg_get_serial_sequence(self.column.table.name, self.column.name)
                self._ids.extend(connection.execute(
                    sa.select(sa.func.nextval(sequence)).select_from(sa.func.generate_series(1, self.block))).scalars())
            return self._ids.popleft()

    def forget(self) -> None:
        """Drop the block this process holds: after the sequence was reset (a test's RESTART IDENTITY,
        a restored database) its ids would come round again."""
        with self._lock:
            self._ids.clear()
