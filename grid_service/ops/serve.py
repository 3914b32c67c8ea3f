"""`flask serve`: the web server (gunicorn) and the one scheduler process, side by side.

This is what `make run` starts. Stopping it (Ctrl-C, SIGTERM) stops both; if either dies, the
other is stopped too, so the service never runs half-alive.

gunicorn's own limits on the request head are set above the service's (MAX_URL_BYTES,
MAX_HEADER_BYTES, MAX_HEADER_COUNT), so that the app refuses an oversized request with its JSON
error payload; and what gunicorn still refuses by itself (a request line or headers beyond even its
limits, a malformed request) is answered with the same payload by its worker, JsonErrorWorker.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

import click
from flask import current_app
from gunicorn import util as gunicorn_util
from gunicorn.config import KNOWN_SETTINGS
from gunicorn.workers.sync import SyncWorker

# gunicorn's request line cannot be limited above this (0 lifts its limit).
GUNICORN_MAX_REQUEST_LINE = 8190
GUNICORN_MAX_HEADER_FIELDS = 32768
# What the request line holds besides the URL: the method, two spaces, "HTTP/1.1".
REQUEST_LINE_OVERHEAD = 64


def gunicorn_limits(config: Mapping[str, Any]) -> dict[str, int]:
    """gunicorn's limit_request_* settings: twice the service's own limits (as far as gunicorn goes)."""
    url, header, count = int(config["MAX_URL_BYTES"]), int(config["MAX_HEADER_BYTES"]), int(config["MAX_HEADER_COUNT"])
    line = max(url + REQUEST_LINE_OVERHEAD, 2 * url)
    return {
        "limit_request_line": 0 if url + REQUEST_LINE_OVERHEAD > GUNICORN_MAX_REQUEST_LINE else min(line, GUNICORN_MAX_REQUEST_LINE),
        "limit_request_field_size": 2 * header + 4,  # gunicorn counts the ": " and the line's CRLF
        "limit_request_fields": min(2 * count, GUNICORN_MAX_HEADER_FIELDS),
    }


# The service's error codes and messages (web/kit/errors.py) for what gunicorn answers by itself.
_GUNICORN_ERRORS = {
    400: ("bad_request", "请求格式有误"),
    403: ("forbidden", "没有访问权限"),
    414: ("uri_too_long", "请求地址过长"),
    417: ("expectation_failed", "无法满足 Expect 请求头"),
    431: ("request_header_fields_too_large", "请求头过大"),
    501: ("not_implemented", "不支持的传输编码（Transfer-Encoding）"),
}


def write_json_error(sock, status: int, reason: str, _detail: str) -> None:
    """gunicorn.util.write_error's job, with the service's JSON error payload instead of an HTML page."""
    code, message = _GUNICORN_ERRORS.get(status) or (("internal_error", "服务器内部错误，已记录，请稍后再试")
                                                      if status >= 500 else ("bad_request", "请求无法处理"))
    body = json.dumps({"code": code, "message": message, "errors": {}, "status": status}, ensure_ascii=False).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


class JsonErrorWorker(SyncWorker):
    """gunicorn's sync worker, answering the requests it refuses itself with the JSON error payload."""

    def handle_error(self, req, client, addr, exc):
        # The base class writes its page through gunicorn.util.write_error; one thread per sync worker.
        original, gunicorn_util.write_error = gunicorn_util.write_error, write_json_error
        try:
            super().handle_error(req, client, addr, exc)
        finally:
            gunicorn_util.write_error = original


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
    # gunicorn's own log lines (access, errors) in the service's zone, like the app's.
    env.setdefault("TZ", str(current_app.config.get("GRID_TIMEZONE") or "Asia/Shanghai"))
    flags = {setting.name: setting.cli[-1] for setting in KNOWN_SETTINGS if setting.cli}  # --limit-request-field_size
    limits = [f"{flags[name]}={value}" for name, value in gunicorn_limits(current_app.config).items()]
    commands = [[sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"{host}:{port}",
                 "--worker-class", f"{__name__}.{JsonErrorWorker.__name__}", *limits,
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
