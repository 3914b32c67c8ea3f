"""GeoJSON import and export of the unit tree.

`import_units` is all-or-nothing: every feature is checked first (structure, geometry, parents,
level order, containment) and every problem is reported; only a clean file is written, with a few
bulk statements whatever its size. Re-importing upserts by code and never deletes units, so events
that reference units by id stay valid. Export gives a FeatureCollection that imports again as is.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import shapely
import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from ..infra.errors import Invalid, NotFound
from .locator import bump_territory_version, paused_gc, shapes_from_geojson
from .models import LEVEL_RANK, LEVELS, Unit, subtree_bounds

logger = logging.getLogger(__name__)

# Degrees a unit may stick out of its parent: float noise on shared edges (1e-6° ≈ 0.1 m).
CONTAINMENT_TOLERANCE_DEG = 1e-6
CODE_PATTERN = re.compile(r"[0-9A-Za-z_-]{1,32}")
MAX_NAME_LENGTH = 100
MAX_REGION_LENGTH = 32
GEOMETRY_TYPES = ("Polygon", "MultiPolygon")
PROGRESS_STEP = 1000
# Ids per IN (...) list when loading boundaries: well under SQLite's and PostgreSQL's bind limits.
ID_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a file cannot be imported; `index` is None for the file as a whole."""

    index: int | None
    code: str | None
    message: str

    def __str__(self) -> str:
        if self.index is None:
            return f"file: {self.message}"
        return f"feature #{self.index} ({self.code or '-'}): {self.message}"


@dataclass(slots=True)
class ImportReport:
    """What an import did, counted over the features of the file."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0


class TerritoryImportError(Invalid):
    """The file has problems; nothing was changed."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(
            f"the territory file has {len(problems)} {noun}; nothing was imported",
            {"features": [{"index": p.index, "code": p.code, "message": p.message} for p in problems]},
        )


@dataclass(slots=True)
class _Row:
    """A feature whose properties passed the checks; geometry may still be bad."""

    index: int
    code: str
    name: str
    level: str
    parent_code: str | None
    region: str | None
    boundary: dict[str, Any] | None
    geom: Any  # shapely geometry, or None (no boundary, or a malformed one)
    geometry_ok: bool


@dataclass(slots=True)
class _Existing:
    id: int
    code: str
    level: str
    parent_id: int | None
    path: str
    name: str
    region: str | None


class _Problems:
    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.bad_indexes: set[int] = set()

    def add(self, index: int | None, code: str | None, message: str) -> None:
        self.items.append(Problem(index, code, message))
        if index is not None:
            self.bad_indexes.add(index)

    def raise_if_any(self) -> None:
        if self.items:
            ordered = sorted(self.items, key=lambda p: -1 if p.index is None else p.index)
            raise TerritoryImportError(ordered)


def import_units(
    session: Session,
    feature_collection: dict,
    *,
    now: datetime,
    progress: Callable[[int], None] | None = None,
    code_digits: Mapping[str, int] | None = None,
) -> ImportReport:
    """Create or update the units of a GeoJSON FeatureCollection; never commits.

    `progress(n)` is told how many more features have been checked (the total is the number of
    features). `code_digits` (level → digits), when given, also enforces the code convention:
    a district code of that many digits, every other code its parent's code plus that many digits.
    Raises TerritoryImportError with every problem found, having changed nothing.
    """
    problems = _Problems()
    features = _features_of(feature_collection, problems)
    problems.raise_if_any()

    with paused_gc():
        rows, mentioned = _parse_features(features, problems, progress)
        by_code = _unique_codes(rows, problems)
        existing = _load_existing(session)
        _check_tree(by_code, mentioned, existing, problems, code_digits)
        _check_validity(rows, problems)
        boundaries = _load_boundaries(session, _boundary_ids_needed(by_code, existing), len(existing.by_id))
        _check_containment(by_code, existing, boundaries, problems)
        problems.raise_if_any()

        try:
            report = _write(session, by_code, existing, boundaries, now)
        except Exception:
            # A database error mid-write (e.g. a concurrent import) must leave nothing behind.
            session.rollback()
            raise
    logger.info("territory import: %d created, %d updated, %d unchanged", report.created, report.updated, report.unchanged)
    return report


