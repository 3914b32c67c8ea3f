"""`flask serve`: the web server (gunicorn) and the one scheduler process, side by side.

This is what `make run` starts. Stopping it (Ctrl-C, SIGTERM) stops both; if either dies, the
other is stopped too, so the service never runs half-alive.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click
from flask import current_app


def _terminate(processes: list[subprocess.Popen]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 10
    for proc in processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


@click.command("serve")
@click.option("--host", default=lambda: os.environ.get("HOST", "127.0.0.1"), show_default="127.0.0.1 or $HOST")
@click.option("--port", type=int, default=lambda: int(os.environ.get("PORT", "5000")), show_default="5000 or $PORT")
@click.option("--workers", type=int, default=lambda: int(os.environ.get("WEB_CONCURRENCY", "2")), show_default="2 or $WEB_CONCURRENCY")
@click.option("--scheduler/--no-scheduler", default=True, help="Also run the scheduler process (default: yes).")
def serve_command(host: str, port: int, workers: int, scheduler: bool) -> None:
    """Serve the API with gunicorn and run the scheduler beside it."""
    env = dict(os.environ)
    commands = [[sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"{host}:{port}",
                 "--access-logfile", "-", "wsgi:app"]]
    if scheduler and "scheduler" in current_app.cli.commands:
        commands.append([sys.executable, "-m", "flask", "--app", "wsgi", "scheduler", "run"])
    processes = [subprocess.Popen(command, env=env) for command in commands]
    click.echo(f"Grid Service on http://{host}:{port}  (docs: /docs; {len(processes) - 1} scheduler process)")

    def _stop(signum, _frame):
        _terminate(processes)
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    try:
        while all(proc.poll() is None for proc in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        _terminate(processes)
    codes = [proc.returncode for proc in processes]
    sys.exit(max((c for c in codes if c), default=0))
