"""`service_state`: small facts shared between processes (cache versions, the scheduler's heartbeat and
job runs, the SQLite sweeper's lease), one row per key."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from .db import db
from .timeutil import UTCDateTime


class ServiceState(db.Model):
    """Small shared facts between processes (territory version, scheduler heartbeat…)."""

    __tablename__ = "service_state"

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(256))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


def put_state(session: Session, key: str, value: str, now: datetime) -> None:
    """Set one `service_state` row, creating it if missing, in one atomic upsert: two processes (or two
    scheduler jobs) writing the same key at once both succeed, the later value wins."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(ServiceState).values(key=key, value=value, updated_at=now)
    session.execute(statement.on_conflict_do_update(
        index_elements=[ServiceState.key],
        set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at}))


def stored_version(session: Session, key: str) -> str:
    return session.scalar(sa.select(ServiceState.value).where(ServiceState.key == key)) or ""
