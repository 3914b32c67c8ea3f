"""The audit trail is tamper-evident: `flask audit verify` finds any row changed, deleted or
inserted behind the service's back (by editing the database directly) and names the first one."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from grid_service.events import audit
from grid_service.events.models import APPEND_ONLY_SQL, Event, EventHistory
from grid_service.infra.db import db
from grid_service.infra.timeutil import utcnow
from tests.helpers import act, report


@pytest.fixture
def crew(make_actor, categories):
    return {
        "worker": make_actor("grid_worker", "g111"),
        "community": make_actor("supervisor", "c11"),
        "handler": make_actor("handler", "c11"),
    }


def walk(crew) -> int:
    """An event taken through register → dispatch → accept → resolve → rework: six audit rows."""
    eid = report(crew["worker"])["id"]
    for actor, action, body in [
        (crew["community"], "register", {}), (crew["community"], "dispatch", {"handler_id": crew["handler"].user.id}),
        (crew["handler"], "accept", {}), (crew["handler"], "resolve", {"note": "已清运"}),
        (crew["worker"], "rework", {"note": "现场仍有残留"}),
    ]:
        response = act(actor, eid, action, **body)
        assert response.status_code == 200, response.json
    return eid


def verify(runner, *args):
    result = runner.invoke(args=["audit", "verify", *args])
    return result.exit_code, json.loads(result.output.strip().splitlines()[-1]), result.output


def first_bad(runner) -> dict:
    """The row `flask audit verify` names first, after checking that it fails (exit 1, not ok)."""
    code, summary, _ = verify(runner)
    assert code == 1 and summary["ok"] is False
    return summary["first_bad"]


_DROP = {"sqlite": ["DROP TRIGGER event_history_no_update", "DROP TRIGGER event_history_no_delete"],
         "postgresql": ["DROP TRIGGER event_history_append_only ON event_history"]}


@pytest.fixture
def tamper(app):
    """Run statements behind the service's back, as someone with the database's owner rights would: the
    append-only triggers dropped first, then the statements, committed (the triggers are put back
    afterwards: the PostgreSQL schema outlives the test)."""
    def run(*statements) -> None:
        for statement in _DROP[db.engine.dialect.name]:
            db.session.execute(sa.text(statement))
        db.session.commit()
        for statement in statements:
            db.session.execute(statement)
        db.session.commit()

    yield run
    with app.app_context():
        db.session.rollback()
        triggers = {"sqlite": "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'event_history'",
                    "postgresql": "SELECT count(*) FROM pg_trigger WHERE tgname = 'event_history_append_only'"}
        dialect = db.engine.dialect.name
        if not db.session.execute(sa.text(triggers[dialect])).scalar_one():
            for statement in APPEND_ONLY_SQL[dialect]:
                db.session.execute(sa.text(statement))
            db.session.commit()


def rows_of(eid: int) -> list[EventHistory]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(EventHistory).where(EventHistory.event_id == eid).order_by(EventHistory.seq)))


def test_an_untouched_trail_verifies_and_each_row_links_to_the_one_before(runner, crew):
    first, second = walk(crew), walk(crew)
    code, summary, _ = verify(runner)
    assert code == 0
    assert summary == {"ok": True, "events": 2, "rows": 12, "first_bad": None}

    history = crew["community"].get(f"/api/v1/events/{first}/history").json
    assert [row["seq"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert db.session.get(Event, first).version == 6
    rows = rows_of(first)
    assert rows[0].prev_hash == audit.GENESIS
    assert [row.prev_hash for row in rows[1:]] == [row.row_hash for row in rows[:-1]]
    assert [row["row_hash"] for row in history] == [row.row_hash for row in rows]
    assert verify(runner, "--event", str(second))[1]["rows"] == 6


def test_the_sweepers_escalations_are_links_of_the_chain(runner, crew):
    eid = report(crew["worker"])["id"]
    later = (utcnow() + timedelta(days=30)).isoformat()
    swept = runner.invoke(args=["sla", "sweep", "--once", "--now", later])
    assert swept.exit_code == 0, swept.output
    assert json.loads(swept.output.strip().splitlines()[-1])["escalated"] == 1
    rows = rows_of(eid)
    assert [(row.seq, row.action, row.actor_role) for row in rows] == [(1, "report", "grid_worker"),
                                                                        (2, "escalate", "system")]
    assert rows[1].prev_hash == rows[0].row_hash
    assert verify(runner)[0] == 0


@pytest.mark.skip_audit_check
def test_a_changed_row_is_named(runner, crew, tamper):
    walk(crew)
    eid = walk(crew)
    target = rows_of(eid)[3]
    tamper(sa.update(EventHistory.__table__).where(EventHistory.__table__.c.id == target.id).values(note="已按时处置"))
    code, summary, output = verify(runner)
    assert code == 1
    assert summary["ok"] is False
    assert summary["first_bad"] == {"event_id": eid, "row_id": target.id, "seq": 4,
                                    "reason": "its content does not match its hash: the row was changed"}
    assert f"row {target.id}" in output


@pytest.mark.skip_audit_check
def test_a_changed_time_or_actor_is_caught_too(runner, crew, tamper):
    eid = walk(crew)
    target = rows_of(eid)[1]
    tamper(sa.update(EventHistory.__table__).where(EventHistory.__table__.c.id == target.id)
           .values(at=target.at - timedelta(hours=3)))
    assert first_bad(runner)["row_id"] == target.id


@pytest.mark.skip_audit_check
def test_a_deleted_row_breaks_the_link_of_the_next(runner, crew, tamper):
    eid = walk(crew)
    rows = rows_of(eid)
    tamper(sa.delete(EventHistory.__table__).where(EventHistory.__table__.c.id == rows[2].id))
    bad = first_bad(runner)
    assert bad["row_id"] == rows[3].id
    assert "deleted or inserted" in bad["reason"]


@pytest.mark.skip_audit_check
def test_rows_cut_from_the_end_are_caught_by_the_event_version(runner, crew, tamper):
    eid = walk(crew)
    rows = rows_of(eid)
    tamper(sa.delete(EventHistory.__table__).where(EventHistory.__table__.c.id.in_([rows[4].id, rows[5].id])))
    bad = first_bad(runner)
    assert bad["seq"] == 4
    assert "cut from the end" in bad["reason"]


@pytest.mark.skip_audit_check
def test_a_forged_row_inserted_behind_the_service_is_caught(runner, crew, tamper):
    """A row that claims to be the next link, hashed without the service's key, does not verify."""
    eid = walk(crew)
    last = rows_of(eid)[-1]
    forged = {name: getattr(last, name) for name in audit.CONTENT} | {"seq": 7, "action": "close", "note": "已办结"}
    forged |= {"prev_hash": last.row_hash, "row_hash": audit.row_hash(b"a guessed key", last.row_hash, forged)}
    tamper(sa.insert(EventHistory.__table__).values(forged),
           sa.update(Event.__table__).where(Event.__table__.c.id == eid).values(version=7))
    bad = first_bad(runner)
    assert bad["seq"] == 7
    assert "does not match its hash" in bad["reason"]


