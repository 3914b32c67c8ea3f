"""Service attributes: the questions a 小类 asks, checking the answers, and the demo questions.

Attributes are data (one `Open311Attribute` row per question), so a city adds or changes questions
without a release; `seed_demo_attributes` gives a few demo categories sensible ones.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..events.catalog import bump_catalog_version
from ..events.models import Category
from ..infra.errors import BadRequest
from .formats import parse_w3c
from .models import DATATYPES, LIST_DATATYPES, Open311Attribute

MAX_STRING = 200
MAX_TEXT = 4000
# `attribute[CODE]` or `attribute[CODE][]` (the multivaluelist form).
ATTRIBUTE_KEY = re.compile(r"^attribute\[([^\[\]]{1,64})\](\[\])?$")


def attributes_for(session: Session, category_ids: Sequence[int]) -> dict[int, list[Open311Attribute]]:
    """The attributes of each category, in presentation order."""
    if not category_ids:
        return {}
    rows = session.scalars(sa.select(Open311Attribute).where(Open311Attribute.category_id.in_(list(category_ids)))
                           .order_by(Open311Attribute.category_id, Open311Attribute.sort_order))
    found: dict[int, list[Open311Attribute]] = {}
    for row in rows:
        found.setdefault(row.category_id, []).append(row)
    return found


def raw_answers(form: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """{code: [values]} from the `attribute[code]` / `attribute[code][]` fields of a form."""
    answers: dict[str, list[str]] = {}
    for key, values in form.items():
        match = ATTRIBUTE_KEY.match(key)
        if match:
            answers.setdefault(match.group(1), []).extend(values)
    return answers


@dataclass(frozen=True)
class Answer:
    """One checked answer: the stored value and the words a person reads."""

    code: str
    value: Any
    shown: str


def check_answers(attributes: Sequence[Open311Attribute], raw: Mapping[str, list[str]], zone: ZoneInfo) -> list[Answer]:
    """Checked answers in attribute order; BadRequest listing every problem at once."""
    by_code = {a.code: a for a in attributes}
    problems: dict[str, list[str]] = {}
    for code in raw:
        if code not in by_code:
            problems[f"attribute[{code}]"] = ["该服务没有这个附加信息项（unknown attribute code）"]
    answers: list[Answer] = []
    for attribute in attributes:
        values = [v.strip() for v in raw.get(attribute.code, []) if v is not None and v.strip()]
        field = f"attribute[{attribute.code}]"
        if not attribute.variable:
            continue  # informational only: nothing to answer, anything sent is ignored
        if not values:
            if attribute.required:
                problems[field] = [f"必填：{attribute.description}"]
            continue
        try:
            answers.append(_check_one(attribute, values, zone))
        except ValueError as exc:
            problems[field] = [str(exc)]
    if problems:
        raise BadRequest("附加信息有误（attribute values are invalid）", problems)
    return answers


def _check_one(attribute: Open311Attribute, values: list[str], zone: ZoneInfo) -> Answer:
    kind = attribute.datatype
    if kind != "multivaluelist" and len(values) > 1:
        raise ValueError("只能填写一个值（only one value is allowed）")
    if kind in LIST_DATATYPES:
        names = {str(v["key"]): str(v["name"]) for v in attribute.choices}
        unknown = [v for v in values if v not in names]
        if unknown:
            raise ValueError(f"可选值为 {', '.join(names)}（not a listed key: {', '.join(unknown)}）")
        chosen = list(dict.fromkeys(values))
        shown = "、".join(names[v] for v in chosen)
        return Answer(attribute.code, chosen if kind == "multivaluelist" else chosen[0], shown)
    value = values[0]
    if kind == "number":
        try:
            number = float(value)
        except ValueError:
            raise ValueError("应为数字（must be a number）") from None
        if not math.isfinite(number):
            raise ValueError("应为有限的数字（must be a finite number）")
        stored: Any = int(number) if number.is_integer() and abs(number) < 2**53 else number
        return Answer(attribute.code, stored, str(stored))
    if kind == "datetime":
        instant = parse_w3c(value, zone)
        if instant is None:
            raise ValueError("应为 ISO 8601 日期时间，如 2026-03-02T09:00:00+08:00（must be an ISO 8601 datetime）")
        local = instant.astimezone(zone)
        return Answer(attribute.code, local.isoformat(timespec="seconds"), f"{local:%Y-%m-%d %H:%M}")
    if kind == "string":
        if "\n" in value or "\r" in value:
            raise ValueError("不能换行（a string has no line breaks）")
        if len(value) > MAX_STRING:
            raise ValueError(f"最多 {MAX_STRING} 字（at most {MAX_STRING} characters）")
    elif len(value) > MAX_TEXT:
        raise ValueError(f"最多 {MAX_TEXT} 字（at most {MAX_TEXT} characters）")
    return Answer(attribute.code, value, value)


# ---------------------------------------------------------------- demo questions

@dataclass(frozen=True)
class AttributeSpec:
    code: str
    datatype: str
    description: str
    required: bool = False
    variable: bool = True
    datatype_description: str = ""
    values: tuple[tuple[str, str], ...] = ()


DEMO_ATTRIBUTES: dict[str, tuple[AttributeSpec, ...]] = {
    "01001": (  # 暴露垃圾
        AttributeSpec("AMOUNT", "singlevaluelist", "垃圾大约有多少？", required=True,
                      values=(("few", "少量（1–2 袋）"), ("some", "较多（3–10 袋）"), ("many", "大量（成堆）"))),
        AttributeSpec("SMELL", "singlevaluelist", "是否有明显异味？", values=(("yes", "有"), ("no", "没有"))),
    ),
    "11001": (  # 井盖破损
        AttributeSpec("NOTICE", "text", "井盖缺失或塌陷有人员坠落危险时，请先设置警示并拨打 110。", variable=False),
        AttributeSpec("COVER_TYPE", "singlevaluelist", "井盖属于哪类管线？", required=True,
                      datatype_description="井盖上一般印有“雨”“污”“电力”“通信”“燃气”等字样",
                      values=(("rain", "雨水"), ("sewage", "污水"), ("power", "电力"), ("telecom", "通信"),
                              ("gas", "燃气"), ("unknown", "看不清"))),
        AttributeSpec("DAMAGE", "multivaluelist", "井盖有哪些问题？", required=True,
                      values=(("missing", "缺失"), ("broken", "破损"), ("displaced", "移位"), ("uneven", "与路面不平"))),
    ),
    "11002": (  # 路灯损坏
        AttributeSpec("LAMP_NO", "string", "路灯杆上的编号", datatype_description="灯杆上喷涂或贴牌的编号，如 QS-0123"),
        AttributeSpec("FAULT", "multivaluelist", "路灯有什么问题？", required=True,
                      values=(("dark", "不亮"), ("flicker", "闪烁"), ("day_on", "白天常亮"), ("tilted", "灯杆倾斜"),
                              ("broken", "灯具破损"))),
    ),
    "04001": (  # 路面塌陷
        AttributeSpec("AREA", "number", "塌陷面积大约多少平方米？", required=True, datatype_description="估计值即可，如 1.5"),
        AttributeSpec("TRAFFIC", "singlevaluelist", "是否影响车辆或行人通行？", required=True,
                      values=(("blocked", "已无法通行"), ("partly", "部分影响"), ("no", "不影响"))),
    ),
    "05003": (  # 机动车乱停放
        AttributeSpec("PLATE", "string", "车牌号（如能看清）", datatype_description="如 蒙B·12345"),
        AttributeSpec("SEEN_AT", "datetime", "发现时间", datatype_description="ISO 8601，如 2026-03-02T09:00:00+08:00"),
        AttributeSpec("DETAIL", "text", "具体停放位置（如占用消防通道、盲道）"),
    ),
}


def add_attributes(session: Session, category: Category, specs: Sequence[AttributeSpec], *, now: datetime) -> int:
    """Add the questions `category` does not have yet (by code), after its existing ones; returns how many."""
    existing = {a.code: a for a in session.scalars(sa.select(Open311Attribute).where(Open311Attribute.category_id == category.id))}
    order = max((a.sort_order for a in existing.values()), default=0)
    added = 0
    for spec in specs:
        if spec.code in existing:
            continue
        if spec.datatype not in DATATYPES:
            raise ValueError(f"unknown datatype {spec.datatype!r}")
        if (spec.datatype in LIST_DATATYPES) != bool(spec.values):
            raise ValueError(f"{spec.code}: list datatypes need values, other datatypes take none")
        order += 1
        session.add(Open311Attribute(
            category_id=category.id, code=spec.code, datatype=spec.datatype, variable=spec.variable,
            required=spec.required and spec.variable, sort_order=order, description=spec.description,
            datatype_description=spec.datatype_description,
            choices=[{"key": key, "name": name} for key, name in spec.values], updated_at=now,
        ))
        added += 1
    return added


def seed_demo_attributes(session: Session, *, now: datetime) -> int:
    """Give the demo categories that exist their Open311 questions (idempotent); never commits."""
    categories = {c.code: c for c in session.scalars(sa.select(Category).where(Category.code.in_(list(DEMO_ATTRIBUTES))))}
    added = sum(add_attributes(session, categories[code], specs, now=now)
                for code, specs in DEMO_ATTRIBUTES.items() if code in categories)
    if added:
        session.flush()
        # Service definitions changed: discovery's changeset moves and caches reload.
        bump_catalog_version(session, now)
    return added
