"""The database handle and migrations (created unbound, initialised by the app factory), and the
helpers every writer needs: SQLite transactions that take the write lock, savepoints that nest."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase, Session, SessionTransaction

# Stable constraint names from the first migration on, so later migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Largest id a 32-bit INTEGER primary key holds; bigger ids are "not found", never a database error.
MAX_ID = 2**31 - 1


def check_in(column: str, values: tuple[str, ...]) -> str:
    """The SQL of a CHECK that `column` holds one of `values`."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# Sessions live for one request or one job; keeping loaded values after the commit lets the view
# dump what it just wrote without reloading every row and relationship.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})


def begin_writing(session: Session) -> None:
    """On SQLite, open the transaction now, with the write lock, if the driver has not opened one yet.

    sqlite3 opens it by itself only before INSERT, UPDATE or DELETE: a SAVEPOINT, or a statement that
    starts with WITH, would otherwise run outside any transaction. No-op on PostgreSQL.
    """
    if session.get_bind().dialect.name == "sqlite" and not session.connection().connection.driver_connection.in_transaction:
        session.execute(sa.text("BEGIN IMMEDIATE"))


@contextmanager
def savepoint(session: Session) -> Iterator[SessionTransaction]:
    """`session.begin_nested()` that nests on SQLite too.

    Issued before anything is written, a SAVEPOINT starts SQLite's transaction itself, and its
    RELEASE then commits: what it wrote would outlive a rollback of the request's transaction.
    """
    begin_writing(session)
    with session.begin_nested() as nested:
        yield nested


# Batch mode lets SQLite alter tables; compare_type makes autogenerate notice type changes.
migrate = Migrate(render_as_batch=True, compare_type=True)


# SQLSTATEs of PostgreSQL's lock refusals: lock_not_available, deadlock_detected, serialization_failure.
_PG_LOCK_STATES = frozenset({"55P03", "40P01", "40001"})


def is_lock_refusal(error: sa.exc.OperationalError) -> bool:
    """Whether the database refused for a lock held by someone else (not because it is down)."""
    orig = error.orig
    if getattr(orig, "sqlstate", None) in _PG_LOCK_STATES:
        return True
    return getattr(orig, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED") or "database is locked" in str(orig)
