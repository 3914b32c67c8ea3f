"""Point → unit: an STRtree over grid boundaries, built once per process.

A point in a grid goes to that grid. A point in no grid goes to the lowest unit whose boundary
holds it, else to the district (属地兜底); both cases say so, for triage.
"""
from __future__ import annotations

import gc
import itertools
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import shapely
import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..infra.cache import VersionedCache, bump_version
from ..infra.state import stored_version
from .models import LEVEL_RANK, Unit

VERSION_KEY = "territory_version"
logger = logging.getLogger(__name__)


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
        # A list, not an array: indexing it gives a Python int without numpy's per-call overhead.
        self._grid_ids = [unit_id for unit_id, _ in grids]
        # Placements are immutable: one per grid, built once, instead of one per located point.
        self._grid_placements = [Placement(unit_id, unit_id, None) for unit_id in self._grid_ids]
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
        if len(hits) == 1:  # the usual case; min() over a numpy array costs as much as the query
            return self._grid_ids[hits[0]]
        if len(hits) == 0:
            return None
        return self._grid_ids[int(hits.min())]

    def locate(self, lon: float, lat: float) -> Placement:
        """The grid holding the point, else the lowest unit whose boundary does, else the district."""
        point = shapely.Point(lon, lat)
        hits = self._grid_tree.query(point, predicate="intersects")
        if len(hits) == 1:
            return self._grid_placements[hits[0]]
        if len(hits) > 1:
            return self._grid_placements[int(hits.min())]
        hits = self._area_tree.query(point, predicate="intersects")
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
    """A Locator over the stored boundaries (100,000 grids load in seconds, not minutes)."""
    with paused_gc():
        rows = session.execute(
            sa.select(Unit.id, Unit.level, Unit.boundary).where(sa.or_(Unit.boundary.is_not(None), Unit.level == "district")).order_by(Unit.id)
        ).all()
        districts = [unit_id for unit_id, level, _ in rows if level == "district"]
        shaped = [(unit_id, level, boundary) for unit_id, level, boundary in rows if boundary is not None]
        geoms = shapes_from_geojson([boundary for _, _, boundary in shaped])
        grids, areas = [], []
        for (unit_id, level, _), geom in zip(shaped, geoms):
            if level == "grid":
                grids.append((unit_id, geom))
            else:
                areas.append((unit_id, LEVEL_RANK[level], geom))
        return Locator(grids, areas, districts)


def shapes_from_geojson(geometries: Sequence[dict[str, Any]]) -> list[Any]:
    """Shapely geometries of GeoJSON Polygons/MultiPolygons, built in one vectorized call."""
    try:
        return _ragged_shapes(geometries)
    except (KeyError, TypeError, ValueError, shapely.errors.GEOSException):
        # Anything unusual (3-D positions, other types): the slow, general path.
        logger.debug("boundaries need the general GeoJSON reader")
        return [shapely.geometry.shape(geometry) for geometry in geometries]


def _ragged_shapes(geometries: Sequence[dict[str, Any]]) -> list[Any]:
    if not geometries:
        return []
    rings: list[list[list[float]]] = []
    ring_counts, polygon_counts, is_polygon = [], [], []
    for geometry in geometries:
        kind = geometry["type"]
        if kind not in ("Polygon", "MultiPolygon"):
            raise ValueError(kind)
        polygons = [geometry["coordinates"]] if kind == "Polygon" else geometry["coordinates"]
        is_polygon.append(kind == "Polygon")
        polygon_counts.append(len(polygons))
        for polygon in polygons:
            ring_counts.append(len(polygon))
            rings.extend(polygon)
    ring_lengths = [len(ring) for ring in rings]
    flat = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(rings)), dtype=np.float64)
    if flat.size != 2 * sum(ring_lengths) or min(ring_lengths) < 4:
        raise ValueError("not [lon, lat] positions")
    offsets = [np.concatenate([[0], np.cumsum(counts)]) for counts in (ring_lengths, ring_counts, polygon_counts)]
    multi = shapely.from_ragged_array(shapely.GeometryType.MULTIPOLYGON, flat.reshape(-1, 2), tuple(offsets))
    single = np.asarray(is_polygon)
    multi[single] = shapely.get_geometry(multi[single], 0)
    return multi.tolist()


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic GC while bulk code builds millions of small, acyclic lists (it would dominate)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def territory_version(session: Session) -> str:
    return stored_version(session, VERSION_KEY)


def bump_territory_version(session: Session, now: datetime) -> None:
    """Tell every process that boundaries changed (call in the transaction that changed them)."""
    bump_version(session, VERSION_KEY, now)


def locator_cache(refresh_seconds: float) -> VersionedCache[Locator]:
    """One Locator per process, rebuilt when the stored territory version changes."""
    return VersionedCache(VERSION_KEY, load_locator, refresh_seconds)
