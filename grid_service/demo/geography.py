"""The demo territory: a district modelled on 包头市青山区, as a GeoJSON FeatureCollection.

The layout is drawn in a local metre grid first (integer coordinates, so every shared edge is
exact), each rectangle's ring gets every lattice vertex that lies on its edges (so neighbours
share the same vertex sequence even across T-junctions), and only then a smooth, small warp maps
metres to longitude/latitude. Grids therefore tile their community exactly, communities tile their
street, streets tile the district, and nothing depends on floating-point luck.

Deterministic: no clock, and the only randomness is a `random.Random` with a fixed seed that is
read through `.random()` alone (stable across Python versions).
"""
from __future__ import annotations

import copy
import math
import random
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import shapely

DISTRICT_CODE = "150204"
DISTRICT_NAME = "青山区"
# GB/T 30428.1: district 6 + street 3 + community 3 + grid 2 digits.
CODE_DIGITS: dict[str, int] = {"district": 6, "street": 3, "community": 3, "grid": 2}
REGIONS: tuple[str, ...] = ("东", "南", "西", "北")

# South-west corner of the layout and the scale of one metre in degrees at this latitude.
ORIGIN_LON = 109.7525
ORIGIN_LAT = 40.597
_M_PER_DEG_LAT = 110_950.0
_M_PER_DEG_LON = 111_320.0 * math.cos(math.radians(40.68))
COORD_DECIMALS = 7
_LAYOUT_SEED = 150204


@dataclass(frozen=True, slots=True)
class StreetSpec:
    """A street (街道) or town (镇): GB/T 10114 numbers streets 001–099 and towns 100–199."""

    number: str
    name: str
    region: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in layout metres
    communities: tuple[str, ...]
    grids_per_community: tuple[int, int]  # inclusive range

    @property
    def is_town(self) -> bool:
        return self.name.endswith("镇")


# Urban streets in two rows of four south of the towns; the towns fill the larger northern band
# towards 大青山. Row heights differ from column to column, as real street edges do.
# Public sources (维基百科「青山区 (包头市)」) list 先锋道、幸福路、万青路、富强路、科学路、青山路、
# 自由路、乌素图 and 稀土路 街道 and the towns 青福镇、兴胜镇、万水泉镇; there is no 钢铁大街街道
# (钢铁大街 is the avenue), so the eighth street is 乌素图街道, one of the district's historic eight.
STREETS: tuple[StreetSpec, ...] = (
    StreetSpec("001", "先锋道街道", "西", (0, 0, 3600, 4100),
               ("先锋社区", "一机社区", "工业社区", "劳动社区", "建设社区"), (5, 8)),
    StreetSpec("002", "幸福路街道", "南", (3600, 0, 7300, 4300),
               ("幸福社区", "幸福南社区", "团结社区", "少先社区", "民主社区"), (5, 8)),
    StreetSpec("003", "万青路街道", "东", (11100, 0, 14800, 4200),
               ("万青社区", "万和社区", "金辉社区", "东方社区", "安居社区", "民馨社区"), (5, 8)),
    StreetSpec("004", "青山路街道", "西", (0, 4100, 3600, 8400),
               ("青东社区", "青西社区", "华丰社区", "阳光社区", "光辉社区", "青年社区"), (5, 8)),
    StreetSpec("005", "自由路街道", "西", (3600, 4300, 7300, 8400),
               ("自由社区", "友谊社区", "北苑社区", "迎宾社区", "和平社区", "文化社区"), (5, 8)),
    StreetSpec("006", "富强路街道", "南", (7300, 0, 11100, 3900),
               ("富强社区", "富民社区", "嘉园社区", "兴业社区", "北重社区", "宏达社区"), (5, 8)),
    StreetSpec("007", "科学路街道", "东", (7300, 3900, 11100, 8400),
               ("科学社区", "明德社区", "育才社区", "丰产道社区", "曙光社区", "春光社区"), (5, 8)),
    StreetSpec("008", "乌素图街道", "东", (11100, 4200, 14800, 8400),
               ("乌素图社区", "东沙河社区", "康宁社区", "泰和社区"), (5, 8)),
    StreetSpec("100", "兴胜镇", "北", (0, 8400, 7600, 19200),
               ("兴胜社区", "顶独龙贵村", "西壕口村", "后营子村", "南营子村"), (4, 6)),
    StreetSpec("101", "青福镇", "北", (7600, 8400, 14800, 20000),
               ("青福社区", "昌福村", "打拉亥村", "古城湾村", "毛凤章村"), (4, 6)),
)