# --- structure ---------------------------------------------------------------------------------


def _features_of(feature_collection: Any, problems: _Problems) -> list[Any]:
    if not isinstance(feature_collection, dict):
        problems.add(None, None, f"expected a GeoJSON FeatureCollection object, got {_json_type(feature_collection)}")
        return []
    if feature_collection.get("type") != "FeatureCollection":
        problems.add(None, None, f"expected a GeoJSON FeatureCollection, got type {_shown(feature_collection.get('type'))}")
        return []
    features = feature_collection.get("features")
    if not isinstance(features, list):
        problems.add(None, None, f"'features' must be an array, got {_json_type(features)}")
        return []
    return features


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shown(value: Any) -> str:
    """A short string for a value in a message: the text itself when short, else its JSON type."""
    return repr(value) if isinstance(value, str) and len(value) <= 32 else _json_type(value)


def _storable(text: str) -> bool:
    """Text every database stores: no NUL (PostgreSQL refuses it), no lone surrogates (not UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_features(features: list[Any], problems: _Problems, progress: Callable[[int], None] | None) -> tuple[list[_Row], set[str]]:
    """The features whose properties are usable, and every well-formed code the file mentions."""
    rows: list[_Row] = []
    mentioned: set[str] = set()
    reported = 0
    for index, feature in enumerate(features):
        row = _parse_feature(index, feature, problems, mentioned)
        if row is not None:
            rows.append(row)
        if progress is not None and (index + 1) % PROGRESS_STEP == 0:
            progress(index + 1 - reported)
            reported = index + 1
    if progress is not None and len(features) > reported:
        progress(len(features) - reported)
    return rows, mentioned


def _parse_feature(index: int, feature: Any, problems: _Problems, mentioned: set[str]) -> _Row | None:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        problems.add(index, None, 'not a GeoJSON Feature (an object with "type": "Feature")')
        return None
    props = feature.get("properties")
    if not isinstance(props, dict):
        problems.add(index, None, f"'properties' must be an object with code, name, level and parent_code, got {_json_type(props)}")
        return None
    errors: list[str] = []

    code = props.get("code")
    if code is None:
        errors.append("property 'code' is required")
    elif not isinstance(code, str):
        errors.append(f"property 'code' must be a string, got {_json_type(code)}")
        code = None
    elif not CODE_PATTERN.fullmatch(code):
        errors.append("property 'code' must be 1 to 32 letters, digits, '-' or '_'")
        code = None
    else:
        mentioned.add(code)

    name = props.get("name")
    if not isinstance(name, str) or not name.strip():
        errors.append("property 'name' is required and must be a non-empty string")
    elif len(name.strip()) > MAX_NAME_LENGTH or not _storable(name):
        errors.append(f"property 'name' must be at most {MAX_NAME_LENGTH} characters of valid text (no NUL)")

    level = props.get("level")
    if level not in LEVELS:
        errors.append(f"property 'level' must be one of {', '.join(LEVELS)}, got {_shown(level)}")
        level = None

    parent_code = props.get("parent_code")
    if parent_code is not None and not isinstance(parent_code, str):
        errors.append(f"property 'parent_code' must be a string or null, got {_json_type(parent_code)}")
    elif parent_code == "":
        parent_code = None
    elif parent_code is not None and not CODE_PATTERN.fullmatch(parent_code):
        errors.append("property 'parent_code' must be a unit code (1 to 32 letters, digits, '-' or '_')")

    region = props.get("region")
    if region is not None and not isinstance(region, str):
        errors.append(f"property 'region' must be a string or null, got {_json_type(region)}")
    elif isinstance(region, str) and (len(region.strip()) > MAX_REGION_LENGTH or not _storable(region)):
        errors.append(f"property 'region' must be at most {MAX_REGION_LENGTH} characters of valid text (no NUL)")
    region = region.strip() or None if isinstance(region, str) else None

    geometry = feature.get("geometry")
    boundary, geom, geometry_errors = _parse_geometry(geometry)
    if level == "grid" and geometry is None:
        geometry_errors.append("a grid needs a Polygon or MultiPolygon geometry, got " + ("null" if "geometry" in feature else "none"))

    for message in errors + geometry_errors:
        problems.add(index, code, message)
    if errors:
        return None
    # A feature with a bad geometry still takes part in the tree checks, so all problems show at once.
    return _Row(index, code, name.strip(), level, parent_code, region, boundary, geom, geom is not None and not geometry_errors)


def _parse_geometry(geometry: Any) -> tuple[dict[str, Any] | None, Any, list[str]]:
    """(normalised GeoJSON, shapely geometry, problems) of a feature's geometry member."""
    if geometry is None:
        return None, None, []
    if not isinstance(geometry, dict):
        return None, None, [f"'geometry' must be an object or null, got {_json_type(geometry)}"]
    kind = geometry.get("type")
    if kind not in GEOMETRY_TYPES:
        return None, None, [f"geometry must be a Polygon or MultiPolygon, got {_shown(kind)}"]
    coordinates = geometry.get("coordinates")
    errors: list[str] = []
    if kind == "Polygon":
        rings = _parse_polygon(coordinates, "", errors)
        if errors:
            return None, None, errors
        geom = shapely.Polygon(rings[0][0], [array for array, _ in rings[1:]])
        coords: list[Any] = [ring for _, ring in rings]
    else:
        if not isinstance(coordinates, list) or not coordinates:
            return None, None, ["a MultiPolygon needs a non-empty array of polygons"]
        polygons = [_parse_polygon(polygon, f"polygon {i}: ", errors) for i, polygon in enumerate(coordinates)]
        if errors:
            return None, None, errors
        geom = shapely.MultiPolygon([shapely.Polygon(rings[0][0], [array for array, _ in rings[1:]]) for rings in polygons])
        coords = [[ring for _, ring in rings] for rings in polygons]
    return {"type": kind, "coordinates": coords}, geom, []


