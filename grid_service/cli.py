"""`flask --app wsgi …` command groups."""
from __future__ import annotations

from flask import Flask


def register_cli(app: Flask) -> None:
    from .auth.cli import users_cli
    from .auth.clients_cli import clients_cli
    from .demo.cli import demo_cli
    from .escalation.cli import sla_cli
    from .events.audit import audit_cli
    from .hotline.cli import hotline_cli
    from .ops.scheduler import scheduler_cli
    from .ops.serve import serve_command
    from .outbox.cli import deliveries_cli
    from .privacy.pii import phones_cli
    from .sla.cli import calendar_cli
    from .territory.cli import territory_cli

    for group in (users_cli, territory_cli, demo_cli, sla_cli, calendar_cli, scheduler_cli, serve_command,
                  clients_cli, hotline_cli, deliveries_cli, audit_cli, phones_cli):
        app.cli.add_command(group)
