"""The event's states and what they mean (DESIGN §4). Pure: no Flask, no database.

The actions that move an event between them, and the transition table, are in actions.py.
"""
from __future__ import annotations

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

# The names people read (next to the identifier in error messages).
STATE_LABELS: dict[str, str] = {
    "reported": "待立案", "registered": "已立案", "dispatched": "已派遣", "in_progress": "处置中",
    "resolved": "已处置", "suspended": "已挂账", "closed": "已结案", "rejected": "不予立案",
    "merged": "已合并", "cancelled": "已作废",
}


def is_open(state: str) -> bool:
    return state in OPEN_STATES
