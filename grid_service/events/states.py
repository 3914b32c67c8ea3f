"""The event workflow as data (DESIGN §4). Pure: no Flask, no database.

TRANSITIONS[(state, action)] gives the state after the action; ACTION_ROLES says who may take it.
`escalate` moves the event up a level without changing its state, except that a dispatched event
goes back to `registered` at its new owner, who dispatches again.
"""
from __future__ import annotations

from collections.abc import Iterable

STATES: tuple[str, ...] = (
    "reported", "registered", "dispatched", "in_progress", "resolved",
    "suspended", "closed", "rejected", "merged", "cancelled",
)
OPEN_STATES: frozenset[str] = frozenset({"reported", "registered", "dispatched", "in_progress", "resolved", "suspended"})
FINAL_STATES: frozenset[str] = frozenset(STATES) - OPEN_STATES
SOURCES: tuple[str, ...] = ("grid_worker", "hotline", "open311", "supervisor")
PRIORITIES: tuple[str, ...] = ("urgent", "normal")

# The states in which the owner is still working on the event (timers may escalate it).
ESCALATABLE: tuple[str, ...] = ("reported", "registered", "dispatched", "in_progress")

TRANSITIONS: dict[tuple[str, str], str] = {
    ("reported", "register"): "registered",
    ("reported", "reject"): "rejected",
    ("registered", "reject"): "rejected",
    ("reported", "merge"): "merged",
    ("registered", "merge"): "merged",
    ("registered", "dispatch"): "dispatched",
    ("dispatched", "dispatch"): "dispatched",  # hand to another handler before acceptance
    ("dispatched", "return"): "registered",  # 退单: the handler says it is not theirs
    ("dispatched", "accept"): "in_progress",
    ("in_progress", "resolve"): "resolved",
    ("resolved", "verify"): "closed",
    ("resolved", "rework"): "in_progress",  # 返工: verification failed, same handler again
    ("in_progress", "suspend"): "suspended",
    ("suspended", "resume"): "in_progress",
    ("closed", "reopen"): "dispatched",  # 重办: back to the handler who closed it
    ("reported", "escalate"): "reported",
    ("registered", "escalate"): "registered",
    ("dispatched", "escalate"): "registered",
    ("in_progress", "escalate"): "in_progress",
    **{(state, "urge"): state for state in ESCALATABLE},
    **{(state, "extend"): state for state in (*ESCALATABLE, "suspended")},  # 延期 on one clock
    **{(state, "reclassify"): state for state in sorted(OPEN_STATES)},
    **{(state, "cancel"): "cancelled" for state in sorted(OPEN_STATES)},
}

ACTIONS: tuple[str, ...] = tuple(sorted({action for _, action in TRANSITIONS}))

_SUPERVISING = frozenset({"supervisor", "admin"})
ACTION_ROLES: dict[str, frozenset[str]] = {
    "register": _SUPERVISING,
    "reject": _SUPERVISING,
    "merge": _SUPERVISING,
    "dispatch": _SUPERVISING,
    "return": frozenset({"handler"}),
    "accept": frozenset({"handler"}),
    "resolve": frozenset({"handler"}),
    "verify": _SUPERVISING | {"grid_worker"},
    "rework": _SUPERVISING | {"grid_worker"},
    "suspend": _SUPERVISING,
    "resume": _SUPERVISING,
    "reopen": _SUPERVISING,
    "escalate": _SUPERVISING,
    "urge": _SUPERVISING,
    "extend": _SUPERVISING,
    "reclassify": _SUPERVISING,
    "cancel": _SUPERVISING,
}

# Actions that need the assigned handler (the others need the territory).
HANDLER_ACTIONS: frozenset[str] = frozenset({"return", "accept", "resolve"})

# The names people read in error messages (next to the identifier).
STATE_LABELS: dict[str, str] = {
    "reported": "待立案", "registered": "已立案", "dispatched": "已派遣", "in_progress": "处置中",
    "resolved": "已处置", "suspended": "已挂账", "closed": "已结案", "rejected": "不予立案",
    "merged": "已合并", "cancelled": "已作废",
}
ACTION_LABELS: dict[str, str] = {
    "register": "立案", "reject": "不予立案", "merge": "合并", "dispatch": "派遣", "return": "退单",
    "accept": "签收", "resolve": "处置反馈", "verify": "核查", "rework": "返工", "suspend": "挂账",
    "resume": "恢复办理", "reopen": "重办", "escalate": "上报", "urge": "催办", "extend": "延期",
    "reclassify": "重新分类", "cancel": "作废",
}


class InvalidTransitionError(Exception):
    """The action is not possible from the event's current state."""

    def __init__(self, state: str, action: str, allowed: list[str]) -> None:
        super().__init__(f"action {action!r} is not allowed in state {state!r}")
        self.state, self.action, self.allowed = state, action, allowed


def next_state(state: str, action: str, roles: Iterable[str] | None = None) -> str:
    """The state after `action`, or InvalidTransitionError listing what is allowed now."""
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise InvalidTransitionError(state, action, allowed_actions(state, roles)) from None


def allowed_actions(state: str, roles: Iterable[str] | None = None) -> list[str]:
    """Actions possible from `state`, limited to those any of `roles` may take when given."""
    role_set = None if roles is None else set(roles)
    return [
        action
        for (from_state, action) in TRANSITIONS
        if from_state == state and (role_set is None or ACTION_ROLES[action] & role_set)
    ]


def is_open(state: str) -> bool:
    return state in OPEN_STATES
