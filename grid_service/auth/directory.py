"""The people directory (人员目录): whom a supervisor can see and dispatch to, never their secrets.

A supervisor or admin sees the people of their own subtree, and the handlers (处置人员/部门) of the
units above them — a street's handler takes work from the street's communities and grids too.
Phone numbers, passwords, TOTP and tokens never leave here.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..infra.errors import Forbidden, Invalid
from ..territory.models import Unit, ancestor_paths, in_subtree, subtree_unit_ids
from .models import ROLES, User

DIRECTORY_ROLES: tuple[str, ...] = ("supervisor", "admin")


def check_access(user: User) -> None:
    """403 unless `user` may read the directory (supervisors and admins)."""
    if user.role not in DIRECTORY_ROLES:
        raise Forbidden("只有监督员和管理员可以查看人员目录", {"role": ["网格员和处置人员没有人员目录"]})


def people_in_scope(user: User) -> sa.ColumnElement[bool]:
    """The people `user` may see: everyone in their subtree, and the handlers of the units above."""
    above = sa.select(Unit.id).where(Unit.path.in_(ancestor_paths(user.unit.path)))
    return sa.or_(User.unit_id.in_(subtree_unit_ids(user.unit.path)),
                  sa.and_(User.role == "handler", User.unit_id.in_(above)))


def list_people(session: Session, user: User, *, role: str | None = None, unit_code: str | None = None,
                text: str | None = None, active: bool | None = True, where: Sequence[sa.ColumnElement[bool]] = (),
                limit: int = 50, offset: int = 0) -> tuple[list[User], int]:
    """One page of the people in `user`'s scope, by unit then name; `where` narrows it further."""
    check_access(user)
    clauses: list[sa.ColumnElement[bool]] = [people_in_scope(user), *where]
    if role is not None:
        if role not in ROLES:
            raise Invalid("未知的角色", {"role": [f"应为 {'、'.join(ROLES)} 之一"]})
        clauses.append(User.role == role)
    if unit_code is not None:
        unit = session.scalar(sa.select(Unit).where(Unit.code == unit_code))
        if unit is None or not (in_subtree(unit.path, user.unit.path) or in_subtree(user.unit.path, unit.path)):
            raise Invalid("单位不存在或不在您的辖区内", {"unit": ["您的辖区及上级单位中没有此编码"]})
        clauses.append(User.unit_id.in_(subtree_unit_ids(unit.path)))
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append(sa.or_(User.name.like(pattern, escape="\\"), User.display_name.like(pattern, escape="\\")))
    if active is not None:
        clauses.append(User.is_active.is_(active))
    query = sa.select(User).join(Unit, Unit.id == User.unit_id).where(*clauses)
    total = session.scalar(sa.select(sa.func.count()).select_from(query.with_only_columns(User.id).subquery())) or 0
    people = session.scalars(query.order_by(Unit.path, User.name).limit(limit).offset(offset)).unique().all()
    return list(people), int(total)