def _parse_polygon(coordinates: Any, label: str, errors: list[str]) -> list[tuple[np.ndarray, list[Any]]]:
    if not isinstance(coordinates, list) or not coordinates:
        errors.append(f"{label}a polygon needs a non-empty array of linear rings")
        return []
    rings = []
    for r, ring in enumerate(coordinates):
        parsed = _parse_ring(ring, f"{label}ring {r} ({'exterior' if r == 0 else 'hole'})", errors)
        if parsed is not None:
            rings.append(parsed)
    return rings


def _parse_ring(ring: Any, name: str, errors: list[str]) -> tuple[np.ndarray, list[Any]] | None:
    """A ring as an (n, 2) float array and as [lon, lat] lists, or None after recording why not."""
    if not isinstance(ring, list):
        errors.append(f"{name} must be an array of positions")
        return None
    try:
        array = np.asarray(ring)
    except (ValueError, TypeError):
        array = None
    if array is None or array.ndim != 2 or array.shape[1] not in (2, 3) or array.dtype.kind not in "iuf":
        errors.append(f"{name}: every position must be an array of 2 numbers [longitude, latitude]")
        return None
    as_given = array.dtype.kind == "f" and array.shape[1] == 2
    array = array[:, :2].astype(np.float64)
    if not np.isfinite(array).all():
        errors.append(f"{name}: coordinates must be finite numbers")
        return None
    lon, lat = array[:, 0], array[:, 1]
    if (np.abs(lon) > 180).any() or (np.abs(lat) > 90).any():
        bad = array[(np.abs(lon) > 180) | (np.abs(lat) > 90)][0]
        errors.append(f"{name}: position [{bad[0]:g}, {bad[1]:g}] is out of range (longitude -180..180, latitude -90..90)")
        return None
    if len(array) < 4:
        errors.append(f"{name} has too few points ({len(array)}); a closed ring needs at least 4 positions")
        return None
    if not (array[0] == array[-1]).all():
        errors.append(f"{name} is not closed: its first and last positions differ")
        return None
    return array, ring if as_given else array.tolist()


def _unique_codes(rows: list[_Row], problems: _Problems) -> dict[str, _Row]:
    by_code: dict[str, _Row] = {}
    for row in rows:
        first = by_code.get(row.code)
        if first is not None:
            problems.add(row.index, row.code, f"duplicate code: feature #{first.index} has it too")
            continue
        by_code[row.code] = row
    return by_code


