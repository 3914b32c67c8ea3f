"""`flask sla …` (the sweeper) and `flask calendar …` (working calendars)."""
from __future__ import annotations

import json
import time
from datetime import datetime

import click
from flask import current_app
from flask.cli import AppGroup

from ..errors import DomainError
from ..extensions import db
from ..timeutil import as_utc, utcnow

sla_cli = AppGroup("sla", help="SLA clocks and the escalation sweeper.")
calendar_cli = AppGroup("calendar", help="Working calendars: deadlines, holidays, make-up working days.")


def _instant(value: str | None) -> datetime:
    if value is None:
        return utcnow()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 instant: {value!r}") from None
    from zoneinfo import ZoneInfo

    return as_utc(parsed, ZoneInfo(current_app.config["GRID_TIMEZONE"]))


@sla_cli.command("sweep")
@click.option("--once", is_flag=True, help="One pass, then exit (default: a pass every --interval seconds).")
@click.option("--now", "now_text", default=None, help="Sweep as of this ISO 8601 instant (default: now).")
@click.option("--batch-size", type=int, default=500, show_default=True)
@click.option("--interval", type=float, default=30.0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Batches at once on PostgreSQL (default: SWEEP_WORKERS; SQLite: always 1).")
def sweep_command(once: bool, now_text: str | None, batch_size: int, interval: float, workers: int | None) -> None:
    """Warn, breach and escalate every clock that is due; prints a JSON summary per pass."""
    from ..escalation.sweeper import sweep

    sla = current_app.extensions["sla"]
    workers = workers or current_app.config["SWEEP_WORKERS"]
    while True:
        started = time.perf_counter()
        result = sweep(db.session, sla, _instant(now_text), batch_size=batch_size, wall_clock=utcnow, workers=workers)
        summary = result.summary() | {"seconds": round(time.perf_counter() - started, 3)}
        click.echo(json.dumps(summary, ensure_ascii=False))
        if once or now_text is not None:
            return
        time.sleep(max(0.0, interval - (time.perf_counter() - started)))


@calendar_cli.command("due")
@click.option("--start", "start_text", required=True, help="ISO 8601 instant (an offset, or local time).")
@click.option("--minutes", type=int, required=True, help="Working minutes to add.")
@click.option("--calendar", "name", default="default", show_default=True)
def due_command(start_text: str, minutes: int, name: str) -> None:
    """Print the due instant (ISO 8601 with offset) of START plus MINUTES working minutes."""
    from ..sla.calendars import calendar_by_name

    if minutes < 0:
        raise click.BadParameter("minutes must not be negative")
    try:
        row, calendar = calendar_by_name(db.session, current_app.extensions["sla"], name, utcnow())
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    start = _instant(start_text)
    due = calendar.add(start, minutes)
    from zoneinfo import ZoneInfo

    if calendar.is_provisional(start, due):
        click.echo("note: provisional — the official schedule of a year in this span is not confirmed", err=True)
    click.echo(due.astimezone(ZoneInfo(row.timezone)).isoformat())


@calendar_cli.command("set-day")
@click.argument("day", type=click.DateTime(formats=["%Y-%m-%d"]))
@click.argument("kind", type=click.Choice(["holiday", "workday", "clear"]))
@click.option("--calendar", "name", default="default", show_default=True)
@click.option("--note", default="", help="Why (e.g. 国务院办公厅通知).")
def set_day_command(day: datetime, kind: str, name: str, note: str) -> None:
    """Override one day (or clear the override); running clocks the day touches are recomputed."""
    from ..sla.calendars import set_day

    try:
        touched = set_day(db.session, current_app.extensions["sla"], name, day.date(), kind, note=note, actor=None, now=utcnow())
        db.session.commit()
    except DomainError as exc:
        db.session.rollback()
        raise click.ClickException(exc.message) from None
    click.echo(f"{day.date()} is now {kind} on calendar {name}; {touched} running clock(s) recomputed")


@calendar_cli.command("confirm")
@click.argument("year", type=int)
@click.option("--calendar", "name", default="default", show_default=True)
def confirm_command(year: int, name: str) -> None:
    """Mark a year's schedule as official (enter its holidays first); clocks in it stop being provisional."""
    from ..sla.calendars import confirm_year

    try:
        touched = confirm_year(db.session, current_app.extensions["sla"], name, year, actor=None, now=utcnow())
        db.session.commit()
    except DomainError as exc:
        db.session.rollback()
        raise click.ClickException(exc.message) from None
    click.echo(f"{year} confirmed on calendar {name}; {touched} running clock(s) recomputed")


@calendar_cli.command("status")
@click.option("--calendar", "name", default="default", show_default=True)
def status_command(name: str) -> None:
    """Which years are confirmed and which are provisional (this year and the next two)."""
    from ..sla.calendars import calendar_status

    click.echo(json.dumps(calendar_status(db.session, current_app.extensions["sla"], name, utcnow()), ensure_ascii=False))

