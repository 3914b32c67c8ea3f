"""What the scheduler leaves for others to read: its heartbeat and each job's latest run, in
`service_state` rows that /healthz reports."""
from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..infra.state import ServiceState, put_state

HEARTBEAT_KEY = "scheduler_heartbeat"
JOB_KEY_PREFIX = "job:"  # + job id: the outcome of its latest run
ERROR_CHARS = 160  # of a failed run's message kept for /healthz


def write_heartbeat(session: Session, now: datetime, detail: dict[str, Any]) -> None:
    value = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), **detail}, ensure_ascii=False)[:256]
    put_state(session, HEARTBEAT_KEY, value, now)
    session.commit()


def record_run(session: Session, job_id: str, now: datetime, *, seconds: float,
               summary: dict[str, Any] | None = None, error: str | None = None) -> None:
    """Keep the outcome of a job's latest run (what /healthz shows); the caller commits."""
    record: dict[str, Any] = {"ok": error is None, "seconds": round(seconds, 3)}
    if error is not None:
        # The row holds 256 characters: a long message is cut.
        record["error"] = error if len(error) <= ERROR_CHARS else error[:ERROR_CHARS - 1] + "…"
    else:  # a summary is a handful of counters
        record["summary"] = {k: v for k, v in (summary or {}).items() if isinstance(v, (int, float, str, type(None)))}
    value = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    while len(value) > 256:  # a message full of characters JSON escapes: cut it further
        record["error"] = record["error"][:-(len(value) - 255)] + "…"
        value = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    put_state(session, JOB_KEY_PREFIX + job_id, value, now)


def scheduler_status(session: Session, now: datetime, interval_seconds: float) -> dict[str, Any]:
    """The last heartbeat, whether it is recent (within three sweep intervals), and each job's last run.

    `status`: ok; failing (a job's latest run failed: the scheduler lives, but e.g. escalations wait);
    stale (no heartbeat for three intervals: the scheduler is down or stuck); never_seen.
    """
    jobs = {}
    for key, value, updated_at in session.execute(sa.select(ServiceState.key, ServiceState.value, ServiceState.updated_at)
                                                  .where(ServiceState.key.startswith(JOB_KEY_PREFIX))):
        try:
            record = json.loads(value)
        except ValueError:
            continue
        jobs[key[len(JOB_KEY_PREFIX):]] = {"last_run": updated_at, "ok": bool(record.get("ok")),
                                           "seconds": record.get("seconds"), "summary": record.get("summary"),
                                           "error": record.get("error")}
    row = session.get(ServiceState, HEARTBEAT_KEY)
    if row is None:
        return {"status": "never_seen", "last_heartbeat": None, "age_seconds": None, "jobs": jobs}
    age = (now - row.updated_at).total_seconds()
    status = "stale" if age > 3 * interval_seconds + 5 else "failing" if any(not j["ok"] for j in jobs.values()) else "ok"
    return {"status": status, "last_heartbeat": row.updated_at, "age_seconds": round(age, 1), "jobs": jobs}
