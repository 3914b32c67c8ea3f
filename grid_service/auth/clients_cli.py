"""`flask clients …`: create API clients, rotate their signing secrets, list and deactivate them."""
from __future__ import annotations

import json
from datetime import timedelta

import click
from flask.cli import AppGroup

from ..infra.cli import reported_errors
from ..infra.db import db
from ..infra.timeutil import utcnow
from .client_models import CLIENT_KINDS
from .clients import create_client, deactivate_client, get_client, list_clients, rotate_secret

clients_cli = AppGroup("clients", help="API clients (the 12345 hotline, Open311 partners) and their secrets.")


@clients_cli.command("create")
@click.option("--name", required=True, help="Unique name (A-Z a-z 0-9 _ -); the hotline may send it as webhook-client.")
@click.option("--kind", type=click.Choice(CLIENT_KINDS), default="hotline", show_default=True)
@click.option("--callback-url", default=None, help="Where outcomes are posted (signed); none: nothing is sent.")
@click.option("--unit", "unit_code", default=None, help="Unit code its unplaceable petitions go to (default: the district).")
def create_command(name: str, kind: str, callback_url: str | None, unit_code: str | None) -> None:
    """Create a client; its id, signing secret and API key are printed as JSON on the last line (shown once)."""
    with reported_errors(with_details=True):
        client, secret, api_key = create_client(db.session, name=name, kind=kind, callback_url=callback_url,
                                                unit_code=unit_code, now=utcnow())
        db.session.commit()
    click.echo(f"created {client.kind} client {client.name}; keep the secret and key now, they are not shown again")
    click.echo(json.dumps({"client_id": client.id, "name": client.name, "kind": client.kind, "secret": secret,
                           "api_key": api_key}))


@clients_cli.command("rotate-secret")
@click.argument("name")
@click.option("--grace-hours", type=click.FloatRange(0, 720), default=24.0, show_default=True,
              help="How long the old secret stays accepted (and keeps signing outbound messages too).")
def rotate_command(name: str, grace_hours: float) -> None:
    """A new signing secret, printed as JSON on the last line; the old one expires after the grace period."""
    now = utcnow()
    with reported_errors(with_details=True):
        client = get_client(db.session, name)
        secret = rotate_secret(db.session, client, grace=timedelta(hours=grace_hours), now=now)
        db.session.commit()
    until = (now + timedelta(hours=grace_hours)).isoformat()
    click.echo(f"rotated the secret of {client.name}; the previous one is accepted until {until}")
    click.echo(json.dumps({"client_id": client.id, "name": client.name, "secret": secret, "previous_valid_until": until}))


@clients_cli.command("list")
def list_command() -> None:
    """Every client: name, kind, default unit, active, live secrets, callback URL."""
    now = utcnow()
    for client in list_clients(db.session):
        live = sum(1 for s in client.secrets if s.is_live(now))
        click.echo("\t".join([client.name, client.kind, client.unit.code if client.unit else "-",
                              "active" if client.is_active else "inactive", f"{live} live secret(s)",
                              client.callback_url or "-"]))


@clients_cli.command("deactivate")
@click.argument("name")
def deactivate_command(name: str) -> None:
    """Refuse the client's signatures and API key from now on."""
    with reported_errors(with_details=True):
        client = deactivate_client(db.session, get_client(db.session, name), now=utcnow())
        db.session.commit()
    click.echo(f"deactivated {client.name}")
