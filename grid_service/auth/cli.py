"""`flask users …`: create and list users, set passwords, unlock, reset TOTP, and mint or revoke API tokens."""
from __future__ import annotations

import sys
import unicodedata
from collections.abc import Sequence
from datetime import timedelta

import click
from flask import current_app
from flask.cli import AppGroup

from ..infra.cli import reported_errors
from ..infra.db import db
from ..infra.timeutil import utcnow
from .login import LoginPolicy, reset_totp, set_password, unlock
from .models import ROLES, User
from .service import create_user, get_user, issue_token, list_users, revoke_token

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


@users_cli.command("list")
@click.option("--role", type=click.Choice(ROLES), default=None, help="Only users of this role.")
@click.option("--unit", "unit_code", default=None, help="Only users of this unit and the units below it.")
def list_command(role: str | None, unit_code: str | None) -> None:
    """Every user: name, display name, role, unit, and whether they are active, have a password and TOTP.

    Never tokens or phone numbers: mint a token with `users token NAME`.
    """
    with reported_errors():
        users = list_users(db.session, role=role, unit_code=unit_code)
    header = ("name", "display name", "role", "unit", "active", "password", "totp")
    rows = [(u.name, u.display_name, u.role, f"{u.unit.code} {u.unit.name}", _yes(u.is_active),
             _yes(u.password_hash is not None), _totp(u)) for u in users]
    print_table(header, rows)
    click.echo(f"{len(rows)} users", err=True)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _totp(user: User) -> str:
    if user.totp_confirmed_at is not None:
        return "yes"
    return "pending" if user.totp_secret is not None else "no"


def _width(text: str) -> int:
    """Columns a terminal gives `text`: two for each wide (CJK) character."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Rows under a header, in columns aligned for a terminal (Chinese counts double)."""
    widths = [max(_width(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        click.echo("  ".join(cell + " " * (widths[i] - _width(cell)) for i, cell in enumerate(row)).rstrip())


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
