"""Point → grid for 100,000 grid polygons: our Locator against a raw shapely STRtree query.

A synthetic district is generated: a jittered lattice of grid cells (41 vertices each, neighbours
sharing their edges exactly), grouped into communities and streets whose boundaries follow the
same edges. Locator.grid_at / Locator.locate and a bare `STRtree.query(Point, predicate=
"intersects")` over the same prepared polygons run on the same random points in the same process.
Prints JSON lines: one per measurement, then one with the ratios (the target is at most 2).

    .venv/bin/python bench/locate.py --quick
    .venv/bin/python bench/locate.py --import      # also time import_units + load_locator on SQLite
"""
from __future__ import annotations

import sys
from pathlib import Path

# bench/calendar.py is named like the stdlib module (which `holidays` and `email` import): keep
# bench/ itself off the import path, and put the repository root on it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
ROOT = _HERE.parent

import argparse
import gc
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import shapely

from grid_service.territory.locator import Locator  # noqa: E402

ORIGIN = (116.00, 39.60)  # south-west corner of the synthetic district
CELL = 0.002  # degrees, about 200 m
SEGMENTS = 10  # per cell edge: 40 distinct vertices per grid
COMMUNITY_CELLS = 6  # a community is at most 6 × 6 grids
STREET_CELLS = 53  # a street is at most 53 × 53 grids
DISTRICT = "990100"


