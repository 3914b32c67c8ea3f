"""The sweeper's decisions (escalation/decide.py), tested without a database: due clocks in, effects out."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from grid_service.escalation.decide import Due, decide
from grid_service.sla.calendar import NaturalCalendar
from grid_service.sla.deadlines import PolicyInfo

NOW = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
CALENDARS = {1: NaturalCalendar()}
POLICY = PolicyInfo(id=5, scope="*|*", version=1, accept_minutes=60,
                    level_minutes={"grid": 30, "community": 120, "street": 240}, resolve_minutes=600,
                    warn_ratio=0.8, calendar_id=1)
POLICIES = {(9, "normal"): POLICY}


def due(**changes) -> Due:
    """A grid's level clock of an in-progress event, 30 minutes long, started 40 minutes ago."""
    started = NOW - timedelta(minutes=40)
    values = dict(
        id=100, event_id=10, metric="level", seq=1, clock_owner_id=3, calendar_id=1, used_minutes=0.0,
        segment_started_at=started, due_at=started + timedelta(minutes=30), warn_at=started + timedelta(minutes=24),
        warned_at=None, state="in_progress", level="grid", owner_id=3, version=4, category_id=9, priority="normal",
        is_supervised=False, source="grid_worker", handler_id=None, owner_name="一网格", parent_id=2, parent_level="community",
        parent_name="一社区", head_hash="h" * 64)
    values.update(changes)
    return Due(**values)


def test_an_overdue_level_clock_escalates_the_event_one_level_with_a_new_clock_from_now():
    decisions = decide([due()], NOW, CALENDARS, POLICIES)
    [(closed, used)] = decisions.close
    assert closed.id == 100 and used == 40.0
    [escalation] = decisions.escalate
    assert escalation.to_state == "in_progress" and escalation.late_minutes == 10.0
    clock = escalation.new_clock
    assert (clock["metric"], clock["level"], clock["limit_minutes"], clock["started_at"]) == ("level", "community", 120, NOW)
    assert clock["due_at"] == NOW + timedelta(minutes=120) and clock["warn_at"] == NOW + timedelta(minutes=96)
    assert not (decisions.warn or decisions.breach or decisions.supervise or decisions.recheck)


def test_a_dispatched_event_goes_back_to_registered_at_its_new_owner():
    [escalation] = decide([due(state="dispatched")], NOW, CALENDARS, POLICIES).escalate
    assert escalation.to_state == "registered"


def test_at_the_district_the_event_is_flagged_supervised_once():
    at_top = due(parent_id=None, parent_level=None, parent_name=None, level="district")
    decisions = decide([at_top], NOW, CALENDARS, POLICIES)
    assert [s.clock.id for s in decisions.supervise] == [100] and not decisions.escalate
    again = decide([at_top._replace(is_supervised=True)], NOW, CALENDARS, POLICIES)
    assert not again.supervise and len(again.close) == 1


def test_a_level_clock_of_an_event_that_moved_on_by_hand_only_ends():
    for stale in (due(owner_id=4), due(state="resolved"), due(state="suspended")):
        decisions = decide([stale], NOW, CALENDARS, POLICIES)
        assert len(decisions.close) == 1 and not decisions.escalate and not decisions.supervise


def test_an_event_moves_at_most_one_level_per_pass():
    decisions = decide([due(), due(id=101, seq=2)], NOW, CALENDARS, POLICIES)
    assert [e.clock.id for e in decisions.escalate] == [100] and len(decisions.close) == 2


def test_overdue_accept_and_resolve_clocks_are_breached_not_escalated():
    clocks = [due(id=1, metric="accept", level=None), due(id=2, metric="resolve", level=None)]
    decisions = decide(clocks, NOW, CALENDARS, POLICIES)
    assert [c.id for c in decisions.breach] == [1, 2] and not decisions.close and not decisions.escalate


def test_a_crossed_warning_warns_once_and_an_early_look_is_a_recheck():
    started = NOW - timedelta(minutes=25)
    warn_now = due(segment_started_at=started, due_at=started + timedelta(minutes=30),
                   warn_at=started + timedelta(minutes=24))
    assert [c.id for c in decide([warn_now], NOW, CALENDARS, POLICIES).warn] == [100]
    warned = warn_now._replace(warned_at=NOW - timedelta(seconds=30))
    early = due(due_at=NOW + timedelta(minutes=5), warn_at=NOW + timedelta(minutes=1))
    assert [c.id for c in decide([warned, early], NOW, CALENDARS, POLICIES).recheck] == [100, 100]


def test_every_escalation_of_a_policy_and_level_shares_one_new_clock():
    decisions = decide([due(), due(id=200, event_id=20)], NOW, CALENDARS, POLICIES)
    first, second = decisions.escalate
    assert first.new_clock is second.new_clock


def test_no_limit_at_the_next_level_starts_no_clock():
    to_district = due(level="street", parent_level="district", parent_id=1)
    [escalation] = decide([to_district], NOW, CALENDARS, POLICIES).escalate
    assert escalation.new_clock is None
