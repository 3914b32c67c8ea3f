"""`flask deliveries …`: inspect, retry and run the outbound deliveries."""
from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from ..infra.cli import reported_errors
from ..infra.db import db
from ..infra.timeutil import utcnow
from .delivery import deliver_due, list_deliveries, retry_all_dead, retry_delivery
from .models import DELIVERY_STATES

deliveries_cli = AppGroup("deliveries", help="Outbound messages to API clients (the hotline's callback).")


@deliveries_cli.command("list")
@click.option("--state", type=click.Choice(DELIVERY_STATES), default=None, help="Only this state (e.g. dead).")
@click.option("--client", "client_name", default=None, help="Only this client.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
def list_command(state: str | None, client_name: str | None, limit: int) -> None:
    """Newest first: id, state, client, event/seq, kind, attempts, next attempt, last error."""
    items, total = list_deliveries(db.session, state=state, client_name=client_name, limit=limit)
    for m in items:
        click.echo("\t".join(str(v) for v in (
            m.id, m.state, m.client.name, f"event {m.event_id} #{m.seq}", m.kind, f"{m.attempts} attempt(s)",
            m.next_attempt_at.isoformat() if m.next_attempt_at else "-", m.last_error or "-")))
    click.echo(f"{len(items)} of {total}")


@deliveries_cli.command("retry")
@click.argument("delivery_id", type=int, required=False)
@click.option("--all-dead", is_flag=True, help="Retry every dead delivery.")
def retry_command(delivery_id: int | None, all_dead: bool) -> None:
    """Give a dead delivery (or --all-dead) a fresh series of attempts, from the next run."""
    if (delivery_id is None) == (not all_dead):
        raise click.UsageError("give a delivery ID or --all-dead")
    now = utcnow()
    with reported_errors():
        count = retry_all_dead(db.session, now=now) if all_dead else (retry_delivery(db.session, delivery_id, now=now) and 1)
        db.session.commit()
    click.echo(f"{count} deliver{'y' if count == 1 else 'ies'} queued again")


@deliveries_cli.command("send")
def send_command() -> None:
    """Run one delivery pass now (the scheduler does this every few seconds); prints a JSON summary."""
    now = utcnow()
    click.echo(json.dumps(deliver_due(db.session, now, wall_clock=utcnow)))
