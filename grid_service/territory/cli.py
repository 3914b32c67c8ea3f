"""`flask territory …`: import a GeoJSON territory file, export units as GeoJSON."""
from __future__ import annotations

import json
import sys
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from ..infra.db import db
from ..infra.errors import NotFound
from ..infra.timeutil import utcnow
from .importer import Problem, TerritoryImportError, export_units, import_units
from .locator import paused_gc
from .models import LEVELS

territory_cli = AppGroup("territory", help="Territory units and boundaries.")

# Files with at least this many features get a progress bar.
PROGRESS_BAR_MIN_FEATURES = 1000


def _fail(problems: list[Problem]) -> None:
    for problem in problems:
        click.echo(str(problem), err=True)
    noun = "problem" if len(problems) == 1 else "problems"
    click.echo(f"{len(problems)} {noun}; nothing was imported.", err=True)
    sys.exit(1)


@territory_cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--dry-run", is_flag=True, help="Check the file and report what would change, without saving.")
def import_command(file: str, dry_run: bool) -> None:
    """Create or update units from a GeoJSON FeatureCollection (all or nothing)."""
    try:
        with open(file, encoding="utf-8-sig") as handle, paused_gc():
            collection: Any = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail([Problem(None, None, f"not valid JSON: {exc}")])
    except RecursionError:
        _fail([Problem(None, None, "not valid JSON: nested too deeply")])
    features = collection.get("features") if isinstance(collection, dict) else None
    count = len(features) if isinstance(features, list) else 0
    digits = current_app.config["UNIT_CODE_DIGITS"] if current_app.config.get("ENFORCE_UNIT_CODE_FORMAT") else None

    bar = click.progressbar(length=max(count, 1), label=f"Checking {count} features", file=sys.stderr,
                            show_pos=True, hidden=count < PROGRESS_BAR_MIN_FEATURES)
    try:
        with bar:
            report = import_units(db.session, collection, now=utcnow(), progress=bar.update, code_digits=digits)
    except TerritoryImportError as exc:
        db.session.rollback()
        _fail(exc.problems)
    if dry_run:
        db.session.rollback()
    else:
        db.session.commit()
    click.echo(f"{report.created} created, {report.updated} updated, {report.unchanged} unchanged" + (" (dry run: nothing saved)" if dry_run else ""))
    if not dry_run and (report.created or report.updated):
        click.echo("Running workers pick up the new boundaries within LOCATOR_REFRESH_SECONDS.")


@territory_cli.command("export")
@click.option("--level", type=click.Choice(LEVELS), default=None, help="Only units of this level.")
@click.option("--within", "within", default=None, metavar="CODE", help="Only this unit and the units under it.")
def export_command(level: str | None, within: str | None) -> None:
    """Print units as a GeoJSON FeatureCollection (importable again)."""
    try:
        collection = export_units(db.session, level=level, within=within)
    except NotFound:  # the API's message is Chinese; operators read English here
        raise click.ClickException(f"unknown unit {within!r}") from None
    click.echo(json.dumps(collection, ensure_ascii=False))
