"""Demo events: realistic cases over the last four weeks, each with an audit trail that replays the
workflow's transition table and the SLA clocks the service would have kept, written in bulk.

Every event picks how it ends (closed, in progress, rejected …), a plan of actions that leads
there (with the usual detours: 退单, 返工, 挂账, 催办, 重办, timer escalation), and times that all
fall before `now`. `next_state` checks every step, so the trail always agrees with the table. The
clocks follow the trail step by step (clocks.py): the engine computes every deadline, owners act
before the deadlines they keep, and a sweeper that passed every 30 seconds until shortly before
`now` has warned, marked breaches and escalated as it would have. Open events are as old, in
working time, as their current clocks allow, so the first sweep after seeding has a little to do.
Rows go in a chunk at a time — Core executemany, COPY on PostgreSQL — and no ORM object is
built per event.
"""
from __future__ import annotations

import bisect
import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..auth.models import User
from ..events import audit
from ..events.actions import HANDLER_ACTIONS, TRANSITIONS, field_changes, lands_without_handler, next_state
from ..events.models import Category, Event
from ..events.states import ESCALATABLE, PRIORITIES
from ..infra.errors import InvalidTransition
from ..privacy import pii
from ..sla.calendars import calendar_by_name
from ..sla.defaults import DEFAULT_CALENDAR
from ..sla.engine import PolicyInfo, SlaEngine
from ..sla.models import CalendarRow
from ..territory.models import Unit
from .bulk import writer_for
from .clocks import SWEEP_TICK, DemoClock, DemoSla, EventClocks, SeedEngine, WorkingAges, is_tick, sweep_tick
from .data import (
    ACTION_NOTES,
    DEPARTMENTS,
    PLACES,
    ROADS,
    SURNAMES,
    TITLES,
    VILLAGE_GROUPS,
    VILLAGE_PLACES,
    MinorSpec,
    minor_categories,
    person_name,
    pick,
)
from .geography import DISTRICT_CODE, STREETS, DemoUnit, demo_territory, sample_point

logger = logging.getLogger(__name__)

EVENT_WINDOW = timedelta(days=28)
CHUNK_SIZE = 5000

# How events end (share), and how old (days) an event in that state may be: open ones are recent.
# (An event still with its owner — reported … in_progress — is as old as its clocks allow instead.)
FINAL_STATES: dict[str, tuple[float, tuple[float, float]]] = {
    "closed": (0.46, (0.5, 28)),
    "in_progress": (0.12, (0.2, 10)),
    "dispatched": (0.08, (0.1, 4)),
    "resolved": (0.08, (0.2, 4)),
    "registered": (0.06, (0.05, 2)),
    "reported": (0.05, (0.02, 1)),
    "suspended": (0.03, (2, 28)),
    "rejected": (0.05, (0.1, 28)),
    "merged": (0.03, (0.1, 28)),
    "cancelled": (0.04, (0.2, 28)),
}
SOURCES: dict[str, float] = {"grid_worker": 0.68, "hotline": 0.20, "supervisor": 0.08, "open311": 0.04}
# Minutes between the previous step and this action (log-uniform between the bounds); steps are
# then held before the deadlines the owner keeps, and a timer escalation comes when the level's time is up.
DELAYS: dict[str, tuple[float, float]] = {
    "register": (5, 120), "reject": (10, 240), "merge": (10, 240), "dispatch": (5, 90), "return": (30, 600),
    "accept": (10, 240), "urge": (60, 1440), "extend": (120, 1440), "escalate": (240, 2880),
    "resolve": (60, 4320), "rework": (60, 1440), "verify": (60, 1440), "suspend": (120, 2880),
    "resume": (1440, 7200), "reopen": (1440, 7200), "reclassify": (10, 120), "cancel": (30, 2880),
}
HAPPY_PATH = ("register", "dispatch", "accept", "resolve", "verify")
_LAST_ACTION = {"registered": "register", "dispatched": "dispatch", "in_progress": "accept",
                "resolved": "resolve", "closed": "verify"}

_VERIFY_ACTIONS = frozenset({"verify", "rework"})
_NOT_MERGEABLE = frozenset({"merged", "rejected", "cancelled"})
_OWNER_LEVELS = ("grid", "community", "street", "district")
_OTHER_DEPARTMENTS = {key: [other for other in DEPARTMENTS if other != key] for key in DEPARTMENTS}


@dataclass(frozen=True, slots=True)
class _Actor:
    id: int | None
    role: str
    unit_id: int | None


@dataclass(slots=True)
class _Grid:
    """What event generation needs to know about one grid and the people around it."""

    unit: DemoUnit
    street_number: str
    community_name: str
    owners: list[tuple[str, int, str]]  # (level, unit id, code): grid, community, street, district
    names: list[str]  # the units' names, in the same order
    community_has_supervisor: bool  # a demo account reads the community's inbox
    worker: _Actor | None
    supervisors: list[_Actor]  # who acts for the owner, per owner level
    handlers: dict[str, _Actor]  # department key → the street's handler
    is_town: bool

    @property
    def id(self) -> int:
        return self.owners[0][1]


