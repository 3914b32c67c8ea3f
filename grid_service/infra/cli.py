"""What every `flask …` command shares: a domain error ends it with its message and exit status 1
(nothing it wrote stays), and instants read as the API reads them."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import click

from .db import db
from .errors import DomainError
from .timeutil import as_utc, utcnow, zone


@contextmanager
def reported_errors(*, with_details: bool = False) -> Iterator[None]:
    """Run the block; a DomainError rolls the session back and becomes a ClickException (stderr, exit 1)."""
    try:
        yield
    except DomainError as exc:
        db.session.rollback()
        message = exc.message
        if with_details and exc.errors:  # which field or row was wrong: "(name: 已被使用; unit: …)"
            detail = "; ".join(f"{key}: {', '.join(map(str, value)) if isinstance(value, list) else value}"
                               for key, value in exc.errors.items())
            message = f"{message} ({detail})"
        raise click.ClickException(message) from None


def cli_instant(value: str | None) -> datetime:
    """An instant given on the command line (ISO 8601; without an offset, in GRID_TIMEZONE); None is now."""
    if value is None:
        return utcnow()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 instant: {value!r}") from None
    return as_utc(parsed, zone())
