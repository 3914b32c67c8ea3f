"""The tamper-evident audit trail: every event's history rows form a keyed hash chain.

Each row carries `seq` (the event's version after the change it records), `prev_hash` (the
previous row's `row_hash`, or GENESIS for the first) and `row_hash` = HMAC-SHA256 over
prev_hash and a canonical encoding of the row's content. The key never lives in the database
(AUDIT_KEY, else derived from SECRET_KEY), so someone who can write the tables but not read the
service's configuration can change, delete or insert rows but cannot make the chain add up again:

- a changed row no longer matches its hash;
- a deleted or inserted row breaks the link of the row after it;
- rows cut from the end leave the trail shorter than the event's version.

The chain is per event, so events never wait for each other; within one event the version check
that already serialises changes (and UNIQUE(event_id, seq)) keeps the chain a line.
"""
from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask.cli import AppGroup
from sqlalchemy.orm import Session

from ..infra.db import db
from ..infra.prepared import PreparedInsert
from .models import Event, EventHistory

GENESIS = "0" * 64

# The content a row's hash covers, in this order (the id is the database's, not the content's).
CONTENT = ("event_id", "seq", "at", "actor_id", "actor_role", "actor_unit_id", "action", "from_state", "to_state",
           "from_level", "to_level", "from_owner_id", "to_owner_id", "note", "details")


@functools.lru_cache(maxsize=16)
def _derive(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"grid-service",
                info=b"grid-service/audit-chain/v1").derive(secret.encode())


def keys_from_config(config: Mapping[str, Any]) -> list[bytes]:
    """The chain keys, newest first: AUDIT_KEY when set, else derived from SECRET_KEY (and its fallbacks).

    Rows are sealed with the first; `verify` accepts any, so SECRET_KEY can be rotated.
    """
    explicit = config.get("AUDIT_KEY")
    if explicit:
        return [_derive("audit:" + str(explicit))] + [_derive("audit:" + str(k)) for k in config.get("AUDIT_KEY_FALLBACKS") or []]
    secrets = [str(config["SECRET_KEY"]), *(str(k) for k in config.get("SECRET_KEY_FALLBACKS") or [])]
    return [_derive(secret) for secret in secrets]


def current_keys() -> list[bytes]:
    """This app's chain keys (computed once per app)."""
    from flask import current_app

    keys = current_app.extensions.get("audit_keys")
    if keys is None:
        keys = current_app.extensions["audit_keys"] = keys_from_config(current_app.config)
    return keys


def current_key() -> bytes:
    """The key new rows are sealed with."""
    return current_keys()[0]


@functools.lru_cache(maxsize=4096)  # a sweep seals thousands of rows at one instant
def _instant(value: datetime | str) -> str:
    if isinstance(value, str):  # SQLite's stored text, naive UTC
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(row: Mapping[str, Any]) -> bytes:
    """The bytes a row's hash covers: its content as one JSON array (details with sorted keys)."""
    values = [_instant(row["at"]) if name == "at" else row[name] for name in CONTENT]
    details = values[-1]
    if isinstance(details, str):  # a JSON column read raw
        values[-1] = json.loads(details)
    elif details is None:
        values[-1] = {}
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def row_hash(key: bytes, prev_hash: str, row: Mapping[str, Any]) -> str:
    return hmac.digest(key, prev_hash.encode() + b"\n" + canonical(row), "sha256").hex()


def seal(key: bytes, row: dict[str, Any], prev_hash: str) -> dict[str, Any]:
    """`row` (with its `seq`) plus its `prev_hash` and `row_hash`, ready to insert."""
    row["prev_hash"] = prev_hash
    row["row_hash"] = row_hash(key, prev_hash, row)
    return row