class _Weighted:
    """Draws items by weight with one random number."""

    def __init__(self, items: Sequence[Any], weights: Sequence[float]) -> None:
        self.items = list(items)
        self.cumulative: list[float] = []
        total = 0.0
        for weight in weights:
            total += weight
            self.cumulative.append(total)
        self.total = total

    def draw(self, rng: random.Random) -> Any:
        index = bisect.bisect_right(self.cumulative, rng.random() * self.total)
        return self.items[min(index, len(self.items) - 1)]


# --- plans -------------------------------------------------------------------------------------


def plan_actions(rng: random.Random, final: str) -> list[str]:
    """The actions after `report` that take an event to `final`, with the usual detours."""
    if final == "reported":
        core: list[str] = []
    elif final in _LAST_ACTION:
        core = list(HAPPY_PATH[:HAPPY_PATH.index(_LAST_ACTION[final]) + 1])
        if final == "dispatched" and rng.random() < 0.25:
            core = [*HAPPY_PATH, "reopen"]  # 重办: the resident was not satisfied
        elif final == "closed" and rng.random() < 0.03:
            core = [*HAPPY_PATH, "reopen", "accept", "resolve", "verify"]
        elif final == "registered" and rng.random() < 0.2:
            core = ["register", "dispatch", "return"]  # 退单, waiting to be dispatched again
    elif final == "suspended":
        core = ["register", "dispatch", "accept", "suspend"]
    elif final in ("rejected", "merged"):
        core = (["register"] if rng.random() < 0.4 else []) + ["reject" if final == "rejected" else "merge"]
    elif final == "cancelled":
        core = [*HAPPY_PATH[:int(rng.random() * 5)], "cancel"]
    else:
        raise ValueError(f"no plan leads to {final!r}")

    actions: list[str] = []
    for i, action in enumerate(core):
        following = core[i + 1] if i + 1 < len(core) else None
        actions.append(action)
        if action == "register" and rng.random() < 0.03:
            actions.append("reclassify")
        elif action == "dispatch" and following == "accept":
            if rng.random() < 0.07:
                actions += ["return", "dispatch"]
            elif rng.random() < 0.02:
                actions.append("dispatch")  # handed to another handler before acceptance
            if rng.random() < 0.06:
                actions.append("urge")
        elif action == "accept" and following in ("resolve", "suspend", None):
            if following == "resolve" and rng.random() < 0.04:
                actions += ["suspend", "resume"]
            if ("in_progress", "extend") in TRANSITIONS and rng.random() < 0.03:
                actions.append("extend")
            if rng.random() < 0.05:
                actions.append("urge")
        elif action == "resolve" and following == "verify":
            while rng.random() < (0.2 if "rework" in actions else 0.1):
                actions += ["rework", "resolve"]
    return _insert_escalations(rng, actions)


def _insert_escalations(rng: random.Random, actions: list[str]) -> list[str]:
    """Let the timer move some events up one or two levels at a moment they were still held."""
    if rng.random() >= 0.12:
        return actions
    for _ in range(2 if rng.random() < 0.3 else 1):
        states = ["reported"]
        for action in actions:
            states.append(next_state(states[-1], action))
        first = actions.index("escalate") + 1 if "escalate" in actions else 0
        last = actions.index("reopen") if "reopen" in actions else len(actions)
        slots = [i for i in range(first, last + 1) if states[i] in ESCALATABLE]
        if not slots:
            break
        i = pick(rng, slots)
        inserted = ["escalate"]
        if next_state(states[i], "escalate") != states[i] and i < len(actions) and actions[i] != "dispatch":
            inserted.append("dispatch")  # escalated while dispatched: the new owner dispatches again
        actions = actions[:i] + inserted + actions[i:]
    return actions


# --- one event ---------------------------------------------------------------------------------

# Events whose registration (立案) or resolution (处置) comes after its deadline (a late resolution
# climbs the levels by the timer on the way); every other step is taken in time, and an owner never
# sits on an event past its level's limit unless the plan says the timer escalated it. Gives the
# district a 按期处置率 of about 94 %.
LATE_ACCEPT_SHARE = 0.06
LATE_RESOLVE_SHARE = 0.10
# The demo's sweeper stopped this many working minutes before `now` (it had run every SWEEP_TICK
# until then): what came due since is left for the first sweep after `make run`.
SWEEPER_GAP_MINUTES = 10


@dataclass(slots=True)
class _Head:
    """An event before its walk, drawn for every event first so that events can be sorted by arrival."""

    received_at: datetime
    final: str
    grid: _Grid
    minor: int  # index into the generator's minor categories
    source: str
    priority: str
    actions: list[str]
    reopen_at: datetime | None  # an open event reopened (重办) at this instant
    late_accept: bool
    late_resolve: bool


@dataclass(slots=True)
class _Walk:
    """An event replayed: its columns, audit rows, clocks and timer escalations (all still without ids)."""

    event: dict[str, Any]
    history: list[dict[str, Any]]
    merge_row: dict[str, Any] | None
    clocks: list[DemoClock]
    escalations: list[dict[str, Any]]  # each with "clock": the DemoClock that ran out
    clock_refs: list[tuple[dict[str, Any], DemoClock]]  # audit details naming a clock, filled in once it has an id


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(math.log(low) + (math.log(high) - math.log(low)) * rng.random())


