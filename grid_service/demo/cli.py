"""`flask demo …`: seed the demo district, print its territory as GeoJSON."""
from __future__ import annotations

import json
import time
import unicodedata
from datetime import timedelta

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from ..infra.cli import reported_errors
from ..infra.db import db
from ..infra.timeutil import utcnow
from ..territory.models import Unit
from .geography import demo_feature_collection
from .seed import DEFAULT_RNG_SEED, NewUser, SeedReport, seed_demo

demo_cli = AppGroup("demo", help="The demo district (modelled on 包头市青山区).")

ROLE_NAMES = {"admin": "管理员", "supervisor": "监督员", "handler": "处置单位", "grid_worker": "网格员"}


@demo_cli.command("seed")
@click.option("--events", type=click.IntRange(min=0), default=0, show_default=True, help="Demo events to add.")
@click.option("--if-empty", is_flag=True, help="Do nothing when the database already has territory units.")
@click.option("--seed", "rng_seed", type=int, default=DEFAULT_RNG_SEED, show_default=True, help="Random seed for the events.")
def seed_command(events: int, if_empty: bool, rng_seed: int) -> None:
    """Create the demo district, its categories and users (idempotent), and optionally events."""
    if if_empty and db.session.scalar(sa.select(Unit.id).limit(1)) is not None:
        click.echo("the database already has territory units; nothing seeded (--if-empty)")
        return
    started = time.perf_counter()
    now = utcnow()
    config = current_app.config
    # A bar only for big runs (it shows just its label when stdout is not a terminal).
    with click.progressbar(length=max(events, 1), label="writing events", show_pos=True, hidden=events < 20_000) as bar:
        with reported_errors(with_details=True):
            report = seed_demo(
                db.session, now=now, events=events, rng_seed=rng_seed,
                token_ttl=timedelta(days=config["TOKEN_TTL_DAYS"]),
                timezone=config.get("GRID_TIMEZONE", "Asia/Shanghai"), progress=bar.update,
            )
            db.session.commit()
    _print_report(report, time.perf_counter() - started)


@demo_cli.command("geojson")
@click.option("--indent", type=int, default=None, help="Pretty-print with this indent.")
def geojson_command(indent: int | None) -> None:
    """Print the demo territory as a GeoJSON FeatureCollection (a sample import file)."""
    click.echo(json.dumps(demo_feature_collection(), ensure_ascii=False, indent=indent))


def _print_report(report: SeedReport, elapsed: float) -> None:
    territory = report.territory
    click.echo(f"territory: {territory.created} units created, {territory.updated} updated, {territory.unchanged} unchanged")
    click.echo(f"categories: {report.categories_created} created ({report.attributes_created} Open311 questions added)")
    click.echo(f"time limits: {report.policies_created} per-category policies installed (grid_service/sla/defaults.py)")
    click.echo(f"users: {len(report.users)} created")
    if report.users:
        _print_users(report.users)
    if report.events_created:
        states = ", ".join(f"{state} {n}" for state, n in report.event_states.most_common())
        click.echo(f"events: {report.events_created} created with {report.history_created} history rows, "
                   f"{report.clocks_created} SLA clocks and {report.escalations_created} timer escalations ({states})")
    else:
        click.echo("events: none requested (--events N adds N)")
    click.echo(f"elapsed: {elapsed:.1f} s")


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _print_users(users: list[NewUser]) -> None:
    """A table of the new users and their tokens (shown once: only their hashes are stored)."""
    header = ("name", "role", "unit", "display name", "token")
    rows = [(u.name, f"{u.role} {ROLE_NAMES.get(u.role, '')}".strip(), f"{u.unit_code} {u.unit_name}", u.display_name, u.token)
            for u in users]
    widths = [max(_width(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        click.echo("  ".join(_pad(cell, widths[i]) for i, cell in enumerate(row)).rstrip())
    click.echo("tokens are shown only now; mint new ones with `flask --app wsgi users token NAME`")
