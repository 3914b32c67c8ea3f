"""Marshmallow fields shared by the schemas."""
from __future__ import annotations

import marshmallow as ma

from ...infra.db import MAX_ID
from ...infra.timeutil import as_utc, zone


class LocalDateTime(ma.fields.DateTime):
    """ISO 8601 with offset: dumped in the configured zone, loaded as UTC (naive means local)."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return value.astimezone(zone()).isoformat()

    # Instants this service deals in; anything else is a typo (or a fuzzer), not a petition from 1874.
    EARLIEST_YEAR, LATEST_YEAR = 1970, 2199

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The document says what the loader enforces (and every stored instant lies within).
        bound = (f"ISO 8601, years {self.EARLIEST_YEAR}–{self.LATEST_YEAR}; input without an offset is read in the "
                 "service's time zone (GRID_TIMEZONE), output always has one.")
        description = self.metadata.get("description")
        self.metadata = {**self.metadata, "description": f"{description}. {bound}" if description else bound}

    def _deserialize(self, value, attr, data, **kwargs):
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            instant = as_utc(parsed, zone())
        except (OverflowError, ValueError) as exc:
            raise ma.ValidationError("不是有效的日期时间") from exc
        if not self.EARLIEST_YEAR <= instant.year <= self.LATEST_YEAR:
            raise ma.ValidationError(f"年份应在 {self.EARLIEST_YEAR} 到 {self.LATEST_YEAR} 之间")
        return instant


def _storable(value: str) -> None:
    # PostgreSQL cannot store NUL, and lone surrogates cannot be encoded as UTF-8.
    if "\x00" in value:
        raise ma.ValidationError("不能包含 NUL 字符")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ma.ValidationError("应为有效的 Unicode 文本") from None


class Str(ma.fields.String):
    """A string that every database can store (no NUL, no lone surrogates), whitespace-trimmed."""

    def __init__(self, *args, strip: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.strip = strip
        self.validators = [_storable, *self.validators]

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        return text.strip() if self.strip else text


def Id(**kwargs) -> ma.fields.Integer:
    """An integer id field (1 … MAX_ID)."""
    return ma.fields.Integer(strict=False, validate=ma.validate.Range(1, MAX_ID), **kwargs)


# A phone number as people type it (digits, spaces, dashes, a leading +); privacy/phones normalises it.
PHONE = ma.validate.Regexp(r"^\+?[0-9][0-9 \-]{5,19}$", error="电话号码格式不正确")
