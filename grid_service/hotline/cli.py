"""`flask hotline map …`: the hotline's category codes and the 小类 each maps to."""
from __future__ import annotations

import click
from flask.cli import AppGroup

from ..infra.cli import reported_errors
from ..infra.db import db
from ..infra.timeutil import utcnow
from . import service

hotline_cli = AppGroup("hotline", help="The 12345 hotline integration.")


@hotline_cli.group("map")
def map_group() -> None:
    """The category mapping (hotline code → our 小类; `*` takes every unmapped code)."""


@map_group.command("list")
def map_list() -> None:
    """Every mapping: hotline code, our 小类 code and name, note."""
    for row in service.list_mappings(db.session):
        click.echo("\t".join([row.external_code, row.category.code, row.category.name, row.note or ""]))


@map_group.command("set")
@click.argument("external_code")
@click.argument("category_code")
@click.option("--note", default="", help="Why, or the hotline's name for the code.")
def map_set(external_code: str, category_code: str, note: str) -> None:
    """Map EXTERNAL_CODE (or '*', the default) onto our 小类 CATEGORY_CODE."""
    with reported_errors():
        row, created = service.set_mapping(db.session, external_code, category_code, note=note, now=utcnow())
        db.session.commit()
    click.echo(f"{'added' if created else 'changed'} {row.external_code} → {row.category.code} {row.category.name}")


@map_group.command("delete")
@click.argument("external_code")
def map_delete(external_code: str) -> None:
    """Remove a mapping (the code falls to '*' from now on)."""
    with reported_errors():
        service.delete_mapping(db.session, external_code)
        db.session.commit()
    click.echo(f"deleted {external_code}")