# Rows sealed under keys the fixture's configuration no longer has: its own check would not vouch for them.
@pytest.mark.skip_audit_check
def test_the_trail_verifies_after_secret_key_rotation_with_the_old_key_as_fallback(app, runner, crew):
    walk(crew)
    old = app.config["SECRET_KEY"]
    app.extensions.pop("audit_keys", None)
    app.config.update(SECRET_KEY="a-new-secret", SECRET_KEY_FALLBACKS=[])
    try:
        assert verify(runner)[0] == 1  # the new key alone cannot vouch for rows sealed with the old one
        app.extensions.pop("audit_keys", None)
        app.config["SECRET_KEY_FALLBACKS"] = [old]
        assert verify(runner)[0] == 0
        eid = walk(crew)  # new rows are sealed with the new key; the old ones still verify
        assert verify(runner, "--event", str(eid))[0] == 0
        assert verify(runner)[0] == 0
    finally:
        app.extensions.pop("audit_keys", None)
        app.config.update(SECRET_KEY=old, SECRET_KEY_FALLBACKS=[])


@pytest.mark.skip_audit_check
def test_a_separate_audit_key_seals_the_chain_when_configured(app, crew):
    app.config["AUDIT_KEY"] = "kept-in-a-vault"
    app.extensions.pop("audit_keys", None)
    try:
        eid = walk(crew)
        keys = audit.keys_from_config(app.config)
        assert audit.verify(db.session, keys, event_id=eid).ok
        assert not audit.verify(db.session, audit.keys_from_config({"SECRET_KEY": app.config["SECRET_KEY"]}),
                                event_id=eid).ok
    finally:
        app.config["AUDIT_KEY"] = None
        app.extensions.pop("audit_keys", None)