def seal_trail(key: bytes, rows: Iterable[dict[str, Any]], *, first_seq: int = 1,
               prev_hash: str = GENESIS) -> list[dict[str, Any]]:
    """Seal the consecutive rows of one event (e.g. a new event's whole trail), numbering them from first_seq."""
    sealed = []
    for seq, row in enumerate(rows, start=first_seq):
        row["seq"] = seq
        prev_hash = seal(key, row, prev_hash)["row_hash"]
        sealed.append(row)
    return sealed


def heads(session: Session, event_ids: Iterable[int]) -> dict[int, tuple[int, str]]:
    """{event id: (seq, row_hash)} of the last row of each event's trail (one query)."""
    H = EventHistory
    ids = list(set(event_ids))
    if not ids:
        return {}
    last = (sa.select(H.event_id, sa.func.max(H.seq).label("seq")).where(H.event_id.in_(ids))
            .group_by(H.event_id).subquery())
    rows = session.execute(sa.select(H.event_id, H.seq, H.row_hash)
                           .join(last, sa.and_(H.event_id == last.c.event_id, H.seq == last.c.seq)))
    return {event_id: (seq, digest) for event_id, seq, digest in rows}


# ---------------------------------------------------------------- appending

INSERT_HISTORY = PreparedInsert(EventHistory.__table__)
_CHAIN_HEAD = (sa.select(EventHistory.row_hash).where(EventHistory.event_id == sa.bindparam("event_id"))
               .order_by(EventHistory.seq.desc()).limit(1))