# --- the tree ----------------------------------------------------------------------------------


class _Territory:
    """The units already stored, without their boundaries."""

    def __init__(self, units: Iterable[_Existing]) -> None:
        self.by_id: dict[int, _Existing] = {}
        self.by_code: dict[str, _Existing] = {}
        self.children: dict[int, list[int]] = {}
        for unit in units:
            self.by_id[unit.id] = unit
            self.by_code[unit.code] = unit
            if unit.parent_id is not None:
                self.children.setdefault(unit.parent_id, []).append(unit.id)

    def parent_code(self, unit: _Existing) -> str | None:
        return None if unit.parent_id is None else self.by_id[unit.parent_id].code


def _load_existing(session: Session) -> _Territory:
    result = session.execute(
        sa.select(Unit.id, Unit.code, Unit.level, Unit.parent_id, Unit.path, Unit.name, Unit.region)
    )
    return _Territory(_Existing(*row) for row in result)


def _check_tree(by_code: dict[str, _Row], mentioned: set[str], existing: _Territory, problems: _Problems, code_digits: Mapping[str, int] | None) -> None:
    for row in by_code.values():
        stored = existing.by_code.get(row.code)
        if stored is not None and stored.level != row.level:
            problems.add(row.index, row.code, f"the unit exists as a {stored.level}; its level cannot change to {row.level}")
        rank = LEVEL_RANK[row.level]
        if rank == 0:
            if row.parent_code is not None:
                problems.add(row.index, row.code, "a district has no parent: parent_code must be absent or null")
            elif code_digits and not _digits(row.code, code_digits["district"]):
                problems.add(row.index, row.code, f"a district code must be {code_digits['district']} digits")
            continue
        expected = LEVELS[rank - 1]
        if row.parent_code is None:
            problems.add(row.index, row.code, f"property 'parent_code' is required: a {row.level} belongs to a {expected}")
            continue
        parent_level = _parent_level(row.parent_code, by_code, existing)
        if parent_level is None and row.parent_code in mentioned:
            # The parent is in the file but unusable; its own problems are reported.
            problems.bad_indexes.add(row.index)
        elif parent_level is None:
            problems.add(row.index, row.code, f"unknown parent {row.parent_code!r}: neither in this file nor in the database")
        elif parent_level != expected:
            problems.add(row.index, row.code, f"wrong level order: the parent of a {row.level} must be a {expected}, but {row.parent_code} is a {parent_level}")
        elif code_digits:
            digits = code_digits[row.level]
            if not (row.code.startswith(row.parent_code) and _digits(row.code[len(row.parent_code):], digits)):
                problems.add(row.index, row.code, f"a {row.level} code must be its parent's code {row.parent_code} followed by {digits} digits")


def _digits(text: str, count: int) -> bool:
    return len(text) == count and text.isascii() and text.isdigit()


def _parent_level(parent_code: str, by_code: dict[str, _Row], existing: _Territory) -> str | None:
    row = by_code.get(parent_code)
    if row is not None:
        return row.level
    stored = existing.by_code.get(parent_code)
    return stored.level if stored is not None else None


# --- geometry ----------------------------------------------------------------------------------


def _check_validity(rows: list[_Row], problems: _Problems) -> None:
    rows = [row for row in rows if row.geometry_ok]
    if not rows:
        return
    valid = shapely.is_valid(np.array([row.geom for row in rows], dtype=object))
    for row, ok in zip(rows, valid):
        if not ok:
            problems.add(row.index, row.code, f"invalid polygon: {shapely.is_valid_reason(row.geom)}")
            row.geometry_ok = False


def _boundary_ids_needed(by_code: dict[str, _Row], existing: _Territory) -> set[int]:
    """Stored units whose boundary the checks or the change detection need."""
    ids: set[int] = set()
    for row in by_code.values():
        stored = existing.by_code.get(row.code)
        if stored is not None:
            ids.add(stored.id)
            ids.update(existing.children.get(stored.id, ()))
        if row.parent_code is not None and row.parent_code not in by_code:
            parent = existing.by_code.get(row.parent_code)
            if parent is not None:
                ids.add(parent.id)
    return ids


