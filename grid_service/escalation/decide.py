"""What the sweeper does with the clocks that are due (DESIGN §5). Pure: no Flask, no database.

`decide` turns a batch of due clocks (each with what it needs of its event and its owner's parent),
the instant, the calendars and the policies into effects:

- a warning threshold crossed → warn the owner unit, once;
- an accept or resolve clock overdue → mark it breached, once;
- a level clock overdue → close it, and move the event to the parent unit (one level per pass; the
  state after it is the transition table's, the same rule as a person's 上报), with a new level
  clock from now; at the district there is no parent: the event is flagged 督办, once;
- a level clock of an event that has moved on by hand (or already moved in this batch) only ends;
- anything else was looked at too early (a stale check instant): look again later.

The writer (sweeper.py) carries the effects out in set-based statements and publishes them.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from ..events.actions import next_state
from ..events.states import ESCALATABLE
from ..sla.deadlines import AnyCalendar, PolicyInfo, new_clock


class Due(NamedTuple):
    """A due clock with what its effects need of its event and units (instants aware, in UTC)."""

    id: int
    event_id: int
    metric: str
    seq: int
    clock_owner_id: int | None
    calendar_id: int
    used_minutes: float
    segment_started_at: datetime | None
    due_at: datetime
    warn_at: datetime
    warned_at: datetime | None
    state: str  # the event's
    level: str
    owner_id: int
    version: int
    category_id: int
    priority: str
    is_supervised: bool
    source: str
    handler_id: int | None
    owner_name: str
    parent_id: int | None
    parent_level: str | None
    parent_name: str | None
    head_hash: str | None  # the event's last audit row (seq = version): the link an escalation extends


class Escalate(NamedTuple):
    clock: Due
    late_minutes: float  # working minutes between the deadline and now (a sweeper that was down is late)
    to_state: str
    new_clock: dict[str, Any] | None  # the next level's clock (one dict per policy and level: compare by identity)


class Supervise(NamedTuple):
    clock: Due
    late_minutes: float


@dataclass
class Decisions:
    """A batch's effects, by kind (closing a level clock: with the working minutes it used)."""

    warn: list[Due] = field(default_factory=list)
    breach: list[Due] = field(default_factory=list)
    close: list[tuple[Due, float]] = field(default_factory=list)
    recheck: list[Due] = field(default_factory=list)
    escalate: list[Escalate] = field(default_factory=list)
    supervise: list[Supervise] = field(default_factory=list)


def decide(due: Iterable[Due], now: datetime, calendars: Mapping[int, AnyCalendar],
           policies: Mapping[tuple[int, str], PolicyInfo]) -> Decisions:
    """The effects of `due` (in event order) at `now`; `policies` maps (category id, priority) to the
    policy each event's next level clock follows."""
    decisions = Decisions()
    since: dict[tuple[int, datetime], float] = {}
    level_clocks: dict[tuple[int, str], dict[str, Any] | None] = {}
    moved: set[int] = set()

    def minutes_to_now(calendar_id: int, instant: datetime) -> float:
        """Working minutes from `instant` to now (memoised: many clocks share their instants)."""
        key = (calendar_id, instant)
        if key not in since:
            since[key] = calendars[calendar_id].between(instant, now)
        return since[key]

    def next_level_clock(clock: Due) -> dict[str, Any] | None:
        """The new level clock, the same for every event of a policy and level at this instant."""
        policy = policies[(clock.category_id, clock.priority)]
        key = (policy.id, clock.parent_level)
        if key not in level_clocks:
            level_clocks[key] = new_clock(policy, calendars[policy.calendar_id], "level", start=now,
                                          level=clock.parent_level)
        return level_clocks[key]

    for clock in due:
        if clock.due_at <= now:
            if clock.metric != "level":
                decisions.breach.append(clock)
                continue
            used = clock.used_minutes + minutes_to_now(clock.calendar_id, clock.segment_started_at)
            decisions.close.append((clock, used))
            if clock.state not in ESCALATABLE or clock.owner_id != clock.clock_owner_id or clock.event_id in moved:
                continue  # the event moved on by hand: this clock only ends
            moved.add(clock.event_id)
            late = max(0.0, minutes_to_now(clock.calendar_id, clock.due_at))
            if clock.parent_id is None:
                if not clock.is_supervised:  # 督办 is flagged once
                    decisions.supervise.append(Supervise(clock, late))
                continue
            decisions.escalate.append(Escalate(clock, late, next_state(clock.state, "escalate"),
                                               next_level_clock(clock)))
        elif clock.warned_at is None and clock.warn_at <= now:
            decisions.warn.append(clock)
        else:
            decisions.recheck.append(clock)
    return decisions
