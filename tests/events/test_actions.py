"""The workflow's declaration (events/actions.py), tested without Flask or a database."""
from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from grid_service.events.actions import (
    ACTION_LABELS,
    ACTION_ROLES,
    ACTIONS,
    HANDLER_ACTIONS,
    SPECS,
    TRANSITIONS,
    allowed_actions,
    field_changes,
    lands_without_handler,
    next_state,
    not_now,
)
from grid_service.events.states import ESCALATABLE, OPEN_STATES, STATE_LABELS, STATES
from grid_service.infra.errors import InvalidTransition

NOW = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(("state", "action"), sorted(TRANSITIONS))
def test_every_transition_of_the_table_is_taken(state, action):
    assert next_state(state, action) == TRANSITIONS[(state, action)] in STATES
    assert action in allowed_actions(state)


@pytest.mark.parametrize("state", STATES)
def test_an_action_outside_the_table_is_refused_with_what_is_allowed(state):
    refused = [action for action in ACTIONS if (state, action) not in TRANSITIONS]
    assert refused
    for action in refused:
        with pytest.raises(InvalidTransition) as caught:
            next_state(state, action, allowed_now=lambda: allowed_actions(state))
        assert caught.value.status == 409 and caught.value.code == "invalid_transition"
        assert caught.value.message == not_now(state, action)
        assert STATE_LABELS[state] in caught.value.message and ACTION_LABELS[action] in caught.value.message
        assert caught.value.extra["allowed_actions"] == allowed_actions(state)


def test_final_states_allow_nothing_but_a_closed_event_can_be_reopened():
    for state in set(STATES) - OPEN_STATES:
        assert allowed_actions(state) == (["reopen"] if state == "closed" else [])


def test_escalation_keeps_the_state_but_sends_a_dispatched_event_back_to_registered():
    assert {state: next_state(state, "escalate") for state in ESCALATABLE} == {
        "reported": "reported", "registered": "registered", "dispatched": "registered", "in_progress": "in_progress"}
    assert [state for state in ESCALATABLE if lands_without_handler(next_state(state, "escalate"))] == [
        "registered", "dispatched"]


def test_roles_handlers_and_labels_are_declared_for_every_action():
    assert set(ACTION_ROLES) == set(ACTION_LABELS) == set(ACTIONS)
    assert HANDLER_ACTIONS == {"accept", "resolve", "return"}
    assert all(ACTION_ROLES[action] == {"handler"} for action in HANDLER_ACTIONS)
    assert allowed_actions("dispatched", roles=["handler"]) == ["return", "accept"]
    assert "register" not in allowed_actions("reported", roles=["grid_worker"])


def test_the_sweepers_effects_are_declared_but_no_one_takes_them():
    for name in ("warn", "breach", "supervise"):
        assert not SPECS[name].is_workflow and name not in ACTIONS and SPECS[name].notices


def test_every_action_that_changes_state_owner_or_deadline_tells_the_hotline():
    quiet = {action for action in ACTIONS if SPECS[action].hotline is None}
    assert quiet == {"urge"}  # 催办 stays inside


@pytest.mark.parametrize(("action", "before", "after"), [
    ("return", {"return_count": 2, "handler_id": 7}, {"return_count": 3, "handler_id": None}),
    ("resolve", {}, {"resolved_at": NOW}),
    ("verify", {}, {"closed_at": NOW}),
    ("rework", {"rework_count": 0, "resolved_at": NOW}, {"rework_count": 1, "resolved_at": None}),
    ("reopen", {"reopen_count": 1, "closed_at": NOW, "resolved_at": NOW},
     {"reopen_count": 2, "closed_at": None, "resolved_at": None}),
    ("accept", {"handler_id": 7}, {}),
])
def test_field_changes_follow_the_declaration(action, before, after):
    event = SimpleNamespace(**{"handler_id": None, **before})
    assert field_changes(action, event, NOW, next_state(_from(action), action)) == after


def _from(action: str) -> str:
    return next(state for (state, name) in TRANSITIONS if name == action)


def test_a_dispatched_event_escalated_loses_its_handler():
    event = SimpleNamespace(handler_id=7)
    assert field_changes("escalate", event, NOW, next_state("dispatched", "escalate")) == {"handler_id": None}
    assert field_changes("escalate", event, NOW, next_state("in_progress", "escalate")) == {}


def test_the_workflow_page_names_every_state_and_action_with_its_chinese_name():
    from tests.helpers import ROOT

    page = (ROOT / "docs" / "workflow.md").read_text(encoding="utf-8")
    for state, label in STATE_LABELS.items():
        assert f"| `{state}` | {label} |" in page, state
    for action in ACTIONS:
        assert f"| `{action}` {ACTION_LABELS[action]} |" in page, action
    assert "DESIGN §" not in page