def _load_boundaries(session: Session, ids: set[int], total: int) -> dict[int, dict[str, Any] | None]:
    if not ids:
        return {}
    query = sa.select(Unit.id, Unit.boundary)
    if len(ids) * 2 > total:
        return {unit_id: boundary for unit_id, boundary in session.execute(query) if unit_id in ids}
    wanted = sorted(ids)
    boundaries: dict[int, dict[str, Any] | None] = {}
    for start in range(0, len(wanted), ID_CHUNK):
        chunk = wanted[start:start + ID_CHUNK]
        boundaries.update((unit_id, boundary) for unit_id, boundary in session.execute(query.where(Unit.id.in_(chunk))))
    return boundaries


def _check_containment(by_code: dict[str, _Row], existing: _Territory, boundaries: dict[int, Any], problems: _Problems) -> None:
    """Every unit inside its parent's boundary, and every changed boundary still around its children."""
    checked = [row for row in by_code.values() if row.geometry_ok and row.index not in problems.bad_indexes]
    # (child shape or stored id, parent row or stored id, row the problem belongs to, message)
    pairs: list[tuple[Any, Any, _Row, str]] = []
    for row in checked:
        if row.parent_code is None:
            continue
        parent = by_code.get(row.parent_code)
        if parent is None:
            pairs.append((row.geom, existing.by_code[row.parent_code].id, row, f"the boundary is not inside its parent {row.parent_code}'s boundary"))
        elif parent.geometry_ok:
            pairs.append((row.geom, parent, row, f"the boundary is not inside its parent {row.parent_code}'s boundary"))
    # A new boundary must still hold the stored children that this file does not move.
    for row in checked:
        stored = existing.by_code.get(row.code)
        if stored is None or boundaries.get(stored.id) == row.boundary:
            continue
        for child_id in existing.children.get(stored.id, ()):
            child = existing.by_id[child_id]
            if child.code not in by_code and boundaries.get(child_id):
                pairs.append((child_id, row, row, f"the new boundary leaves out the stored {child.level} {child.code}, which this file does not move"))

    stored_ids = sorted({item for child, parent, _, _ in pairs for item in (child, parent) if isinstance(item, int)})
    stored_ids = [unit_id for unit_id in stored_ids if boundaries.get(unit_id)]
    stored = dict(zip(stored_ids, shapes_from_geojson([boundaries[unit_id] for unit_id in stored_ids])))
    grown: dict[Any, Any] = {}  # parent key → its boundary grown by the tolerance

    def outer(parent: Any) -> Any:
        key = parent if isinstance(parent, int) else parent.code
        if key not in grown:
            shape = stored.get(parent) if isinstance(parent, int) else parent.geom
            grown[key] = _tolerant(shape) if shape is not None else None
        return grown[key]

    outers, inners, owners = [], [], []
    for child, parent, owner, message in pairs:
        parent_shape = outer(parent)
        if parent_shape is not None:
            outers.append(parent_shape)
            inners.append(stored[child] if isinstance(child, int) else child)
            owners.append((owner, message))
    if not owners:
        return
    inside = shapely.covers(np.array(outers, dtype=object), np.array(inners, dtype=object))
    for ok, (owner, message) in zip(inside, owners):
        if not ok:
            problems.add(owner.index, owner.code, message)


def _tolerant(shape: Any) -> Any:
    """The shape grown by the containment tolerance, prepared for repeated predicates."""
    grown = shapely.buffer(shape, CONTAINMENT_TOLERANCE_DEG, quad_segs=1, join_style="mitre")
    shapely.prepare(grown)
    return grown


# --- writing -----------------------------------------------------------------------------------


