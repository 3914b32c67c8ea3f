"""Inserts on the hottest write paths, compiled once by SQLAlchemy and sent straight to the driver.

A Core `execute` spends about 0.1 ms per statement on top of the driver (cache lookup, an
execution context, parameter processing through it, result setup). Intake runs three inserts per
report (event, first audit link, clocks), and on SQLite it runs them while holding the database's
write lock, so that overhead is paid three times inside the lock. A `PreparedInsert` compiles its
statement once per dialect and set of columns with SQLAlchemy, applies the columns' own bind
processors (the ones Core applies: UTC instants, JSON, booleans) and runs the SQL on the DBAPI
cursor of the caller's connection, inside its transaction. Driver errors come out as SQLAlchemy's
exceptions (`IntegrityError` …), as from Core.

Only plain inserts: every column that has a Python-side default must be given in the rows (the
statement refuses to compile otherwise), and engine `before_cursor_execute` hooks do not see them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
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
        dialect = connection.dialect
        compiled = self._for(dialect, tuple(rows[0]))
        params = [self._params(compiled, row) for row in rows]
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            if self.returning is not None:
                returned = []
                for one in params:
                    cursor.execute(compiled.sql, one)
                    returned.append(cursor.fetchone()[0])
                return returned
            if len(params) == 1:
                cursor.execute(compiled.sql, params[0])
            else:
                cursor.executemany(compiled.sql, params)
            return []
        except dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DBAPIError.instance(compiled.sql, params, exc, dialect.loaded_dbapi.Error,
                                             dialect=dialect) from exc
        finally:
            cursor.close()
