"""Point → unit: an STRtree over grid boundaries, built once per process.

A point in a grid goes to that grid. A point in no grid goes to the lowest unit whose boundary
holds it, else to the district (属地兜底); both cases say so, for triage.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import shapely
import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..cache import VersionedCache, bump_version, stored_version
from .models import LEVEL_RANK, Unit

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
    return stored_version(session, VERSION_KEY)


def bump_territory_version(session: Session, now: datetime) -> None:
    """Tell every process that boundaries changed (call in the transaction that changed them)."""
    bump_version(session, VERSION_KEY, now)


def locator_cache(refresh_seconds: float) -> VersionedCache[Locator]:
    """One Locator per process, rebuilt when the stored territory version changes."""
    return VersionedCache(VERSION_KEY, load_locator, refresh_seconds)