def _write(session: Session, by_code: dict[str, _Row], existing: _Territory, boundaries: dict[int, Any], now: datetime) -> ImportReport:
    report = ImportReport()
    ids = {code: unit.id for code, unit in existing.by_code.items()}
    paths: dict[str, str] = {}

    def final_parent(code: str) -> str | None:
        row = by_code.get(code)
        return row.parent_code if row is not None else existing.parent_code(existing.by_code[code])

    def path_of(code: str) -> str:
        # Iterative: walk up to a known path, then fill in on the way down.
        chain = []
        while code not in paths:
            chain.append(code)
            parent = final_parent(code)
            if parent is None:
                break
            code = parent
        prefix = paths.get(code, "/")
        for item in reversed(chain):
            prefix = prefix + item + "/"
            paths[item] = prefix
        return paths[chain[0]] if chain else paths[code]

    # New units, one level at a time so that each level knows its parents' ids.
    for level in LEVELS:
        new_rows = [row for row in by_code.values() if row.level == level and row.code not in existing.by_code]
        if not new_rows:
            continue
        values = [
            {
                "code": row.code, "name": row.name, "level": row.level,
                "parent_id": ids[row.parent_code] if row.parent_code is not None else None,
                "path": path_of(row.code), "region": row.region, "boundary": row.boundary,
                "created_at": now, "updated_at": now,
            }
            for row in new_rows
        ]
        # RETURNING the code too, so the order of the returned rows does not matter.
        inserted = session.execute(sa.insert(Unit).returning(Unit.id, Unit.code), values)
        ids.update({code: unit_id for unit_id, code in inserted})
        report.created += len(new_rows)

    # Changed units of the file, then stored units whose path moved with an ancestor.
    changes, moved = [], []
    for row in by_code.values():
        stored = existing.by_code.get(row.code)
        if stored is None:
            continue
        change = {
            "id": stored.id, "name": row.name, "region": row.region, "boundary": row.boundary,
            "parent_id": ids[row.parent_code] if row.parent_code is not None else None,
            "path": path_of(row.code), "updated_at": now,
        }
        if (stored.name, stored.region, boundaries.get(stored.id), stored.parent_id, stored.path) == (
            change["name"], change["region"], change["boundary"], change["parent_id"], change["path"]
        ):
            report.unchanged += 1
        else:
            changes.append(change)
    report.updated = len(changes)
    if any(existing.by_code[code].path != path for code, path in paths.items() if code in existing.by_code):
        for unit in existing.by_id.values():
            if unit.code not in by_code and path_of(unit.code) != unit.path:
                moved.append({"id": unit.id, "path": paths[unit.code], "updated_at": now})
    if changes:
        session.execute(sa.update(Unit), changes)
    if moved:
        session.execute(sa.update(Unit), moved)
        logger.info("territory import: %d units under moved units got new paths", len(moved))
    # Bulk statements bypass the identity map: drop what it holds of the rows just rewritten.
    touched = {change["id"] for change in changes} | {change["id"] for change in moved}
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Unit) and obj.id in touched:
            session.expire(obj)

    if report.created or changes or moved:
        bump_territory_version(session, now)
    return report


# --- export ------------------------------------------------------------------------------------


def export_units(session: Session, *, level: str | None = None, within: str | None = None) -> dict[str, Any]:
    """The units (optionally of one level, under one unit) as a FeatureCollection, parents first."""
    parent = aliased(Unit)
    query = (
        sa.select(Unit.code, Unit.name, Unit.level, parent.code, Unit.region, Unit.boundary)
        .outerjoin(parent, Unit.parent_id == parent.id)
        .order_by(Unit.path)
    )
    if within is not None:
        root_path = session.scalar(sa.select(Unit.path).where(Unit.code == within)) if CODE_PATTERN.fullmatch(within) else None
        if root_path is None:
            raise NotFound(f"未找到单位 {within}" if CODE_PATTERN.fullmatch(within) else "未找到该单位",
                           {"within": ["没有此编码的单位"]})
        low, high = subtree_bounds(root_path)
        query = query.where(Unit.path >= low, Unit.path < high)
    if level is not None:
        query = query.where(Unit.level == level)
    features = [
        {
            "type": "Feature",
            "id": code,
            "properties": {"code": code, "name": name, "level": unit_level, "parent_code": parent_code, "region": region},
            "geometry": _plain_geometry(boundary),
        }
        for code, name, unit_level, parent_code, region, boundary in session.execute(query)
    ]
    return {"type": "FeatureCollection", "features": features}


def _plain_geometry(boundary: Any) -> dict[str, Any] | None:
    """The stored boundary with only its GeoJSON `type` and `coordinates` (or None)."""
    if not isinstance(boundary, dict) or "type" not in boundary or "coordinates" not in boundary:
        return None
    return {"type": boundary["type"], "coordinates": boundary["coordinates"]}