class Layout:
    """A jittered n × n lattice of grid cells with exactly shared edges."""

    def __init__(self, grids: int, seed: int = 7) -> None:
        self.n = n = int(np.ceil(np.sqrt(grids)))
        rng = np.random.default_rng(seed)
        jitter = rng.uniform(-0.3, 0.3, size=(n + 1, n + 1, 2)) * CELL
        jitter[[0, -1], :, :] = 0  # straight outer border
        jitter[:, [0, -1], :] = 0
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        self.nodes = np.stack([ORIGIN[0] + i * CELL, ORIGIN[1] + j * CELL], axis=-1) + jitter
        self._t = np.arange(SEGMENTS) / SEGMENTS

    def _edge(self, a: tuple[int, int], b: tuple[int, int]) -> np.ndarray:
        """Points from node a towards node b (b excluded), identical for both neighbours."""
        if a > b:
            return np.vstack([self.nodes[a][None, :], self._edge(b, a)[:0:-1]])
        pa, pb = self.nodes[a], self.nodes[b]
        return pa + (pb - pa) * self._t[:, None]

    def ring(self, i0: int, j0: int, i1: int, j1: int) -> list[list[float]]:
        """Counter-clockwise ring around cells [i0, i1) × [j0, j1), following the cell edges."""
        corners = [(i, j0) for i in range(i0, i1)] + [(i1, j) for j in range(j0, j1)]
        corners += [(i, j1) for i in range(i1, i0, -1)] + [(i0, j) for j in range(j1, j0, -1)]
        parts = [self._edge(a, b) for a, b in zip(corners, corners[1:] + corners[:1])]
        points = np.vstack(parts + [self.nodes[corners[0]][None, :]])
        return points.tolist()

    def cell_rings(self) -> np.ndarray:
        """Every cell's ring at once, shape (n, n, 4 * SEGMENTS + 1, 2), same points as ring()."""
        nodes, t = self.nodes, self._t[None, None, :, None]
        across = nodes[:-1, :, None, :] + (nodes[1:, :, None, :] - nodes[:-1, :, None, :]) * t  # (i,j)→(i+1,j)
        up = nodes[:, :-1, None, :] + (nodes[:, 1:, None, :] - nodes[:, :-1, None, :]) * t  # (i,j)→(i,j+1)
        top = np.concatenate([nodes[1:, 1:, None, :], across[:, 1:, :0:-1, :]], axis=2)  # (i+1,j+1)→(i,j+1)
        left = np.concatenate([nodes[:-1, 1:, None, :], up[:-1, :, :0:-1, :]], axis=2)  # (i,j+1)→(i,j)
        close = nodes[:-1, :-1, None, :]
        return np.concatenate([across[:, :-1], up[1:, :], top, left, close], axis=2)

    def units(self, grids: int) -> list[dict[str, Any]]:
        """Features for a district, its streets, communities and `grids` grids."""
        n, features = self.n, []
        cell_rings = self.cell_rings()
        features.append(_feature(DISTRICT, "合成区", "district", None, self.ring(0, 0, n, n)))
        cells = [(i, j) for j in range(n) for i in range(n)][:grids]
        streets: dict[tuple[int, int], dict[tuple[int, int], list[tuple[int, int]]]] = {}
        for i, j in cells:
            street = (i // STREET_CELLS, j // STREET_CELLS)
            community = ((i % STREET_CELLS) // COMMUNITY_CELLS, (j % STREET_CELLS) // COMMUNITY_CELLS)
            streets.setdefault(street, {}).setdefault(community, []).append((i, j))
        for s, (street, communities) in enumerate(sorted(streets.items()), start=1):
            s_code = f"{DISTRICT}{s:03d}"
            si, sj = street[0] * STREET_CELLS, street[1] * STREET_CELLS
            si1, sj1 = min(si + STREET_CELLS, n), min(sj + STREET_CELLS, n)
            # A street or community that is cut short by the grid count gets no boundary.
            full = sum(map(len, communities.values())) == (si1 - si) * (sj1 - sj)
            features.append(_feature(s_code, f"合成街道{s}", "street", DISTRICT, self.ring(si, sj, si1, sj1) if full else None))
            for c, (community, members) in enumerate(sorted(communities.items()), start=1):
                c_code = f"{s_code}{c:03d}"
                ci, cj = si + community[0] * COMMUNITY_CELLS, sj + community[1] * COMMUNITY_CELLS
                ci1, cj1 = min(ci + COMMUNITY_CELLS, si + STREET_CELLS, n), min(cj + COMMUNITY_CELLS, sj + STREET_CELLS, n)
                full = len(members) == (ci1 - ci) * (cj1 - cj)
                features.append(_feature(c_code, f"合成社区{s}-{c}", "community", s_code,
                                         self.ring(ci, cj, ci1, cj1) if full else None))
                for g, (i, j) in enumerate(members, start=1):
                    features.append(_feature(f"{c_code}{g:02d}", f"网格{s}-{c}-{g}", "grid", c_code, cell_rings[i, j].tolist()))
        return features


def _feature(code: str, name: str, level: str, parent: str | None, ring: list | None) -> dict[str, Any]:
    geometry = {"type": "Polygon", "coordinates": [ring]} if ring is not None else None
    return {"type": "Feature", "properties": {"code": code, "name": name, "level": level, "parent_code": parent}, "geometry": geometry}


def build_locator(features: list[dict[str, Any]]) -> tuple[Locator, list[Any]]:
    """A Locator straight from the features (ids are feature positions), and its grid polygons."""
    ranks = {"district": 0, "street": 1, "community": 2}
    grid_ids, grid_rings, areas, districts = [], [], [], []
    for unit_id, feature in enumerate(features, start=1):
        level, geometry = feature["properties"]["level"], feature["geometry"]
        if level == "district":
            districts.append(unit_id)
        if geometry is None:
            continue
        if level == "grid":
            grid_ids.append(unit_id)
            grid_rings.append(geometry["coordinates"][0])
        else:
            areas.append((unit_id, ranks[level], shapely.Polygon(geometry["coordinates"][0])))
    polygons = shapely.polygons(np.array(grid_rings)).tolist()  # every grid ring has the same length
    return Locator(list(zip(grid_ids, polygons)), areas, districts), polygons


def per_point_us(fn: Callable[[float, float], Any], points: np.ndarray, repeats: int) -> float:
    """Best of `repeats` runs of fn over all points, in µs per point."""
    xs, ys = points[:, 0].tolist(), points[:, 1].tolist()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for x, y in zip(xs, ys):
            fn(x, y)
        best = min(best, time.perf_counter() - start)
    return best / len(xs) * 1e6


def emit(**record: Any) -> None:
    print(json.dumps(record, ensure_ascii=False), flush=True)


def time_import(features: list[dict[str, Any]], database_url: str | None) -> None:
    """import_units of the whole file into a fresh database, then load_locator from it."""
    from config import TestConfig
    from grid_service import create_app
    from grid_service.infra.db import db
    from grid_service.infra.timeutil import utcnow
    from grid_service.territory.importer import import_units
    from grid_service.territory.locator import load_locator

    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{os.path.join(tmp, 'locate.db')}"

        class Config(TestConfig):
            SQLALCHEMY_DATABASE_URI = url

        app = create_app(Config)
        with app.app_context():
            db.drop_all()
            db.create_all()
            collection = {"type": "FeatureCollection", "features": features}
            for attempt in ("first", "again"):
                start = time.perf_counter()
                report = import_units(db.session, collection, now=utcnow())
                db.session.commit()
                emit(measure="import_units", run=attempt, database=db.engine.dialect.name, features=len(features),
                     created=report.created, unchanged=report.unchanged, seconds=round(time.perf_counter() - start, 2))
            start = time.perf_counter()
            locator = load_locator(db.session)
            emit(measure="load_locator", database=db.engine.dialect.name, grids=locator.grid_count,
                 seconds=round(time.perf_counter() - start, 2))
            db.drop_all()
            db.session.remove()
            db.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, default=100_000)
    parser.add_argument("--points", type=int, default=None, help="random points per run (default 200,000; 30,000 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per measurement, best kept (default 5; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer points and runs (well under a minute)")
    parser.add_argument("--import", dest="do_import", action="store_true", help="also time import_units and load_locator")
    parser.add_argument("--database-url", default=None, help="for --import (default: a temporary SQLite file); it is wiped")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    points_n = args.points or (30_000 if args.quick else 200_000)
    repeats = args.repeats or (3 if args.quick else 5)

    start = time.perf_counter()
    gc.disable()  # millions of small lists: the cyclic GC would cost more than building them
    layout = Layout(args.grids, args.seed)
    features = layout.units(args.grids)
    locator, polygons = build_locator(features)
    gc.enable()
    emit(measure="build", grids=locator.grid_count, vertices_per_grid=len(polygons[0].exterior.coords),
         units=len(features), seconds=round(time.perf_counter() - start, 2))

    raw_tree = shapely.STRtree(polygons)  # the same (already prepared) polygons as the Locator's tree
    rng = np.random.default_rng(args.seed + 1)
    bounds = shapely.total_bounds(polygons)
    inside = rng.uniform(bounds[:2], bounds[2:], size=(points_n, 2))

    def raw_query(lon: float, lat: float) -> Any:
        return raw_tree.query(shapely.Point(lon, lat), predicate="intersects")

    # Warm up (prepared geometries, caches) before measuring.
    for fn in (raw_query, locator.grid_at, locator.locate):
        per_point_us(fn, inside[:2000], 1)
    hits = sum(locator.grid_at(x, y) is not None for x, y in inside[:2000].tolist())

    # Rounds interleave the three, so a busy neighbour on a shared machine slows them all alike.
    candidates = {"raw_strtree_query": raw_query, "locator_grid_at": locator.grid_at, "locator_locate": locator.locate}
    results = {name: float("inf") for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            results[name] = min(results[name], per_point_us(fn, inside, 1))
    for name, us in results.items():
        emit(measure=name, us_per_point=round(us, 3), points=points_n, repeats=repeats, grids=locator.grid_count)
    outside = rng.uniform((bounds[0] - 1, bounds[1] - 1), (bounds[0] - 0.1, bounds[1] - 0.1), size=(min(points_n, 20_000), 2))
    emit(measure="locator_locate_outside_territory", us_per_point=round(per_point_us(locator.locate, outside, repeats), 3),
         points=len(outside), repeats=repeats)
    emit(measure="ratio", grid_at_over_raw=round(results["locator_grid_at"] / results["raw_strtree_query"], 3),
         locate_over_raw=round(results["locator_locate"] / results["raw_strtree_query"], 3),
         target="<= 2", points_in_a_grid=f"{hits}/2000")

    if args.do_import:
        time_import(features, args.database_url)


if __name__ == "__main__":
    main()
