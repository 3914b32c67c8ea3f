"""`flask sla sweep`: the escalation sweeper by hand (the scheduler runs it every SWEEP_INTERVAL_SECONDS)."""
from __future__ import annotations

import json
import time

import click
from flask import current_app
from flask.cli import AppGroup

from ..infra.cli import cli_instant
from ..infra.db import db
from ..infra.timeutil import utcnow
from .sweeper import sweep

sla_cli = AppGroup("sla", help="SLA clocks and the escalation sweeper.")


@sla_cli.command("sweep")
@click.option("--once", is_flag=True, help="One pass, then exit (default: a pass every --interval seconds).")
@click.option("--now", "now_text", default=None, help="Sweep as of this ISO 8601 instant (default: now).")
@click.option("--batch-size", type=int, default=500, show_default=True)
@click.option("--interval", type=float, default=30.0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Batches at once on PostgreSQL (default: SWEEP_WORKERS; SQLite: always 1).")
def sweep_command(once: bool, now_text: str | None, batch_size: int, interval: float, workers: int | None) -> None:
    """Warn, breach and escalate every clock that is due; prints a JSON summary per pass."""
    sla = current_app.extensions["sla"]
    workers = workers or current_app.config["SWEEP_WORKERS"]
    while True:
        started = time.perf_counter()
        result = sweep(db.session, sla, cli_instant(now_text), batch_size=batch_size, wall_clock=utcnow, workers=workers)
        summary = result.summary() | {"seconds": round(time.perf_counter() - started, 3)}
        click.echo(json.dumps(summary, ensure_ascii=False))
        if once or now_text is not None:
            return
        time.sleep(max(0.0, interval - (time.perf_counter() - started)))