_CN_DIGITS = "零一二三四五六七八九"


def chinese_number(n: int) -> str:
    """1 → 一, 10 → 十, 12 → 十二, 20 → 二十 (enough for grid names)."""
    if n < 10:
        return _CN_DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else _CN_DIGITS[tens]) + "十" + (_CN_DIGITS[ones] if ones else "")


@dataclass(frozen=True, slots=True)
class DemoUnit:
    """One unit of the demo territory, with its layout rectangle and its lon/lat ring."""

    code: str
    name: str
    level: str
    parent_code: str | None
    region: str | None
    box: tuple[int, int, int, int] | None  # layout metres; None for the district (not a rectangle)
    ring: tuple[tuple[float, float], ...]  # closed, counter-clockwise exterior ring (lon, lat)

    def geometry(self) -> dict[str, Any]:
        return {"type": "Polygon", "coordinates": [[list(point) for point in self.ring]]}

    def feature(self) -> dict[str, Any]:
        return {
            "type": "Feature",
            "id": self.code,
            "properties": {"code": self.code, "name": self.name, "level": self.level,
                           "parent_code": self.parent_code, "region": self.region},
            "geometry": self.geometry(),
        }


@dataclass(frozen=True, slots=True)
class DemoTerritory:
    """Every demo unit, parents before children (district, streets, communities, grids)."""

    units: tuple[DemoUnit, ...]

    def by_level(self, level: str) -> list[DemoUnit]:
        return [unit for unit in self.units if unit.level == level]

    def by_code(self) -> dict[str, DemoUnit]:
        return {unit.code: unit for unit in self.units}


def _split(box: tuple[int, int, int, int], n: int, rng: random.Random, step: int = 10) -> list[tuple[int, int, int, int]]:
    """`n` rectangles tiling `box`, in rows north→south and west→east within a row."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    rows = min(n, max(1, round(math.sqrt(n * height / width))))
    counts = [n // rows + (1 if r < n % rows else 0) for r in range(rows)]
    row_edges = _cuts(y1, y0, rows, rng, step)  # descending: north first
    pieces = []
    for r, count in enumerate(counts):
        top, bottom = row_edges[r], row_edges[r + 1]
        col_edges = _cuts(x0, x1, count, rng, step)
        pieces.extend((col_edges[c], bottom, col_edges[c + 1], top) for c in range(count))
    return pieces


def _cuts(start: int, end: int, parts: int, rng: random.Random, step: int) -> list[int]:
    """parts+1 edges from start to end, the inner ones jittered ±18% and snapped to `step`."""
    weights = [0.82 + 0.36 * rng.random() for _ in range(parts)]
    total = sum(weights)
    edges, acc = [start], 0.0
    for weight in weights[:-1]:
        acc += weight
        edges.append(start + round((end - start) * acc / total / step) * step)
    edges.append(end)
    return edges


def _warp_raw(x: float, y: float) -> tuple[float, float]:
    """Layout metres → (lon, lat): a gentle, smooth bend so the map does not look like graph paper."""
    dx = 55 * math.sin(2 * math.pi * y / 5200 + 0.7) + 30 * math.sin(2 * math.pi * (x + y) / 7700 + 2.1)
    dy = 45 * math.sin(2 * math.pi * x / 6100 + 1.3) + 25 * math.sin(2 * math.pi * (x - y) / 8300 + 0.4)
    return ORIGIN_LON + (x + dx) / _M_PER_DEG_LON, ORIGIN_LAT + (y + dy) / _M_PER_DEG_LAT


def _warp(x: float, y: float) -> tuple[float, float]:
    lon, lat = _warp_raw(x, y)
    return round(lon, COORD_DECIMALS), round(lat, COORD_DECIMALS)


class _Lattice:
    """Every rectangle corner, indexed by row and column, to densify edges with."""

    def __init__(self, boxes: list[tuple[int, int, int, int]]) -> None:
        xs_at: dict[int, set[int]] = {}
        ys_at: dict[int, set[int]] = {}
        for x0, y0, x1, y1 in boxes:
            for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
                xs_at.setdefault(y, set()).add(x)
                ys_at.setdefault(x, set()).add(y)
        self._xs_at = {y: sorted(xs) for y, xs in xs_at.items()}
        self._ys_at = {x: sorted(ys) for x, ys in ys_at.items()}

    @staticmethod
    def _between(values: list[int], a: int, b: int) -> list[int]:
        lo, hi = min(a, b), max(a, b)
        inner = values[bisect_right(values, lo):bisect_left(values, hi)]
        return inner if a < b else inner[::-1]

    def densify(self, ring: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The closed axis-parallel ring with every lattice vertex on its edges inserted."""
        out = [ring[0]]
        for (ax, ay), (bx, by) in zip(ring, ring[1:]):
            if ay == by:
                out.extend((x, ay) for x in self._between(self._xs_at.get(ay, []), ax, bx))
            elif ax == bx:
                out.extend((ax, y) for y in self._between(self._ys_at.get(ax, []), ay, by))
            else:  # pragma: no cover - the layout is made of rectangles only
                raise ValueError("the layout has a non axis-parallel edge")
            out.append((bx, by))
        return out