def history_values(*, event_id: int, actor: Any | None, action: str, now: datetime, from_state: str | None,
                   to_state: str, from_level: str | None, to_level: str, from_owner_id: int | None, to_owner_id: int,
                   note: str = "", details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Column values of one audit row; `actor=None` means the system (the sweeper)."""
    return {
        "event_id": event_id, "at": now, "actor_id": actor.id if actor else None,
        "actor_role": actor.role if actor else "system", "actor_unit_id": actor.unit_id if actor else None,
        "action": action, "from_state": from_state, "to_state": to_state, "from_level": from_level,
        "to_level": to_level, "from_owner_id": from_owner_id, "to_owner_id": to_owner_id,
        "note": note, "details": details or {},
    }


def append_link(session: Session, event: Event, row: dict[str, Any]) -> None:
    """Insert `row` as the next link of the event's audit chain: seq = the event's version after the change.

    A new event's first row (version 1) starts the chain; any other reads the head of the chain it
    extends. The change itself is flushed first, so its version check has already passed: two writers
    cannot extend the same chain (and UNIQUE(event_id, seq) says so in the database too).
    """
    session.flush()
    row["seq"] = event.version
    prev_hash = GENESIS
    if event.version > 1:
        prev_hash = session.execute(_CHAIN_HEAD, {"event_id": event.id}).scalar() or GENESIS
    INSERT_HISTORY.execute(session.connection(), [seal(current_key(), row, prev_hash)])


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class Problem:
    event_id: int
    row_id: int | None
    seq: int | None
    reason: str

    def __str__(self) -> str:
        where = f"event {self.event_id}" + (f" row {self.row_id} (seq {self.seq})" if self.row_id is not None else "")
        return f"{where}: {self.reason}"


@dataclass
class Report:
    events: int = 0
    rows: int = 0
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "rows": self.rows,
                "first_bad": None if self.problem is None else {
                    "event_id": self.problem.event_id, "row_id": self.problem.row_id, "seq": self.problem.seq,
                    "reason": self.problem.reason}}


def _check_event(keys: list[bytes], event_id: int, version: int | None, rows: list[Mapping[str, Any]]) -> Problem | None:
    if version is None:
        return Problem(event_id, rows[0]["id"], rows[0]["seq"], "audit rows for an event that does not exist")
    if not rows:
        return Problem(event_id, None, None, "the event has no audit trail")
    prev_hash, prev_seq, prev_id = GENESIS, 0, 0
    for row in rows:
        where = (event_id, row["id"], row["seq"])
        if row["prev_hash"] != prev_hash:
            reason = ("the first row does not start the chain: rows before it were deleted" if prev_seq == 0 else
                      f"does not link to seq {prev_seq}: a row between them was deleted or inserted")
            return Problem(*where, reason)
        if row["id"] <= prev_id:
            return Problem(*where, "inserted out of order (its id is older than the row before it)")
        if not any(hmac.compare_digest(row_hash(key, prev_hash, row), row["row_hash"] or "") for key in keys):
            return Problem(*where, "its content does not match its hash: the row was changed")
        prev_hash, prev_seq, prev_id = row["row_hash"], row["seq"], row["id"]
    if prev_seq != version:
        return Problem(event_id, rows[-1]["id"], prev_seq,
                       f"the trail ends at seq {prev_seq} but the event is at version {version}: "
                       f"{'rows were cut from the end' if prev_seq < version else 'the event version was rolled back'}")
    return None


def _trail_rows(session: Session, event_id: int | None, batch: int) -> Iterator[Mapping[str, Any]]:
    H = EventHistory
    columns = [H.id, *(getattr(H, name) for name in CONTENT if name not in ("at", "details")),
               sa.type_coerce(H.at, sa.String()).label("at"), sa.type_coerce(H.details, sa.String()).label("details"),
               H.prev_hash, H.row_hash]
    query = sa.select(*columns).order_by(H.event_id, H.seq)
    if event_id is not None:
        query = query.where(H.event_id == event_id)
    # Keyset pages: a long trail never sits in memory at once.
    after: tuple[int, int] = (-1, -1)
    while True:
        page = session.execute(query.where(sa.tuple_(H.event_id, H.seq) > after).limit(batch)).mappings().all()
        yield from page
        if len(page) < batch:
            return
        after = (page[-1]["event_id"], page[-1]["seq"])


def verify(session: Session, keys: list[bytes], *, event_id: int | None = None, batch: int = 5000) -> Report:
    """Walk the trail (one event's, or all) and stop at the first row that does not add up."""
    report = Report()
    versions_query = sa.select(Event.id, Event.version).order_by(Event.id)
    if event_id is not None:
        versions_query = versions_query.where(Event.id == event_id)
    versions = iter(session.execute(versions_query).tuples())
    pending = next(versions, None)

    def events_without_trail(before: int | None) -> Problem | None:
        if pending is not None and (before is None or pending[0] < before):
            return Problem(pending[0], None, None, "the event has no audit trail")
        return None

    current: list[Mapping[str, Any]] = []

    def finish() -> Problem | None:
        nonlocal pending
        eid = current[0]["event_id"]
        missing = events_without_trail(eid)
        if missing:
            return missing
        version = pending[1] if pending is not None and pending[0] == eid else None
        if version is not None:
            pending = next(versions, None)
        report.events += 1
        report.rows += len(current)
        return _check_event(keys, eid, version, current)

    for row in _trail_rows(session, event_id, batch):
        if current and row["event_id"] != current[0]["event_id"]:
            report.problem = finish()
            if report.problem:
                return report
            current = []
        current.append(row)
    if current:
        report.problem = finish()
        if report.problem:
            return report
    report.problem = events_without_trail(None)
    return report


# ---------------------------------------------------------------- CLI

audit_cli = AppGroup("audit", help="The tamper-evident audit trail.")


@audit_cli.command("verify")
@click.option("--event", "event_id", type=click.IntRange(min=1), help="Only this event's trail.")
def verify_command(event_id: int | None) -> None:
    """Recompute every event's hash chain; exit 0 when intact, 1 naming the first bad row.

    The last line is a JSON summary: {"ok", "events", "rows", "first_bad"}.
    """
    report = verify(db.session, current_keys(), event_id=event_id)
    if report.problem is not None:
        click.echo(f"audit trail broken: {report.problem}", err=True)
    click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
    if not report.ok:
        raise SystemExit(1)
