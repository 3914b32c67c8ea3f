"""The category list as read-only reference data, cached per process for the intake path.

Categories change rarely (an admin edit, a seed); intake reads one on every report. The cache keeps
detached snapshots, reloads when the stored catalog version changes (checked at most every few
seconds) or when it is older than a minute, and always falls back to the database on a miss.
"""
from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, make_transient_to_detached

from ..territory.models import ServiceState
from .models import Category

VERSION_KEY = "catalog_version"
MAX_AGE_SECONDS = 60.0


def bump_catalog_version(session: Session, now: datetime) -> None:
    """Tell every process that categories changed (call in the transaction that changed them)."""
    value = uuid.uuid4().hex
    if not session.execute(sa.update(ServiceState).where(ServiceState.key == VERSION_KEY).values(value=value, updated_at=now)).rowcount:
        session.add(ServiceState(key=VERSION_KEY, value=value, updated_at=now))
        session.flush()


def _snapshot(category: Category) -> Category:
    """A detached copy (with its 大类) that belongs to no session and is never written."""
    parent = None
    if category.parent is not None:
        parent = Category(id=category.parent.id, code=category.parent.code, name=category.parent.name,
                          level=category.parent.level, parent_id=None, description=category.parent.description,
                          keywords=category.parent.keywords, is_active=category.parent.is_active,
                          sort_order=category.parent.sort_order)
        make_transient_to_detached(parent)
    copy = Category(id=category.id, code=category.code, name=category.name, level=category.level,
                    parent_id=category.parent_id, description=category.description, keywords=category.keywords,
                    is_active=category.is_active, sort_order=category.sort_order, parent=parent)
    make_transient_to_detached(copy)
    return copy


class CategoryCache:
    def __init__(self, refresh_seconds: float) -> None:
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._by_code: dict[str, Category] = {}
        self._version: str | None = None
        self._checked = self._loaded = -1e18

    def get(self, session: Session, code: str) -> Category | None:
        """The category with this code as a detached snapshot, or None."""
        tick = time.monotonic()
        if tick - self._checked >= self.refresh_seconds or tick - self._loaded >= MAX_AGE_SECONDS:
            self._refresh(session, tick)
        category = self._by_code.get(code)
        if category is None:
            row = session.scalar(sa.select(Category).options(sa.orm.joinedload(Category.parent)).where(Category.code == code))
            if row is None:
                return None
            category = _snapshot(row)
            with self._lock:
                self._by_code[code] = category
        return category

    def _refresh(self, session: Session, tick: float) -> None:
        version = session.scalar(sa.select(ServiceState.value).where(ServiceState.key == VERSION_KEY)) or ""
        with self._lock:
            if version != self._version or tick - self._loaded >= MAX_AGE_SECONDS:
                rows = session.scalars(sa.select(Category).options(sa.orm.joinedload(Category.parent))).unique()
                self._by_code = {row.code: _snapshot(row) for row in rows}
                self._version, self._loaded = version, tick
            self._checked = tick