def _clamp(rng: random.Random, at: datetime, proposed: datetime, deadline: datetime) -> datetime:
    """`proposed`, or a moment between `at` and `deadline` when it would miss the deadline."""
    if proposed < deadline:
        return proposed
    span = (deadline - at).total_seconds()
    return at + timedelta(seconds=span * (0.3 + 0.65 * rng.random()) if span > 3 else 1)


# The clocks whose deadline a step is taken before (besides its level's), unless the event is late.
_KEPT_BY = {"register": ("accept",), "resolve": ("resolve",), "extend": ("resolve",)}


class _Walker:
    """Replays one event's plan from its arrival: each step at a time before `now`, its audit row, and
    the clocks as the SLA engine and the sweeper (a pass every SWEEP_TICK until `swept_until`)
    would have left them. `next_state` checks every step, so the trail agrees with the table."""

    def __init__(self, rng: random.Random, grid: _Grid, minor: MinorSpec, head: _Head, actions: list[str],
                 category_ids: tuple[int, int], reporter: _Actor | None, sla: DemoSla, now: datetime,
                 swept_until: datetime, zone: ZoneInfo) -> None:
        self.rng, self.grid, self.minor, self.head, self.actions = rng, grid, minor, head, list(actions)
        self.sla, self.now, self.swept_until, self.zone = sla, now, swept_until, zone
        self.final_category, initial_category = category_ids
        self.category_id = initial_category if "reclassify" in actions else self.final_category
        self.state, self.owner, self.handler = "reported", 0, None
        self.return_count = self.rework_count = self.reopen_count = self.dispatches = 0
        self.resolved_at: datetime | None = None
        self.closed_at: datetime | None = None
        self.is_supervised = False
        self.history: list[dict[str, Any]] = []
        self.merge_row: dict[str, Any] | None = None
        self.escalations: list[dict[str, Any]] = []
        self.clock_refs: list[tuple[dict[str, Any], DemoClock]] = []
        self.at = head.received_at
        self.clocks = EventClocks(sla, sla.policies[(self.category_id, head.priority)], head.received_at, grid.id)
        right = minor.department
        self.departments = (pick(rng, _OTHER_DEPARTMENTS[right]), right)  # (wrong, right)
        # A dispatch followed at once by a return or another dispatch went to the wrong department.
        first = actions.index("dispatch") if "dispatch" in actions else -1
        self.first_dispatch_wrong = 0 <= first < len(actions) - 1 and actions[first + 1] in ("return", "dispatch")
        if reporter is not None:
            report_actor = reporter
        elif head.source == "grid_worker":  # a grid without a demo account: the worker is not a user here
            report_actor = _Actor(None, "grid_worker", grid.id)
        else:  # hotline and Open311 come in through machine clients
            report_actor = _Actor(None, "system", None)
        self._record(head.received_at, report_actor, "report", None, "reported", None, None, "", {"source": head.source})

    @property
    def handler_id(self) -> int | None:
        return self.handler.id if self.handler is not None else None

    @handler_id.setter
    def handler_id(self, value: int | None) -> None:
        if value is not None:
            raise ValueError("a demo handler is chosen by dispatch")
        self.handler = None

    def run(self) -> _Walk:
        rng, actions = self.rng, self.actions
        delays = [_log_uniform(rng, *DELAYS[action]) for action in actions]
        available = max(1.0, ((self.head.reopen_at or self.now) - self.head.received_at).total_seconds() / 60 - 1)
        total = sum(delays)
        if total > available * 0.9:
            scale = available * (0.5 + 0.4 * rng.random()) / total
            delays = [delay * scale for delay in delays]
        i = 0
        while i < len(actions):
            action = actions[i]
            room = self.now - timedelta(minutes=len(actions) - i)  # the steps still to come fit before now
            if action == "escalate":
                self._let_level_run_out(room)
            else:
                at = self._when(action, delays[i], room)
                self._sweep(before=at)
                if (self.state, action) not in TRANSITIONS:  # the timer sent a dispatched event up: dispatch again
                    actions.insert(i, "dispatch")
                    delays.insert(i, DELAYS["dispatch"][0])
                    continue
                self._act(action, at)
            i += 1
        self._sweep(through=self.swept_until)
        if self.at >= self.now:  # pragma: no cover - every step is held before now
            raise RuntimeError("a demo event step fell in the future")
        level, owner_id, _ = self.grid.owners[self.owner]
        received_at = self.head.received_at
        event = {
            "source": self.head.source, "category_id": self.category_id, "priority": self.head.priority,
            "state": self.state, "level": level, "owner_id": owner_id,
            "located_unit_id": self.grid.id, "grid_id": self.grid.id,
            "handler_id": self.handler_id,
            "reporter_id": None, "merged_into_id": None, "needs_triage": False, "triage_reason": None,
            "is_supervised": self.is_supervised,
            "return_count": self.return_count, "rework_count": self.rework_count, "reopen_count": self.reopen_count,
            "received_at": received_at, "created_at": received_at, "updated_at": self.at,
            "resolved_at": self.resolved_at, "closed_at": self.closed_at, "version": len(self.history),
        }
        return _Walk(event, self.history, self.merge_row, self.clocks.clocks, self.escalations, self.clock_refs)

    # -- time --------------------------------------------------------------------------------

    def _when(self, action: str, delay: float, room: datetime) -> datetime:
        """The instant of the next step: after its drawn delay, but before every deadline the owner keeps."""
        clocks, at, head = self.clocks, self.at, self.head
        level = clocks.running("level") if self.state in ESCALATABLE else None
        late = None
        if action == "register" and head.late_accept:
            late = self._past_due(clocks.running("accept"), 0.05, 0.5)
            if late is not None and level is not None and late >= level.due_at:
                late = None
        elif action == "resolve" and head.late_resolve:
            late = self._past_due(clocks.running("resolve"), 0.03, 0.4)  # the levels run out on the way
        if late is not None and late < room:
            return self._off_tick(late)
        proposed = at + timedelta(seconds=max(round(delay * 60), 30))
        if action == "reopen" and head.reopen_at is not None and head.reopen_at > at:
            proposed = head.reopen_at
        kept = [clock for metric in _KEPT_BY.get(action, ()) if (clock := clocks.running(metric)) is not None]
        if level is not None:
            kept.append(level)
        if action == "rework":  # the stopped clocks run on from their stop: reopened before they are due
            kept += [clock for metric in ("level", "resolve")
                     if (clock := clocks.last(metric)) is not None and clock.state in ("met", "breached")]
        deadline = room
        for clock in kept:
            if at < clock.due_at < deadline:  # a deadline already missed (a late event) is not chased
                deadline = clock.due_at
        return self._off_tick(_clamp(self.rng, at, proposed, deadline))

    def _past_due(self, clock: DemoClock | None, low: float, high: float) -> datetime | None:
        if clock is None:
            return None
        extra = clock.limit_minutes * (low + (high - low) * self.rng.random())
        return self.clocks.calendar(clock).add(clock.due_at, extra)

    def _off_tick(self, at: datetime) -> datetime:
        """`at` in whole seconds after the last step, and never on a sweeper tick (whose effects come first)."""
        seconds = max(1, int((at - self.at).total_seconds()))
        at = self.at + timedelta(seconds=seconds)
        if is_tick(at):
            at += timedelta(seconds=-1 if seconds > 1 else 1)
        return at

    # -- the sweeper -------------------------------------------------------------------------

    def _let_level_run_out(self, room: datetime) -> None:
        """The owner does nothing until the timer escalates the event (if the sweeper ran then)."""
        level = self.clocks.running("level")
        if level is None or self.state not in ESCALATABLE:
            return
        tick = sweep_tick(level.due_at)
        if tick <= self.swept_until and tick < room:
            self._sweep(through=tick)

    def _sweep(self, *, before: datetime | None = None, through: datetime | None = None) -> None:
        """The sweeper's passes over this event's clocks, up to (not at) `before` or through `through`."""
        while (check := self.clocks.next_check()) is not None:
            if check > self.swept_until or (before is not None and check >= before):
                return  # nothing due before the next step (the common case, checked first)
            tick = sweep_tick(max(check, self.at + timedelta(microseconds=1)))
            if tick > self.swept_until or (before is not None and tick >= before) or (through is not None and tick > through):
                return
            lapsed = self.clocks.sweep(tick, is_escalatable=self.state in ESCALATABLE)
            if lapsed is not None:
                self._timer(lapsed, tick)

    def _timer(self, clock: DemoClock, tick: datetime) -> None:
        """What the sweeper does with a level clock that ran out: escalate, or 督办 at the district."""
        owners, names = self.grid.owners, self.grid.names
        from_level, from_owner_id, _ = owners[self.owner]
        if self.owner + 1 == len(owners) and self.is_supervised:
            return
        late = max(0.0, self.clocks.calendar(clock).between(clock.due_at, tick))
        details = {"clock_id": None, "due_at": clock.due_at.astimezone(self.zone).isoformat(),
                   "late_minutes": round(late, 2)}
        self.clock_refs.append((details, clock))
        if self.owner + 1 == len(owners):
            self.is_supervised = True
            self._record(tick, None, "supervise", self.state, self.state, from_level, from_owner_id,
                         "区级处置超时，列入督办", details)
            return
        from_state, from_name = self.state, names[self.owner]
        self.owner += 1
        to_level, to_owner_id, _ = owners[self.owner]
        self.state = next_state(self.state, "escalate")
        if lands_without_handler(self.state):  # a dispatched event: the new owner dispatches again
            self.handler = None
        self._record(tick, None, "escalate", from_state, self.state, from_level, from_owner_id,
                     f"{from_name}处置超时，自动上报至{names[self.owner]}", details)
        self.escalations.append({
            "clock": clock, "reason": "timer", "from_level": from_level, "to_level": to_level,
            "from_owner_id": from_owner_id, "to_owner_id": to_owner_id, "due_at": clock.due_at,
            "escalated_at": tick, "late_minutes": late,
        })
        self.clocks.start("level", tick, to_level, to_owner_id)

    # -- people's actions --------------------------------------------------------------------

    def _act(self, action: str, at: datetime) -> None:
        rng, grid = self.rng, self.grid
        from_state, (from_level, from_owner_id, _) = self.state, grid.owners[self.owner]
        self.state = next_state(self.state, action)
        if action in HANDLER_ACTIONS:
            actor = self.handler
        elif action in _VERIFY_ACTIONS and grid.worker is not None and self.owner == 0:
            actor = grid.worker
        else:
            actor = grid.supervisors[self.owner]
        note = pick(rng, ACTION_NOTES.get(action, ("",)))
        details: dict[str, Any] = {}
        policy = extend_minutes = None
        if action == "dispatch":
            self.dispatches += 1
            wrong, right = self.departments
            key = wrong if self.first_dispatch_wrong and self.dispatches == 1 else right
            self.handler = grid.handlers[key]
            details["handler_id"] = self.handler.id
            note = f"派遣至{DEPARTMENTS[key]}。{note}".rstrip("。") + "。"
        elif action == "return":
            details["handler_id"] = self.handler.id
        elif action == "resolve":
            note = pick(rng, self.minor.resolutions)
        elif action == "reclassify":
            details["category"] = [self.category_id, self.final_category]  # ids for now; codes set by the caller
            self.category_id = self.final_category
            policy = self.sla.policies[(self.category_id, self.head.priority)]
        elif action == "extend":
            limit = self.clocks.live()["resolve"].limit_minutes
            extend_minutes = max(30, int(limit * (0.2 + 0.6 * rng.random())) // 30 * 30)
            details.update(metric="resolve", minutes=extend_minutes)
        try:  # a person's action never changes the owner: the level and owner are still the "from" ones
            self.clocks.on_action(action, at, level=from_level, owner_id=from_owner_id, policy=policy,
                                  extend_minutes=extend_minutes)
        except InvalidTransition:  # an extension asked for after the deadline: refused, no step
            self.state = from_state
            return
        for name, value in field_changes(action, self, at, self.state).items():  # counters, instants, handler
            setattr(self, name, value)
        row = self._record(at, actor, action, from_state, self.state, from_level, from_owner_id, note, details)
        if action == "merge":
            self.merge_row = row

    def _record(self, at: datetime, actor: _Actor | None, action: str, from_state: str | None, to_state: str,
                from_level: str | None, from_owner_id: int | None, note: str, details: dict[str, Any]) -> dict[str, Any]:
        level, owner_id, _ = self.grid.owners[self.owner]
        row = _row(at, actor, action, from_state, to_state, from_level, level, from_owner_id, owner_id, note, details)
        self.history.append(row)
        self.at = at
        return row


def _row(at: datetime, actor: _Actor | None, action: str, from_state: str | None, to_state: str,
         from_level: str | None, to_level: str, from_owner: int | None, to_owner: int, note: str,
         details: dict[str, Any]) -> dict[str, Any]:
    return {
        "at": at, "actor_id": actor.id if actor else None, "actor_role": actor.role if actor else "system",
        "actor_unit_id": actor.unit_id if actor else None, "action": action, "from_state": from_state,
        "to_state": to_state, "from_level": from_level, "to_level": to_level, "from_owner_id": from_owner,
        "to_owner_id": to_owner, "note": note, "details": details,
    }


def _texts(rng: random.Random, grid: _Grid, minor: MinorSpec, source: str) -> dict[str, Any]:
    """Description, address and resident of a demo event, in Chinese."""
    if grid.is_town:
        street = next(s for s in STREETS if s.number == grid.street_number)
        group = pick(rng, VILLAGE_GROUPS)
        address = f"包头市青山区{street.name}{grid.community_name}{group}"
        place = f"{grid.community_name}{group}{pick(rng, VILLAGE_PLACES)}"
    else:
        road = pick(rng, ROADS[grid.street_number])
        number = 1 + int(rng.random() * 280)
        address = f"包头市青山区{road}{number}号"
        place = f"{road}{number}号{pick(rng, PLACES)}"
    description = pick(rng, minor.templates).format(place=place, n=2 + int(rng.random() * 11))
    resident_name = resident_phone = None
    if source in ("hotline", "open311") or rng.random() < 0.15:
        resident_name = pick(rng, SURNAMES) + pick(rng, TITLES) if source == "hotline" else person_name(rng)
        # A fictitious caller (middle digits 0000), sealed, indexed and masked like any real one.
        resident_phone = f"1{pick(rng, '3589')}{int(rng.random() * 10)}0000{int(rng.random() * 10000):04d}"
    return {"description": description, "address": address, "resident_name": resident_name,
            **pii.phone_columns(resident_phone)}


# --- the district ------------------------------------------------------------------------------


def _load_grids(session: Session) -> list[_Grid]:
    """The demo grids with their units' ids and the demo users who act on them."""
    territory = demo_territory()
    codes = [unit.code for unit in territory.units]
    ids = {code: unit_id for code, unit_id in session.execute(sa.select(Unit.code, Unit.id).where(Unit.code.in_(codes)))}
    missing = [code for code in codes if code not in ids]
    if missing:
        raise LookupError(f"the demo territory is incomplete: {len(missing)} units missing, e.g. {missing[0]}")
    users = {name: _Actor(user_id, role, unit_id)
             for name, user_id, role, unit_id in session.execute(sa.select(User.name, User.id, User.role, User.unit_id))}
    by_code = territory.by_code()
    district = users.get(f"sup-{DISTRICT_CODE}") or users["admin"]
    grids = []
    for unit in territory.by_level("grid"):
        community = by_code[unit.parent_code]
        street_code = community.parent_code
        street_sup = users[f"sup-{street_code}"]
        community_sup = users.get(f"sup-{community.code}")
        chain = (unit.code, community.code, street_code, DISTRICT_CODE)
        grids.append(_Grid(
            unit=unit, street_number=street_code[len(DISTRICT_CODE):], community_name=community.name,
            owners=[(level, ids[code], code) for level, code in zip(_OWNER_LEVELS, chain)],
            names=[by_code[code].name for code in chain], community_has_supervisor=community_sup is not None,
            worker=users.get(f"wg-{unit.code}"),
            supervisors=[community_sup or street_sup, community_sup or street_sup, street_sup, district],
            handlers={key: users[f"{key}-{street_code}"] for key in DEPARTMENTS},
            is_town=by_code[street_code].name.endswith("镇"),
        ))
    return grids


@dataclass(slots=True)
class _Chunk:
    """Events generated together; `targets[i]` is the index of the event that event i duplicates."""

    start: int
    walks: list[_Walk]
    targets: list[int | None]


class _Generator:
    """Makes the demo events, chunk by chunk, from one random stream (so the result is fixed by the
    seed and the number of events already stored). It reads the database only through the SLA
    engine's cached policies and calendars."""

    def __init__(self, rng: random.Random, grids: list[_Grid], category_ids: dict[str, int], sla: DemoSla,
                 now: datetime, swept_until: datetime, zone: ZoneInfo) -> None:
        self.rng, self.sla, self.now, self.swept_until, self.zone = rng, sla, now, swept_until, zone
        self.minors = minor_categories()
        self.minor_ids = [category_ids[minor.code] for minor in self.minors]
        self.code_of = {category_id: minor.code for category_id, minor in zip(self.minor_ids, self.minors)}
        self.grids = _Weighted(grids, [(0.35 if grid.is_town else 1.0) * (0.4 + 1.2 * rng.random()) for grid in grids])
        month = now.astimezone(zone).month  # snow in winter, barbecues in summer
        self.minor_weights = _Weighted(range(len(self.minors)),
                                       [minor.weight if not minor.months or month in minor.months else 0.0 for minor in self.minors])
        self.sources = _Weighted(list(SOURCES), list(SOURCES.values()))
        self.finals = _Weighted(list(FINAL_STATES), [share for share, _ in FINAL_STATES.values()])
        self.states: Counter = Counter()
        # The latest event (by index) a duplicate may be merged into, per (grid, category) and per grid.
        self._latest: dict[tuple[int, int], int] = {}
        self._latest_in_grid: dict[int, int] = {}
        self._due_in_community: Counter = Counter()
        self._due_in_grid: Counter = Counter()

    def chunks(self, count: int, chunk_size: int) -> Iterator[_Chunk]:
        heads = sorted((self._head() for _ in range(count)), key=lambda head: head.received_at)
        for start in range(0, count, chunk_size):
            chunk = _Chunk(start, [], [])
            for index in range(start, min(start + chunk_size, count)):
                walk, target = self._event(index, heads[index])
                chunk.walks.append(walk)
                chunk.targets.append(target)
            yield chunk

    # -- what each event is, and when it arrived ------------------------------------------------

    def _head(self) -> _Head:
        rng = self.rng
        final = self.finals.draw(rng)
        grid: _Grid = self.grids.draw(rng)
        m = self.minor_weights.draw(rng)
        source = self.sources.draw(rng)
        priority = "urgent" if rng.random() < self.minors[m].urgent_share else "normal"
        actions = plan_actions(rng, final)
        late_accept, late_resolve = rng.random() < LATE_ACCEPT_SHARE, rng.random() < LATE_RESOLVE_SHARE
        reopen_at = None
        if final in ESCALATABLE:
            received_at, reopen_at, actions = self._open_arrival(
                final, actions, self.sla.policies[(self.minor_ids[m], priority)], grid,
                is_stuck=final == "in_progress" and late_resolve)
        else:
            received_at = self._arrival(final)
        return _Head(received_at, final, grid, m, source, priority, actions, reopen_at, late_accept, late_resolve)

    def _arrival(self, final: str) -> datetime:
        """When an event that ends in `final` arrived: at most its state's age, mostly in the daytime."""
        rng, now = self.rng, self.now
        low, high = FINAL_STATES[final][1]
        received = now - timedelta(days=low + (high - low) * rng.random())
        local = received.astimezone(self.zone)
        if not 7 <= local.hour < 21 and rng.random() < 0.85:
            moved = local.replace(hour=7 + int(rng.random() * 14), minute=int(rng.random() * 60)).astimezone(UTC)
            if moved > now - timedelta(days=low):
                moved -= timedelta(days=1)
            if moved >= now - EVENT_WINDOW:
                received = moved
        return received.astimezone(UTC).replace(microsecond=0)

    def _open_arrival(self, final: str, actions: list[str], policy: PolicyInfo, grid: _Grid, *,
                      is_stuck: bool) -> tuple[datetime, datetime | None, list[str]]:
        """(received_at, reopened_at, actions) of an event still with its owner.

        It is as old, in the policy's working time, as the levels it was escalated from plus part of
        its current level's limit — or a bit more than the whole limit, so that the first sweep
        finds a few overdue and a few to warn. A stuck case (积案: in progress, its resolution
        late) has been escalated by the timer up to the district on the way. Escalations the
        sweeper could not have made (it stopped at `swept_until`) are dropped.
        """
        rng, now = self.rng, self.now
        earliest = (now - EVENT_WINDOW).replace(microsecond=0) + timedelta(seconds=1)
        limits = [policy.limit("level", level) for level in _OWNER_LEVELS]
        share = rng.random() ** 1.5  # most open events are young
        if is_stuck:  # the walk's last sweeps climb the levels
            actions = [action for action in actions if action != "escalate"]
        escalations = len(limits) - 1 if is_stuck else actions.count("escalate")
        due_now = self._due_now(final, actions, grid) if escalations == 0 else None
        while True:
            budget = limits[min(escalations, len(limits) - 1)] or policy.resolve_minutes
            if final == "reported" and escalations == 0:
                budget = min(budget, policy.accept_minutes)
            window = SWEEPER_GAP_MINUTES / budget  # the share of the limit the first sweep finds come due
            if due_now is None:
                fraction = 0.02 + (1 + window - 0.02) * share
            else:  # its level's time or its warning threshold falls due at the first sweep
                fraction = (1.0 if due_now == "escalated" else 0.8) + window * (0.1 + 0.8 * share)
            used = budget * fraction
            young = 5.0 * (len(actions) + 1)  # working minutes that leave room for its steps
            if used < young and escalations == 0 and "reopen" not in actions:
                # Just arrived: any moment since, nights and weekends included (it waits for working hours).
                since = self.sla.working_before(policy.calendar_id, now, young)
                latest = now - timedelta(minutes=len(actions) + 1)
                return max(since, since + (latest - since) * rng.random()).replace(microsecond=0), None, actions
            used = max(used, young * (1 + rng.random()))
            level_since = self.sla.working_before(policy.calendar_id, now, used)
            if "reopen" in actions:
                return max(earliest, level_since - timedelta(seconds=int(86400 * (1 + 5 * rng.random())))), level_since, actions
            if escalations == 0 or level_since <= self.swept_until:
                lapsed = sum(limit or 0 for limit in limits[:escalations])
                return max(earliest, self.sla.working_before(policy.calendar_id, now, lapsed + used)), None, actions
            if not is_stuck:
                last = len(actions) - 1 - actions[::-1].index("escalate")
                actions = actions[:last] + actions[last + 1:]
            escalations -= 1

    def _due_now(self, final: str, actions: list[str], grid: _Grid) -> str | None:
        """Whether this open event is one of the few the first sweep acts on in the demo users' own
        units: two escalations into each community that has a demo supervisor, one warning to each
        grid that has a demo grid worker — so their inboxes show what the sweeper does."""
        if final == "reported" or "reopen" in actions:
            return None
        community = grid.owners[1][1]
        if grid.worker is not None and self._due_in_grid[grid.id] < 1:
            self._due_in_grid[grid.id] += 1
            return "warning"
        if grid.community_has_supervisor and self._due_in_community[community] < 2:
            self._due_in_community[community] += 1
            return "escalated"
        return None

    # -- one event ------------------------------------------------------------------------------

    def _event(self, index: int, head: _Head) -> tuple[_Walk, int | None]:
        rng, grid, m = self.rng, head.grid, head.minor
        minor, minor_id = self.minors[m], self.minor_ids[m]
        reporter = grid.worker if head.source == "grid_worker" else grid.supervisors[0] if head.source == "supervisor" else None
        actions, target = head.actions, None
        if head.final == "merged":
            target = self._latest.get((grid.id, minor_id), self._latest_in_grid.get(grid.id))
            if target is None:
                actions = plan_actions(rng, "rejected")  # nothing earlier in this grid to merge into
        # The category a reclassified event had at first: any other 小类.
        initial_id = self.minor_ids[(m + 1 + int(rng.random() * (len(self.minors) - 1))) % len(self.minors)]
        walk = _Walker(rng, grid, minor, head, actions, (minor_id, initial_id), reporter, self.sla, self.now,
                       self.swept_until, self.zone).run()
        walk.event["reporter_id"] = reporter.id if reporter is not None else None
        walk.event.update(_texts(rng, grid, minor, head.source))
        walk.event["lon"], walk.event["lat"] = sample_point(grid.unit, rng)
        for row in walk.history:
            if row["action"] == "reclassify":
                row["details"] = {"category": [self.code_of[c] for c in row["details"]["category"]]}
        if walk.event["state"] not in _NOT_MERGEABLE:
            self._latest[(grid.id, minor_id)] = self._latest_in_grid[grid.id] = index
        self.states[walk.event["state"]] += 1
        return walk, target


@dataclass(slots=True)
class EventsReport:
    """What `seed_events` wrote."""

    history: int = 0
    clocks: int = 0
    escalations: int = 0
    states: Counter = field(default_factory=Counter)


def demo_sweeper_stop(session: Session, sla: SlaEngine, now: datetime) -> datetime:
    """The last pass of the demo's sweeper: SWEEPER_GAP_MINUTES of the default calendar's working time
    before `now`. Seeded clocks carry its effects up to then; whatever came due since is the first
    real sweep's."""
    _, calendar = calendar_by_name(session, sla, DEFAULT_CALENDAR, now)
    stopped = WorkingAges(calendar, now).before(SWEEPER_GAP_MINUTES)
    last_pass = sweep_tick(stopped)
    return last_pass - SWEEP_TICK if last_pass > stopped else last_pass


def _demo_sla(session: Session, sla: SlaEngine, now: datetime) -> DemoSla:
    """The current policy of every 小类 × priority, and every calendar, read once."""
    policies = {(category.id, priority): sla.policy_for(session, category, priority, now)
                for category in session.scalars(sa.select(Category).where(Category.level == "minor"))
                for priority in PRIORITIES}
    calendars = {calendar_id: sla.calendar(session, calendar_id) for calendar_id in session.scalars(sa.select(CalendarRow.id))}
    return DemoSla(SeedEngine(calendars), policies)


class _ChunkWriter:
    """Writes the generator's chunks in order: events, clocks, sealed audit trails, escalations."""

    def __init__(self, session: Session, key: bytes, states: Counter) -> None:
        self.writer, self.key = writer_for(session), key
        self.ids: list[int] = []  # event ids by generation index (duplicates point at earlier ones)
        self.report = EventsReport(states=states)

    def write(self, chunk: _Chunk) -> None:
        walks, targets, ids, writer = chunk.walks, chunk.targets, self.ids, self.writer
        ids.extend([0] * len(walks))
        # Duplicates point at earlier events, which may be in this chunk: insert those first.
        for merged in (False, True):
            batch = [i for i, target in enumerate(targets) if (target is not None) == merged]
            if not batch:
                continue
            for i in batch:
                if targets[i] is not None:
                    walks[i].event["merged_into_id"] = ids[targets[i]]
                    walks[i].merge_row["details"] = {"into": ids[targets[i]]}
            for i, event_id in zip(batch, writer.events([walks[i].event for i in batch])):
                ids[chunk.start + i] = event_id
        event_ids = ids[chunk.start:chunk.start + len(walks)]
        clocks = [clock for walk in walks for clock in walk.clocks]
        rows = [clock.row(event_id) for walk, event_id in zip(walks, event_ids) for clock in walk.clocks]
        for clock, clock_id in zip(clocks, writer.clocks(rows)):
            clock.id = clock_id
        history, escalations = [], []
        for walk, event_id in zip(walks, event_ids):
            for details, clock in walk.clock_refs:
                details["clock_id"] = clock.id
            for row in walk.history:
                row["event_id"] = event_id
            # seq = 1..n matches the event's version (len(history)): the trail verifies.
            history.extend(audit.seal_trail(self.key, walk.history))
            for escalation in walk.escalations:
                clock = escalation.pop("clock")
                escalations.append({**escalation, "event_id": event_id, "clock_id": clock.id})
        writer.history(history)
        writer.escalations(escalations)
        self.report.history += len(history)
        self.report.clocks += len(rows)
        self.report.escalations += len(escalations)
        logger.debug("demo events: %d written", chunk.start + len(walks))


def seed_events(session: Session, count: int, *, now: datetime, rng_seed: int, sla: SlaEngine,
                timezone: str = "Asia/Shanghai", chunk_size: int = CHUNK_SIZE,
                progress: Callable[[int], None] | None = None) -> EventsReport:
    """Add `count` demo events received over the last four weeks, with their audit trails, SLA clocks
    and timer escalations."""
    existing = session.scalar(sa.select(sa.func.count()).select_from(Event)) or 0
    # The number of events already there enters the seed, so that a second run adds other events.
    rng = random.Random(f"grid-service demo events {rng_seed} {existing}")
    category_ids = {code: category_id for code, category_id in session.execute(sa.select(Category.code, Category.id))}
    swept_until = demo_sweeper_stop(session, sla, now)
    generator = _Generator(rng, _load_grids(session), category_ids, _demo_sla(session, sla, now), now, swept_until,
                           ZoneInfo(timezone))
    writer = _ChunkWriter(session, audit.current_key(), generator.states)
    for chunk in generator.chunks(count, chunk_size):
        writer.write(chunk)
        if progress is not None:
            progress(len(chunk.walks))
    return writer.report
