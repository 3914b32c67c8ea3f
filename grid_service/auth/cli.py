"""`flask users …`: create users, set passwords, unlock, reset TOTP, and mint or revoke API tokens."""
from __future__ import annotations

import sys
from datetime import timedelta

import click
from flask import current_app
from flask.cli import AppGroup

from ..infra.cli import reported_errors
from ..infra.db import db
from ..infra.timeutil import utcnow
from .login import LoginPolicy, reset_totp, set_password, unlock
from .models import ROLES
from .service import create_user, get_user, issue_token, revoke_token

users_cli = AppGroup("users", help="Users and their bearer tokens.")


def _ttl(days: int | None) -> timedelta:
    return timedelta(days=days if days is not None else current_app.config["TOKEN_TTL_DAYS"])


@users_cli.command("create")
@click.option("--name", required=True, help="Login name (unique).")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--unit", "unit_code", required=True, help="Code of the unit the user belongs to.")
@click.option("--display-name", default=None, help="Name shown in the UI (default: the login name).")
@click.option("--ttl-days", type=int, default=None, help="Token lifetime in days.")
def create_command(name: str, role: str, unit_code: str, display_name: str | None, ttl_days: int | None) -> None:
    """Create a user; the new bearer token is printed on the last line."""
    now = utcnow()
    with reported_errors():
        user = create_user(db.session, name=name, role=role, unit_code=unit_code, now=now, display_name=display_name)
        token = issue_token(db.session, user, now=now, ttl=_ttl(ttl_days), label="cli")
        db.session.commit()
    click.echo(f"created user {user.name} ({user.role} @ {user.unit.code})")
    click.echo(token)


@users_cli.command("token")
@click.argument("name")
@click.option("--ttl-days", type=int, default=None, help="Token lifetime in days.")
def token_command(name: str, ttl_days: int | None) -> None:
    """Mint a new token for an existing user; printed on the last line."""
    now = utcnow()
    with reported_errors():
        token = issue_token(db.session, get_user(db.session, name), now=now, ttl=_ttl(ttl_days), label="cli")
        db.session.commit()
    click.echo(token)


@users_cli.command("revoke")
@click.argument("token")
def revoke_command(token: str) -> None:
    """Revoke a token."""
    if not revoke_token(db.session, token, utcnow()):
        raise click.ClickException("unknown or already revoked token")
    db.session.commit()
    click.echo("revoked")


def _policy() -> LoginPolicy:
    return LoginPolicy.from_config(current_app.config)


@users_cli.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
def set_password_command(name: str, password_stdin: bool) -> None:
    """Set a user's login password (asked twice unless --password-stdin); unlocks and ends their sessions."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    now = utcnow()
    with reported_errors():
        user = get_user(db.session, name)
        set_password(db.session, user, password, now=now, policy=_policy())
        db.session.commit()
    click.echo(f"password set for {user.name}")


@users_cli.command("unlock")
@click.argument("name")
def unlock_command(name: str) -> None:
    """Clear a user's failed-login count and lock."""
    with reported_errors():
        user = get_user(db.session, name)
    unlock(db.session, user)
    db.session.commit()
    click.echo(f"unlocked {user.name}")


@users_cli.command("reset-totp")
@click.argument("name")
def reset_totp_command(name: str) -> None:
    """Forget a user's TOTP secret (lost phone) and end their sessions; they enrol again at the next login."""
    with reported_errors():
        user = get_user(db.session, name)
    reset_totp(db.session, user, now=utcnow())
    db.session.commit()
    click.echo(f"TOTP reset for {user.name}: they enrol again at their next login")
