"""marshmallow's built-in messages, as the error payload shows them (pure: no app, no database)."""
from __future__ import annotations

import marshmallow as ma
import pytest

from grid_service.web.kit.messages import in_chinese


def errors_of(field: ma.fields.Field, value) -> list[str]:
    schema = ma.Schema.from_dict({"x": field})()
    return schema.validate({"x": value})["x"]


@pytest.mark.parametrize(("field", "value", "chinese"), [
    (ma.fields.Integer(validate=ma.validate.Range(1, 200)), 0, "应在 1 到 200 之间"),
    (ma.fields.Float(validate=ma.validate.Range(0, 1, min_inclusive=False, max_inclusive=False)), 1, "应大于 0 且小于 1"),
    (ma.fields.Integer(validate=ma.validate.Range(min=1)), -5, "应不小于 1"),
    (ma.fields.Float(validate=ma.validate.Range(max=0.5)), 0.75, "应不大于 0.5"),
    (ma.fields.String(validate=ma.validate.Length(1, 16)), "", "长度应在 1 到 16 之间"),
    (ma.fields.String(validate=ma.validate.Length(max=3)), "abcd", "长度不能超过 3"),
    (ma.fields.String(validate=ma.validate.OneOf(("urgent", "normal"))), "x", "应为以下之一：urgent, normal"),
    (ma.fields.String(validate=ma.validate.Regexp("^a$")), "b", "格式不正确"),
    (ma.fields.Integer(), "x", "应为整数"),
    (ma.fields.Boolean(), "maybe", "应为布尔值（true 或 false）"),
    (ma.fields.String(), None, "不能为 null"),
    (ma.fields.List(ma.fields.Integer()), "x", "应为列表"),
])
def test_builtin_field_and_validator_messages_are_translated(field, value, chinese):
    assert in_chinese(errors_of(field, value)) == [chinese]


def test_nesting_is_kept_and_unknown_texts_pass_through():
    messages = {"json": {"state": {0: ["Must be one of: a, b."]}, "zzz": ["Unknown field."], "note": ["必填"]},
                "query": {"q": ["something we never wrote"]}}
    assert in_chinese(messages) == {"json": {"state": {0: ["应为以下之一：a, b"]}, "zzz": ["未知字段"], "note": ["必填"]},
                                    "query": {"q": ["something we never wrote"]}}
