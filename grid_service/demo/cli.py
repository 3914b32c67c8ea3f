"""`flask demo …`: seed the demo district, print its territory as GeoJSON, show the demo TOTP code."""
from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import click
import pyotp
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from ..auth.cli import print_table
from ..auth.login import TOTP_INTERVAL, LoginPolicy
from ..infra.cli import reported_errors
from ..infra.db import db
from ..infra.timeutil import utcnow
from ..territory.models import Unit
from .geography import demo_feature_collection
from .seed import (
    DEFAULT_DEMO_PASSWORD,
    DEFAULT_DEMO_TOTP_SECRET,
    DEFAULT_RNG_SEED,
    DemoLogin,
    NewUser,
    SeedReport,
    seed_demo,
)

demo_cli = AppGroup("demo", help="The demo district (modelled on 包头市青山区).")

ROLE_NAMES = {"admin": "管理员", "supervisor": "监督员", "handler": "处置单位", "grid_worker": "网格员"}


def _setting(name: str, default: str) -> str:
    """A demo setting: the Flask config wins, then the environment (set but empty means "none"), then the default."""
    if current_app.config.get(name) is not None:
        return str(current_app.config[name])
    return os.environ.get(name, default)


def demo_password() -> str | None:
    """DEMO_PASSWORD: the password every demo user gets (empty: none, they use their tokens)."""
    return _setting("DEMO_PASSWORD", DEFAULT_DEMO_PASSWORD) or None


def demo_totp_secret() -> str | None:
    """DEMO_TOTP_SECRET: the TOTP secret the demo supervisors and admins are enrolled with (empty: they enrol themselves)."""
    secret = "".join(_setting("DEMO_TOTP_SECRET", DEFAULT_DEMO_TOTP_SECRET).split()).upper()
    return secret or None


def _demo_login() -> DemoLogin | None:
    password = demo_password()
    if password is None:
        return None
    return DemoLogin(password=password, policy=LoginPolicy.from_config(current_app.config),
                     app_secret=str(current_app.config["SECRET_KEY"]), totp_secret=demo_totp_secret())


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
                timezone=config.get("GRID_TIMEZONE", "Asia/Shanghai"), progress=bar.update, login=_demo_login(),
            )
            db.session.commit()
    _print_report(report, time.perf_counter() - started)


@demo_cli.command("totp")
@click.option("--uri", is_flag=True, help="Print the otpauth:// URI instead, to add the secret to an authenticator app.")
def totp_command(uri: bool) -> None:
    """The current code of the demo TOTP secret (DEMO_TOTP_SECRET), for the demo supervisors and admin."""
    secret = demo_totp_secret()
    if secret is None:
        raise click.ClickException("DEMO_TOTP_SECRET is empty: the demo supervisors and admin enrol their own TOTP")
    totp = pyotp.TOTP(secret, interval=TOTP_INTERVAL)
    if uri:
        click.echo(totp.provisioning_uri(name="demo", issuer_name=str(current_app.config.get("TOTP_ISSUER") or "网格化服务管理平台")))
        return
    now = utcnow()
    click.echo(totp.at(now))
    click.echo(f"valid for {TOTP_INTERVAL - int(now.timestamp()) % TOTP_INTERVAL} s more (and one step either side); "
               "each code works once per user", err=True)


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
    click.echo(f"12345 categories: {report.hotline_mappings_created} hotline codes mapped onto the demo 小类 "
               "(`flask --app wsgi hotline map list`)")
    click.echo(f"users: {len(report.users)} created")
    if report.users:
        _print_users(report.users)
    if report.passwords_set or report.totp_enrolled:
        click.echo(f"logins: {report.passwords_set} demo users can log in with DEMO_PASSWORD "
                   f"({report.totp_enrolled} supervisors/admins also with a code of DEMO_TOTP_SECRET: "
                   "`flask --app wsgi demo totp`); these are public demo credentials: never seed the demo "
                   "into a database real users work in")
    if report.events_created:
        states = ", ".join(f"{state} {n}" for state, n in report.event_states.most_common())
        click.echo(f"events: {report.events_created} created with {report.history_created} history rows, "
                   f"{report.clocks_created} SLA clocks and {report.escalations_created} timer escalations ({states})")
    else:
        click.echo("events: none requested (--events N adds N)")
    click.echo(f"elapsed: {elapsed:.1f} s")


def _print_users(users: list[NewUser]) -> None:
    """A table of the new users and their tokens (shown once: only their hashes are stored)."""
    header = ("name", "role", "unit", "display name", "token")
    rows = [(u.name, f"{u.role} {ROLE_NAMES.get(u.role, '')}".strip(), f"{u.unit_code} {u.unit_name}", u.display_name, u.token)
            for u in users]
    print_table(header, rows)
    click.echo("tokens are shown only now; mint new ones with `flask --app wsgi users token NAME`")