def _box_ring(box: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    x0, y0, x1, y1 = box
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]  # counter-clockwise


def _district_ring(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int]]:
    union = shapely.union_all([shapely.box(*box) for box in boxes])
    if union.geom_type != "Polygon" or len(union.interiors):
        raise ValueError("the streets do not form one district without holes")
    exterior = shapely.Polygon(shapely.simplify(union, 0).exterior).normalize()
    oriented = shapely.geometry.polygon.orient(exterior, 1.0)
    return [(int(x), int(y)) for x, y in oriented.exterior.coords]


@lru_cache(maxsize=1)
def demo_territory() -> DemoTerritory:
    """The demo district (1 district, 10 streets/towns, 54 communities, 300+ grids), built once."""
    rng = random.Random(_LAYOUT_SEED)
    plan: list[tuple[str, str, str, str | None, str | None, tuple[int, int, int, int] | None]] = []
    grid_boxes: list[tuple[int, int, int, int]] = []
    for street in STREETS:
        street_code = DISTRICT_CODE + street.number
        plan.append((street_code, street.name, "street", DISTRICT_CODE, street.region, street.box))
        community_boxes = _split(street.box, len(street.communities), rng, step=50)
        low, high = street.grids_per_community
        village_number = 200  # GB/T 10114: 村委会 are numbered from 200, 居委会 from 001
        community_number = 0
        for name, box in zip(street.communities, community_boxes):
            if name.endswith("村"):
                village_number += 1
                number = village_number
            else:
                community_number += 1
                number = community_number
            community_code = f"{street_code}{number:03d}"
            plan.append((community_code, name, "community", street_code, None, box))
            grids = low + min(high - low, int(rng.random() * (high - low + 1)))
            for g, grid_box in enumerate(_split(box, grids, rng), start=1):
                plan.append((f"{community_code}{g:02d}", f"{name}第{chinese_number(g)}网格", "grid", community_code, None, grid_box))
                grid_boxes.append(grid_box)

    lattice = _Lattice(grid_boxes)

    def lonlat(ring: list[tuple[int, int]]) -> tuple[tuple[float, float], ...]:
        return tuple(_warp(x, y) for x, y in lattice.densify(ring))

    district_ring = _district_ring([street.box for street in STREETS])
    units = [DemoUnit(DISTRICT_CODE, DISTRICT_NAME, "district", None, None, None, lonlat(district_ring))]
    levels = {"street": 1, "community": 2, "grid": 3}
    plan.sort(key=lambda item: (levels[item[2]], item[0]))
    units.extend(DemoUnit(code, name, level, parent, region, box, lonlat(_box_ring(box)))
                 for code, name, level, parent, region, box in plan)
    return DemoTerritory(tuple(units))


def demo_feature_collection() -> dict[str, Any]:
    """The demo territory as a GeoJSON FeatureCollection (a fresh copy the caller may change)."""
    return copy.deepcopy({"type": "FeatureCollection", "features": [unit.feature() for unit in demo_territory().units]})


def sample_point(unit: DemoUnit, rng: random.Random, margin: float = 0.08) -> tuple[float, float]:
    """A (lon, lat) point strictly inside a demo street, community or grid, away from its edges.

    Sampled in layout metres and warped like the boundary; the margin is far larger than the few
    metres by which a warped straight edge departs from the warped interior.
    """
    if unit.box is None:
        raise ValueError("points are sampled in a street, community or grid")
    x0, y0, x1, y1 = unit.box
    x = x0 + (x1 - x0) * (margin + (1 - 2 * margin) * rng.random())
    y = y0 + (y1 - y0) * (margin + (1 - 2 * margin) * rng.random())
    lon, lat = _warp_raw(x, y)
    return round(lon, 6), round(lat, 6)
