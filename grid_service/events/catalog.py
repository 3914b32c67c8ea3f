"""The category list as read-only reference data, cached per process for the intake path.

Categories change rarely (an admin edit, a seed); intake reads one on every report. The cache keeps
detached snapshots, reloads when the stored catalog version changes (checked at most every few
seconds) or when it is older than a minute, and always falls back to the database on a miss.
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, make_transient_to_detached

from ..infra.cache import VersionedCache, bump_version
from .models import Category

VERSION_KEY = "catalog_version"
MAX_AGE_SECONDS = 60.0


def bump_catalog_version(session: Session, now: datetime) -> None:
    """Tell every process that categories changed (call in the transaction that changed them)."""
    bump_version(session, VERSION_KEY, now)


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


def _load(session: Session) -> dict[str, Category]:
    rows = session.scalars(sa.select(Category).options(sa.orm.joinedload(Category.parent))).unique()
    return {row.code: _snapshot(row) for row in rows}


class CategoryCache:
    """Categories by code; a miss (a category added a moment ago) is looked up in the database."""

    def __init__(self, refresh_seconds: float) -> None:
        self._cache = VersionedCache(VERSION_KEY, _load, refresh_seconds, MAX_AGE_SECONDS)

    def get(self, session: Session, code: str) -> Category | None:
        """The category with this code as a detached snapshot, or None."""
        by_code = self._cache.get(session)
        category = by_code.get(code)
        if category is None:
            row = session.scalar(sa.select(Category).options(sa.orm.joinedload(Category.parent)).where(Category.code == code))
            if row is None:
                return None
            category = by_code[code] = _snapshot(row)
        return category
