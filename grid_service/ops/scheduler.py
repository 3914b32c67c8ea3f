"""`flask scheduler run`: the one process that ticks (DESIGN §5).

APScheduler only ticks: a few fixed interval jobs, declared as data below, never one job per event
and never a scheduler inside a web worker. `coalesce` folds a backlog of missed ticks into one run,
`max_instances=1` never overlaps a job with itself, and `misfire_grace_time=None` never drops a late
run. Each tick writes a heartbeat row that `/healthz` reports. Running two schedulers by mistake is
harmless: every job is safe to run concurrently (see escalation/sweeper.py).
"""
from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask, current_app
from flask.cli import AppGroup

from ..infra.db import db
from ..infra.timeutil import utcnow
from .jobs import record_run, write_heartbeat

logger = logging.getLogger(__name__)

# Fold missed ticks into one run, never overlap a job with itself, never drop a late run.
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}


@dataclass(frozen=True)
class Job:
    id: str
    run: Callable[[Flask, datetime], dict[str, Any]]
    interval_setting: str
    default_seconds: float


def run_sweep(app: Flask, now: datetime) -> dict[str, Any]:
    from ..escalation.sweeper import sweep

    return sweep(db.session, app.extensions["sla"], now, wall_clock=utcnow,
                 workers=app.config["SWEEP_WORKERS"]).summary()


def run_delivery(app: Flask, now: datetime) -> dict[str, Any]:
    from ..outbox.delivery import run_delivery as deliver

    return deliver(app, now)


JOBS: list[Job] = [
    Job("sla-sweep", run_sweep, "SWEEP_INTERVAL_SECONDS", 30.0),
    Job("outbox-delivery", run_delivery, "OUTBOX_INTERVAL_SECONDS", 5.0),
]


def register_job(job: Job) -> None:
    """Add a fixed interval job (e.g. outbox delivery) to the scheduler's list."""
    if all(existing.id != job.id for existing in JOBS):
        JOBS.append(job)


def _tick(app: Flask, job: Job) -> None:
    with app.app_context():
        now = utcnow()
        started = time.perf_counter()
        try:
            summary = job.run(app, now)
            logger.info("job %s: %s", job.id, summary)
            record_run(db.session, job.id, utcnow(), seconds=time.perf_counter() - started, summary=summary)
            write_heartbeat(db.session, utcnow(), {"job": job.id, "at": now.isoformat()})
        except Exception as exc:  # a failing tick is logged and retried next interval, never fatal
            db.session.rollback()
            logger.exception("job %s failed", job.id)
            try:  # say so in /healthz (the database itself may be what failed)
                record_run(db.session, job.id, utcnow(), seconds=time.perf_counter() - started,
                           error=f"{type(exc).__name__}: {exc}".splitlines()[0])
                db.session.commit()
            except Exception:
                db.session.rollback()
                logger.warning("job %s: its failure could not be recorded", job.id)
        finally:
            db.session.remove()


def build_scheduler(app: Flask) -> BlockingScheduler:
    scheduler = BlockingScheduler(
        timezone=app.config["GRID_TIMEZONE"],
        job_defaults=dict(JOB_DEFAULTS),
    )
    for job in JOBS:
        seconds = float(app.config.get(job.interval_setting, job.default_seconds))
        scheduler.add_job(_tick, IntervalTrigger(seconds=seconds), args=(app, job), id=job.id,
                          name=job.id, next_run_time=utcnow())  # clock-edge: first run right away
    return scheduler


scheduler_cli = AppGroup("scheduler", help="The scheduler process (run exactly one; a second is harmless).")


@scheduler_cli.command("run")
def run_command() -> None:
    """Run the fixed interval jobs until stopped (SIGINT/SIGTERM)."""
    app = current_app._get_current_object()
    scheduler = build_scheduler(app)

    def _stop(signum, _frame):
        # `flask serve` may forward one SIGTERM twice, and a second signal can arrive while the first
        # shutdown waits for a running job: only the first one stops the scheduler.
        if not scheduler.running:
            return
        logger.info("scheduler stopping (signal %s)", signum)
        try:
            scheduler.shutdown(wait=True)
        except SchedulerNotRunningError:
            pass

    signal.signal(signal.SIGTERM, _stop)
    jobs = ", ".join(f"{j.id} every {app.config.get(j.interval_setting, j.default_seconds)}s" for j in JOBS)
    click.echo(f"scheduler started: {jobs}")
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
