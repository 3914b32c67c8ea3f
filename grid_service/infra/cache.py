"""Per-process caches of reference data (boundaries, categories, calendars) that every process
must drop when another one changes the data.

The writer bumps a version row in `service_state` in the same transaction as its change; readers
compare that version at most every `refresh_seconds` (and reload anyway after `max_age_seconds`).
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy.orm import Session

from .state import put_state, stored_version

T = TypeVar("T")


def bump_version(session: Session, key: str, now: datetime) -> None:
    """Mark the data behind `key` as changed (call in the transaction that changed it)."""
    put_state(session, key, uuid.uuid4().hex, now)


class VersionedCache(Generic[T]):
    """Holds `loader(session)`'s result until the stored version under `key` changes."""

    def __init__(self, key: str, loader: Callable[[Session], T], refresh_seconds: float,
                 max_age_seconds: float | None = None) -> None:
        self.key, self.loader = key, loader
        self.refresh_seconds, self.max_age_seconds = refresh_seconds, max_age_seconds
        self._lock = threading.Lock()
        self._value: T | None = None
        self._version: str | None = None
        self._checked = self._loaded = 0.0

    def get(self, session: Session) -> T:
        tick = time.monotonic()
        value = self._value  # read once: another thread may invalidate() between two reads
        fresh = value is not None and tick - self._checked < self.refresh_seconds
        if fresh and (self.max_age_seconds is None or tick - self._loaded < self.max_age_seconds):
            return value
        with self._lock:
            version = stored_version(session, self.key)
            too_old = self.max_age_seconds is not None and tick - self._loaded >= self.max_age_seconds
            if self._value is None or version != self._version or too_old:
                self._value = self.loader(session)
                self._version, self._loaded = version, tick
            self._checked = tick
            return self._value

    def invalidate(self) -> None:
        with self._lock:
            self._value, self._version = None, None
