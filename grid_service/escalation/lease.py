"""The SQLite sweeper's lease: one sweeper at a time on the embedded database (DESIGN §5).

The lease is a `service_state` row naming its holder and when it runs out. A sweeper renews it with
every batch (in the batch's own transaction, so a sweeper that lost it stops), and takes it over at
once from a process on this host that no longer exists.
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..infra.db import begin_writing
from ..infra.state import ServiceState

logger = logging.getLogger(__name__)

LEASE_KEY = "sweeper_lease"
LEASE_SECONDS = 120


def sweeper_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _lease_value(owner: str, wall_now: datetime) -> str:
    return f"{owner}|{(wall_now + timedelta(seconds=LEASE_SECONDS)).isoformat()}"


def acquire_lease(session: Session, owner: str, wall_now: datetime) -> str | None:
    """Take or renew the sweeper lease; None when taken, else the current holder."""
    begin_writing(session)
    # populate_existing: the session keeps objects across commits (expire_on_commit=False), and a
    # lease row it remembers may have been taken over by another sweeper since.
    row = session.get(ServiceState, LEASE_KEY, populate_existing=True)
    value = _lease_value(owner, wall_now)
    if row is None:
        session.add(ServiceState(key=LEASE_KEY, value=value, updated_at=wall_now))
    else:
        holder, _, until = row.value.partition("|")
        if holder != owner and until and datetime.fromisoformat(until) > wall_now and not _holder_is_gone(holder):
            session.rollback()
            return holder
        row.value, row.updated_at = value, wall_now
    session.commit()
    return None


def _holder_is_gone(holder: str) -> bool:
    """Whether the lease holder was a process on this host that no longer exists (killed, crashed)."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        logger.warning("sweeper lease holder %s is gone; taking the lease over", holder)
        return True
    except PermissionError:
        return False
    return False


def _held_by(owner: str) -> sa.ColumnElement[bool]:
    return ServiceState.value.startswith(f"{owner}|", autoescape=True)


def renew_lease(session: Session, owner: str, wall_now: datetime) -> bool:
    """Extend our lease inside the batch's transaction; False when another sweeper has taken it."""
    updated = session.execute(
        sa.update(ServiceState).where(ServiceState.key == LEASE_KEY, _held_by(owner))
        .values(value=_lease_value(owner, wall_now), updated_at=wall_now))
    return updated.rowcount == 1


def release_lease(session: Session, owner: str) -> None:
    session.execute(sa.delete(ServiceState).where(ServiceState.key == LEASE_KEY, _held_by(owner)))
    session.commit()
