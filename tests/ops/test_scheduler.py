"""The scheduler: fixed interval jobs that never drop or overlap, a heartbeat, a real process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import sqlalchemy as sa

from grid_service.infra.db import db
from grid_service.infra.state import ServiceState
from grid_service.ops.jobs import HEARTBEAT_KEY, scheduler_status
from grid_service.ops.scheduler import JOBS, _tick, build_scheduler
from tests.helpers import ROOT, T0


def test_jobs_coalesce_never_overlap_and_never_drop_late_runs(app):
    app.config["SWEEP_INTERVAL_SECONDS"] = 12
    scheduler = build_scheduler(app)
    assert scheduler._job_defaults == {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
    pending = {job.id: job for job, *_ in scheduler._pending_jobs}
    assert set(pending) == {job.id for job in JOBS}
    assert pending["sla-sweep"].trigger.interval == timedelta(seconds=12)


def test_a_tick_sweeps_and_writes_a_heartbeat(app, ctx):
    assert scheduler_status(db.session, T0, 30)["status"] == "never_seen"
    sweep_job = next(job for job in JOBS if job.id == "sla-sweep")
    _tick(app, sweep_job)
    with app.app_context():
        row = db.session.get(ServiceState, HEARTBEAT_KEY)
        assert row is not None and '"job": "sla-sweep"' in row.value
        assert scheduler_status(db.session, row.updated_at + timedelta(seconds=10), 30)["status"] == "ok"
        assert scheduler_status(db.session, row.updated_at + timedelta(seconds=600), 30)["status"] == "stale"


def test_scheduler_process_runs_and_stops_cleanly_on_a_repeated_sigterm(app, database_url, backend):
    with app.app_context():
        db.session.execute(sa.delete(ServiceState).where(ServiceState.key == HEARTBEAT_KEY))
        db.session.commit()
    env = dict(os.environ, DATABASE_URL=database_url, SWEEP_INTERVAL_SECONDS="1", LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "scheduler", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        beat = None
        while beat is None and time.monotonic() < deadline and proc.poll() is None:
            with app.app_context():
                beat = db.session.get(ServiceState, HEARTBEAT_KEY)
                db.session.remove()
        assert beat is not None, proc.stdout.read() if proc.poll() is not None else "no heartbeat within 60 s"
        # `flask serve` can forward one SIGTERM twice: the second must not crash the stopping scheduler.
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        output = proc.stdout.read()
        assert "Traceback" not in output and "SchedulerNotRunningError" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_writers_creating_the_heartbeat_at_once_both_succeed(app, backend):
    """The sweep and the outbox jobs start together (and a second scheduler may run by mistake): the
    first heartbeat row is created by one of them while the other writes it too. Neither may fail."""
    import threading

    from grid_service.ops.jobs import write_heartbeat

    with app.app_context():
        db.session.execute(sa.delete(ServiceState).where(ServiceState.key == HEARTBEAT_KEY))
        db.session.commit()
    errors: list[BaseException] = []
    with app.app_context():
        writer_a = sa.orm.Session(db.engine)
        from grid_service.infra.state import put_state

        put_state(writer_a, HEARTBEAT_KEY, '{"job": "a"}', T0)  # inserted, not yet committed

        def writer_b():
            with app.app_context():
                try:
                    write_heartbeat(db.session, T0 + timedelta(seconds=1), {"job": "b"})
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
                finally:
                    db.session.remove()

        thread = threading.Thread(target=writer_b)
        thread.start()
        thread.join(timeout=0.5 if backend == "postgresql" else 0)  # on PostgreSQL B now waits on A's row
        writer_a.commit()
        writer_a.close()
        thread.join(timeout=30)
        assert not thread.is_alive() and errors == []
        row = db.session.get(ServiceState, HEARTBEAT_KEY, populate_existing=True)
        assert '"job": "b"' in row.value  # the later writer's value stands
