"""Territory: the unit tree (district → street → community → grid) and its boundaries."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..infra.db import db
from ..infra.timeutil import UTCDateTime

LEVELS: tuple[str, ...] = ("district", "street", "community", "grid")
LEVEL_RANK = {level: rank for rank, level in enumerate(LEVELS)}

# Paths compare byte-wise so a subtree is one index range; PostgreSQL needs the "C" collation
# for that (a locale collation would ignore the '/' separators).
PathType = sa.String(512).with_variant(sa.String(512, collation="C"), "postgresql")


def level_check(column: str) -> str:
    return f"{column} IN ({', '.join(repr(level) for level in LEVELS)})"


def subtree_bounds(path: str) -> tuple[str, str]:
    """[low, high) such that low <= p < high holds exactly for the paths under `path`."""
    return path, path[:-1] + chr(ord(path[-1]) + 1)


class Unit(db.Model):
    __tablename__ = "units"
    __table_args__ = (
        sa.CheckConstraint(level_check("level"), name="level"),
        sa.CheckConstraint("(level = 'district') = (parent_id IS NULL)", name="parent_by_level"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(32), unique=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    level: Mapped[str] = mapped_column(sa.String(16))
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("units.id"), index=True)
    # "/150204/150204001/150204001001/": the codes of the unit and all its ancestors.
    path: Mapped[str] = mapped_column(PathType, index=True)
    region: Mapped[str | None] = mapped_column(sa.String(32))
    # GeoJSON geometry (Polygon or MultiPolygon), required for grids, optional above. Deferred: a
    # unit comes with every user and event loaded, and only the locator and the map need its shape.
    boundary: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, deferred=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    parent: Mapped[Unit | None] = relationship(remote_side=[id], lazy="select")

    @property
    def rank(self) -> int:
        return LEVEL_RANK[self.level]

    def ancestor_codes(self) -> list[str]:
        return [code for code in self.path.strip("/").split("/")][:-1]

    def __repr__(self) -> str:
        return f"<Unit {self.code} {self.level} {self.name}>"


def in_subtree(unit_path: str, root_path: str) -> bool:
    """Whether the unit at `unit_path` is `root_path`'s unit or under it."""
    return unit_path.startswith(root_path)


def subtree_unit_ids(path: str) -> sa.Select:
    """The ids of the units under (and at) `path`, as a subquery."""
    low, high = subtree_bounds(path)
    return sa.select(Unit.id).where(Unit.path >= low, Unit.path < high)


def ancestor_paths(path: str) -> list[str]:
    """The paths of the units above the one at `path`, the district first ("/a/b/c/" → "/a/", "/a/b/")."""
    codes = path.strip("/").split("/")
    return ["/" + "/".join(codes[:i]) + "/" for i in range(1, len(codes))]
