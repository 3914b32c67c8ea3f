"""`flask --app wsgi …` command groups."""
from __future__ import annotations

from flask import Flask


def register_cli(app: Flask) -> None:
    from .auth.cli import users_cli
    from .demo.cli import demo_cli
    from .territory.cli import territory_cli

    from .scheduler import scheduler_cli
    from .serve import serve_command
    from .sla.cli import calendar_cli, sla_cli

    for group in (users_cli, territory_cli, demo_cli, sla_cli, calendar_cli, scheduler_cli, serve_command):
        app.cli.add_command(group)
    from .auth.clients_cli import clients_cli
    from .hotline.cli import hotline_cli
    from .notify.cli import deliveries_cli

    from .audit import audit_cli
    from .pii import phones_cli

    for group in (clients_cli, hotline_cli, deliveries_cli, audit_cli, phones_cli):
        app.cli.add_command(group)
