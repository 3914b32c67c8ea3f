"""Citizens' phone numbers in the service: sealed at intake, revealed or searched only on the record.

Every reveal and every search by number — granted or refused — appends a row to `pii_access_log`
(append-only in the database, like the audit trail). The event's own audit chain is not touched:
reading a number changes nothing about the event.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from ..auth.models import User
from ..events.models import Event
from ..events.queries import EventFilter, filtered_events
from ..events.scope import visible_events
from ..infra.append_only import make_append_only
from ..infra.db import MAX_ID, check_in, db
from ..infra.errors import Conflict, Forbidden, Invalid, NotFound
from ..infra.timeutil import UTCDateTime, utcnow
from ..territory.models import Unit, subtree_unit_ids
from . import phones

logger = logging.getLogger(__name__)

ACCESS_ACTIONS: tuple[str, ...] = ("reveal", "search")
OUTCOMES: tuple[str, ...] = ("granted", "forbidden", "not_found")
# Who may see a number in full, for an event in their scope (a handler's scope: what is dispatched to them).
REVEAL_ROLES: tuple[str, ...] = ("supervisor", "admin", "handler")


class PiiAccess(db.Model):
    """One look at a citizen's number (a reveal, a search by number), granted or refused; never changed."""

    __tablename__ = "pii_access_log"
    __table_args__ = (
        sa.CheckConstraint(check_in("action", ACCESS_ACTIONS), name="action"),
        sa.CheckConstraint(check_in("outcome", OUTCOMES), name="outcome"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    actor_role: Mapped[str] = mapped_column(sa.String(16))
    actor_unit_id: Mapped[int | None] = mapped_column(sa.ForeignKey("units.id"))
    action: Mapped[str] = mapped_column(sa.String(8))
    # The event asked for, as asked (no foreign key: a refused request may name one that does not exist).
    event_id: Mapped[int | None] = mapped_column(index=True)
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    outcome: Mapped[str] = mapped_column(sa.String(16))
    # The number searched for (or revealed), masked.
    phone_masked: Mapped[str | None] = mapped_column(sa.String(32))
    # Events a search returned.
    matches: Mapped[int | None] = mapped_column()

    actor: Mapped[User] = relationship(lazy="joined")
    actor_unit: Mapped[Unit | None] = relationship(lazy="joined", viewonly=True)


APPEND_ONLY_SQL = make_append_only(PiiAccess.__table__)


# ---------------------------------------------------------------- keys and intake


def keys_from_config(config: Any) -> list[str]:
    """SECRET_KEY then its fallbacks: new values are sealed and indexed under the first."""
    return [str(config["SECRET_KEY"]), *(str(k) for k in config.get("SECRET_KEY_FALLBACKS") or [])]


def current_keys() -> list[str]:
    return keys_from_config(current_app.config)


def phone_columns(raw: str | None, *, field: str = "resident_phone") -> dict[str, str | None]:
    """The event columns for a number as received (sealed, indexed, masked); 422 naming `field` if malformed."""
    try:
        return phones.columns(raw, str(current_app.config["SECRET_KEY"]))
    except ValueError as exc:
        raise Invalid("电话号码格式不正确", {field: [str(exc)]}) from None


def _digits(raw: str, field: str) -> str:
    try:
        return phones.normalize(raw)
    except ValueError as exc:
        raise Invalid("电话号码格式不正确", {field: [str(exc)]}) from None


# ---------------------------------------------------------------- reveal and search


def _record(session: Session, user: User, *, action: str, outcome: str, now: datetime, event_id: int | None = None,
            reason: str = "", phone_masked: str | None = None, matches: int | None = None) -> None:
    session.execute(sa.insert(PiiAccess.__table__).values(
        at=now, actor_id=user.id, actor_role=user.role, actor_unit_id=user.unit_id, action=action,
        event_id=event_id if event_id is not None and 0 < event_id <= MAX_ID else None, reason=reason,
        outcome=outcome, phone_masked=phone_masked, matches=matches))


def reveal_phone(session: Session, user: User, event_id: int, *, reason: str, now: datetime,
                 keys: Sequence[str]) -> str | None:
    """The event's number in full for a role that needs it (None if the event has none); recorded either way.

    Out of the user's scope is 404, a role that may not see numbers 403: each refusal is recorded
    too, and the caller must commit before answering with the error.
    """
    event = None
    if 0 < event_id <= MAX_ID:
        event = session.scalar(sa.select(Event).where(Event.id == event_id, visible_events(user)))
    if event is None:
        _record(session, user, action="reveal", outcome="not_found", event_id=event_id, reason=reason, now=now)
        logger.warning("user %s asked for the phone number of event %s outside their scope", user.id, event_id)
        raise NotFound(f"未找到事件 {event_id}")
    if user.role not in REVEAL_ROLES:
        _record(session, user, action="reveal", outcome="forbidden", event_id=event.id, reason=reason, now=now,
                phone_masked=event.resident_phone_masked)
        logger.warning("user %s (%s) may not see the phone number of event %s", user.id, user.role, event.id)
        raise Forbidden("您的角色无权查看完整电话号码（your role may not see full phone numbers）",
                        {"role": [f"仅限以下角色：{', '.join(REVEAL_ROLES)}"]})
    phone = None
    if event.resident_phone_enc is not None:
        try:
            phone = phones.unseal(keys, event.resident_phone_enc)
        except ValueError:
            logger.error("phone number of event %s cannot be decrypted (SECRET_KEY changed without a fallback?)", event.id)
            raise Conflict("电话号码无法解密，请联系管理员（the stored number cannot be decrypted）") from None
    _record(session, user, action="reveal", outcome="granted", event_id=event.id, reason=reason, now=now,
            phone_masked=event.resident_phone_masked)
    logger.info("phone number of event %s revealed to user %s (%s)", event.id, user.id, user.role)
    return phone


def events_by_phone(session: Session, user: User, raw_phone: str, *, zone: ZoneInfo, now: datetime, keys: Sequence[str],
                    limit: int, offset: int, reason: str = "") -> tuple[list[Event], int]:
    """The events in the user's scope that this number reported (one page, newest first), and their count.

    Matched by blind index under every key, so rows indexed before a SECRET_KEY rotation are found.
    """
    digits = _digits(raw_phone, "phone")
    query = (filtered_events(session, user, EventFilter(), zone)
             .where(Event.resident_phone_index.in_(phones.blind_indexes(keys, digits))))
    total = int(session.scalar(sa.select(sa.func.count()).select_from(query.with_only_columns(Event.id).subquery())) or 0)
    rows = session.scalars(query.order_by(Event.received_at.desc(), Event.id.desc()).limit(limit).offset(offset))
    _record(session, user, action="search", outcome="granted", reason=reason, now=now, phone_masked=phones.mask(digits),
            matches=total)
    return list(rows.unique()), total


def access_log_page(session: Session, user: User, *, limit: int, offset: int, event_id: int | None = None,
                    action: str | None = None) -> tuple[list[PiiAccess], int]:
    """Log rows an admin may read, newest first: by people of their subtree, or about their events."""
    units = subtree_unit_ids(user.unit.path)
    query = sa.select(PiiAccess).where(sa.or_(
        PiiAccess.actor_unit_id.in_(units),
        PiiAccess.event_id.in_(sa.select(Event.id).where(visible_events(user))),
    ))
    if event_id is not None:
        query = query.where(PiiAccess.event_id == event_id)
    if action is not None:
        query = query.where(PiiAccess.action == action)
    total = int(session.scalar(sa.select(sa.func.count()).select_from(query.with_only_columns(PiiAccess.id).subquery())) or 0)
    rows = session.scalars(query.order_by(PiiAccess.id.desc()).limit(limit).offset(offset))
    return list(rows.unique()), total


# ---------------------------------------------------------------- key rotation


def reindex(session: Session, keys: Sequence[str], *, batch: int = 1000) -> tuple[int, int]:
    """Re-seal and re-index every stored number under the current key; (rows moved, rows unreadable).

    A Core UPDATE: the events' versions (and so their audit chains) are left alone. Commits per batch.
    """
    events_t = Event.__table__
    current = keys[0]
    update = (sa.update(events_t).where(events_t.c.id == sa.bindparam("row_id"))
              .values(resident_phone_enc=sa.bindparam("enc"), resident_phone_index=sa.bindparam("idx")))
    moved, unreadable = 0, []
    last_id = 0
    while True:
        rows = session.execute(sa.select(events_t.c.id, events_t.c.resident_phone_enc, events_t.c.resident_phone_index)
                               .where(events_t.c.id > last_id, events_t.c.resident_phone_enc.is_not(None))
                               .order_by(events_t.c.id).limit(batch)).all()
        if not rows:
            if unreadable:
                logger.error("%d phone numbers open under no configured key; events %s%s", len(unreadable),
                             ", ".join(map(str, unreadable[:20])), " …" if len(unreadable) > 20 else "")
            return moved, len(unreadable)
        changes = []
        for row_id, token, index in rows:
            try:
                digits = phones.unseal([current], token)
                if index == phones.blind_index(current, digits):
                    continue  # already under the current key
            except ValueError:
                try:
                    digits = phones.unseal(keys, token)
                except ValueError:
                    unreadable.append(row_id)
                    continue
            changes.append({"row_id": row_id, "enc": phones.seal(current, digits), "idx": phones.blind_index(current, digits)})
        if changes:
            session.execute(update, changes)
        session.commit()
        moved += len(changes)
        last_id = rows[-1][0]


phones_cli = AppGroup("phones", help="Citizens' phone numbers (sealed, blind-indexed).")


@phones_cli.command("reindex")
@click.option("--batch", default=1000, show_default=True, type=click.IntRange(min=1))
def reindex_command(batch: int) -> None:
    """After rotating SECRET_KEY (old key in SECRET_KEY_FALLBACKS): move every number onto the new key."""
    started = utcnow()
    moved, unreadable = reindex(db.session, current_keys(), batch=batch)
    click.echo(f"re-sealed {moved} phone numbers in {(utcnow() - started).total_seconds():.1f}s")
    if unreadable:
        raise click.ClickException(f"{unreadable} numbers open under no configured key (see the log)")
