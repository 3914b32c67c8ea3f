"""`flask calendar …`: working calendars, their holidays and make-up working days."""
from __future__ import annotations

import json
from datetime import datetime

import click
from flask import current_app
from flask.cli import AppGroup

from ..infra.cli import cli_instant, reported_errors
from ..infra.db import db
from ..infra.timeutil import utcnow

calendar_cli = AppGroup("calendar", help="Working calendars: deadlines, holidays, make-up working days.")


@calendar_cli.command("due")
@click.option("--start", "start_text", required=True, help="ISO 8601 instant (an offset, or local time).")
@click.option("--minutes", type=int, required=True, help="Working minutes to add.")
@click.option("--calendar", "name", default="default", show_default=True)
def due_command(start_text: str, minutes: int, name: str) -> None:
    """Print the due instant (ISO 8601 with offset) of START plus MINUTES working minutes."""
    from .calendars import calendar_by_name

    if minutes < 0:
        raise click.BadParameter("minutes must not be negative")
    with reported_errors():
        row, calendar = calendar_by_name(db.session, current_app.extensions["sla"], name, utcnow())
    start = cli_instant(start_text)
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
    from .calendars import set_day

    with reported_errors():
        touched = set_day(db.session, current_app.extensions["sla"], name, day.date(), kind, note=note, actor=None, now=utcnow())
        db.session.commit()
    click.echo(f"{day.date()} is now {kind} on calendar {name}; {touched} running clock(s) recomputed")


@calendar_cli.command("confirm")
@click.argument("year", type=int)
@click.option("--calendar", "name", default="default", show_default=True)
def confirm_command(year: int, name: str) -> None:
    """Mark a year's schedule as official (enter its holidays first); clocks in it stop being provisional."""
    from .calendars import confirm_year

    with reported_errors():
        touched = confirm_year(db.session, current_app.extensions["sla"], name, year, actor=None, now=utcnow())
        db.session.commit()
    click.echo(f"{year} confirmed on calendar {name}; {touched} running clock(s) recomputed")


@calendar_cli.command("status")
@click.option("--calendar", "name", default="default", show_default=True)
def status_command(name: str) -> None:
    """Which years are confirmed and which are provisional (this year and the next two)."""
    from .calendars import calendar_status

    click.echo(json.dumps(calendar_status(db.session, current_app.extensions["sla"], name, utcnow()), ensure_ascii=False))

