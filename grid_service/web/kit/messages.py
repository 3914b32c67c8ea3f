"""marshmallow's and webargs' own validation messages in Chinese, for the error payload people read.

Our schemas write their messages in Chinese; the libraries' defaults ("Missing data for required
field.", "Must be one of: …") are translated here, where every request-parsing error passes (the
HTTP error handler), so that no schema has to override them field by field. A message not listed
here is passed on unchanged.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_EXACT = {
    "Missing data for required field.": "缺少必填字段",
    "Field may not be null.": "不能为 null",
    "Invalid value.": "值无效",
    "Invalid type.": "类型无效",
    "Invalid input type.": "输入类型无效",
    "Unknown field.": "未知字段",
    "Not a valid string.": "应为字符串",
    "Not a valid utf-8 string.": "应为有效的 UTF-8 字符串",
    "Not a valid number.": "应为数字",
    "Not a valid integer.": "应为整数",
    "Number too large.": "数值过大",
    "Special numeric values (nan or infinity) are not permitted.": "不能为 nan 或 infinity",
    "Not a valid boolean.": "应为布尔值（true 或 false）",
    "Not a valid datetime.": "不是有效的日期时间",
    "Not a valid date.": "不是有效的日期",
    "Not a valid list.": "应为列表",
    "Not a valid delimited list.": "应为逗号分隔的列表",
    "Not a valid mapping type.": "应为对象",
    "Not a valid URL.": "不是有效的网址",
    "Not a valid email address.": "不是有效的邮箱地址",
    "String does not match expected pattern.": "格式不正确",
    "Invalid JSON body.": "请求体不是有效的 JSON",
}

_OPS = {"greater than or equal to": "不小于", "greater than": "大于", "less than or equal to": "不大于", "less than": "小于"}
_OP = "|".join(re.escape(op) for op in sorted(_OPS, key=len, reverse=True))


def _range(match: re.Match[str]) -> str:
    low_op, low, high_op, high = match.groups()
    if high_op is None:
        return f"应{_OPS[low_op]} {low}"
    if (low_op, high_op) == ("greater than or equal to", "less than or equal to"):
        return f"应在 {low} 到 {high} 之间"
    return f"应{_OPS[low_op]} {low} 且{_OPS[high_op]} {high}"


_PATTERNS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"Must be one of: (.*)\."), lambda m: f"应为以下之一：{m[1]}"),
    (re.compile(r"Length must be between (\S+) and (\S+)\."), lambda m: f"长度应在 {m[1]} 到 {m[2]} 之间"),
    (re.compile(r"Shorter than minimum length (\S+)\."), lambda m: f"长度不能少于 {m[1]}"),
    (re.compile(r"Longer than maximum length (\S+)\."), lambda m: f"长度不能超过 {m[1]}"),
    (re.compile(r"Length must be (\S+)\."), lambda m: f"长度应为 {m[1]}"),
    (re.compile(rf"Must be ({_OP}) (\S+?)(?: and ({_OP}) (\S+?))?\."), _range),
)


def in_chinese(messages: Any) -> Any:
    """`messages` as marshmallow nests them (dicts, lists, strings), with the libraries' texts in Chinese."""
    if isinstance(messages, dict):
        return {key: in_chinese(value) for key, value in messages.items()}
    if isinstance(messages, list):
        return [in_chinese(value) for value in messages]
    if isinstance(messages, str):
        return _translate(messages)
    return messages


def _translate(text: str) -> str:
    if text in _EXACT:
        return _EXACT[text]
    for pattern, render in _PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            return render(match)
    return text
