"""Point → unit: an STRtree over grid boundaries, built once per process.

A point in a grid goes to that grid. A point in no grid goes to the lowest unit whose boundary
holds it, else to the district (属地兜底); both cases say so, for triage.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import shapely
import sqlalchemy as sa
from sqlalchemy.orm import Session

from .models import LEVEL_RANK, ServiceState, Unit

VERSION_KEY = "territory_version"


@dataclass(frozen=True, slots=True)
class Placement:
    unit_id: int
    grid_id: int | None
    # None when the point fell in a grid; otherwise why it needs triage.
    fallback: str | None


class Locator:
    """Immutable index of one territory version."""

    def __init__(self, grids: list[tuple[int, object]], areas: list[tuple[int, int, object]], districts: list[int]) -> None:
        grid_geoms = [geom for _, geom in grids]
        shapely.prepare(grid_geoms)
        self._grid_tree = shapely.STRtree(grid_geoms)
        self._grid_ids = np.array([unit_id for unit_id, _ in grids], dtype=np.int64)
        # Deepest level first so the first hit is the lowest unit.
        areas = sorted(areas, key=lambda a: (-a[1], a[0]))
        area_geoms = [geom for _, _, geom in areas]
        shapely.prepare(area_geoms)
        self._area_tree = shapely.STRtree(area_geoms)
        self._area_ids = [unit_id for unit_id, _, _ in areas]
        self._districts = districts

    @property
    def grid_count(self) -> int:
        return len(self._grid_ids)

    def grid_at(self, lon: float, lat: float) -> int | None:
        """The grid holding the point (the lowest id when it lies on a shared edge)."""
        hits = self._grid_tree.query(shapely.Point(lon, lat), predicate="intersects")
        if len(hits) == 0:
            return None
        return int(self._grid_ids[hits.min()])

    def locate(self, lon: float, lat: float) -> Placement:
        grid_id = self.grid_at(lon, lat)
        if grid_id is not None:
            return Placement(grid_id, grid_id, None)
        hits = self._area_tree.query(shapely.Point(lon, lat), predicate="intersects")
        if len(hits):
            return Placement(self._area_ids[int(hits.min())], None, "point_outside_grids")
        if not self._districts:
            raise LookupError("the territory has no district")
        return Placement(self._districts[0], None, "point_outside_territory")

    def fallback_unit(self) -> int:
        """The unit an event without a usable location goes to (属地兜底)."""
        if not self._districts:
            raise LookupError("the territory has no district")
        return self._districts[0]


def load_locator(session: Session) -> Locator:
    rows = session.execute(
        sa.select(Unit.id, Unit.level, Unit.boundary).where(sa.or_(Unit.boundary.is_not(None), Unit.level == "district")).order_by(Unit.id)
    ).all()
    grids, areas, districts = [], [], []
    for unit_id, level, boundary in rows:
        if level == "district":
            districts.append(unit_id)
        if boundary is None:
            continue
        geom = shapely.geometry.shape(boundary)
        if level == "grid":
            grids.append((unit_id, geom))
        else:
            areas.append((unit_id, LEVEL_RANK[level], geom))
    return Locator(grids, areas, districts)


def territory_version(session: Session) -> str:
    return session.scalar(sa.select(ServiceState.value).where(ServiceState.key == VERSION_KEY)) or ""


def bump_territory_version(session: Session, now: datetime) -> None:
    """Tell every process that boundaries changed (call in the transaction that changed them)."""
    value = uuid.uuid4().hex
    updated = session.execute(
        sa.update(ServiceState).where(ServiceState.key == VERSION_KEY).values(value=value, updated_at=now)
    ).rowcount
    if not updated:
        session.add(ServiceState(key=VERSION_KEY, value=value, updated_at=now))
        session.flush()


class LocatorCache:
    """One Locator per process, re-checked against the stored version at most every few seconds."""

    def __init__(self, refresh_seconds: float) -> None:
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._locator: Locator | None = None
        self._version: str | None = None
        self._checked = 0.0

    def get(self, session: Session) -> Locator:
        tick = time.monotonic()
        if self._locator is not None and tick - self._checked < self.refresh_seconds:
            return self._locator
        with self._lock:
            version = territory_version(session)
            if self._locator is None or version != self._version:
                self._locator = load_locator(session)
                self._version = version
            self._checked = tick
            return self._locator

    def invalidate(self) -> None:
        with self._lock:
            self._locator, self._version, self._checked = None, None, 0.0
