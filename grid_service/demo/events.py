"""Demo events: realistic cases over the last four weeks, each with an audit trail that replays the
workflow's transition table, written in bulk.

Every event picks how it ends (closed, in progress, rejected …), a plan of actions that leads
there (with the usual detours: 退单, 返工, 挂账, 催办, 重办, timer escalation), and times that all
fall before `now`. `next_state` checks every step, so the trail always agrees with the table.
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..auth.models import User
from ..events.models import Category, Event, EventHistory
from ..events.states import ESCALATABLE, TRANSITIONS, next_state
from ..territory.models import Unit
from .bulk import writer_for
from .data import (
    ACTION_NOTES, DEPARTMENTS, PLACES, ROADS, SURNAMES, TITLES, VILLAGE_GROUPS, VILLAGE_PLACES, MinorSpec,
    minor_categories, person_name, pick,
)
from .geography import DISTRICT_CODE, STREETS, DemoUnit, demo_territory, sample_point

logger = logging.getLogger(__name__)

EVENT_WINDOW = timedelta(days=28)
CHUNK_SIZE = 5000

# How events end (share), and how old (days) an event in that state may be: open ones are recent.
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
# Minutes between the previous step and this action (log-uniform between the bounds).
DELAYS: dict[str, tuple[float, float]] = {
    "register": (5, 120), "reject": (10, 240), "merge": (10, 240), "dispatch": (5, 90), "return": (30, 600),
    "accept": (10, 240), "urge": (60, 1440), "extend": (120, 1440), "escalate": (240, 2880),
    "resolve": (60, 4320), "rework": (60, 1440), "verify": (60, 1440), "suspend": (120, 2880),
    "resume": (1440, 7200), "reopen": (1440, 7200), "reclassify": (10, 120), "cancel": (30, 2880),
}
HAPPY_PATH = ("register", "dispatch", "accept", "resolve", "verify")
_LAST_ACTION = {"registered": "register", "dispatched": "dispatch", "in_progress": "accept",
                "resolved": "resolve", "closed": "verify"}
_HANDLER_ACTIONS = frozenset({"accept", "resolve", "return"})
_VERIFY_ACTIONS = frozenset({"verify", "rework"})
_NOT_MERGEABLE = frozenset({"merged", "rejected", "cancelled"})
_OWNER_LEVELS = ("grid", "community", "street", "district")
_SYSTEM = None  # the actor of timer escalations
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


@dataclass(slots=True)
class _Walk:
    """An event replayed: its columns and its audit rows (both still without ids)."""

    event: dict[str, Any]
    history: list[dict[str, Any]]
    merge_row: dict[str, Any] | None


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(math.log(low) + (math.log(high) - math.log(low)) * rng.random())


def _walk(rng: random.Random, grid: _Grid, minor: MinorSpec, category_ids: tuple[int, int], actions: list[str],
          received_at: datetime, now: datetime, source: str, reporter: _Actor | None) -> _Walk:
    """Replay `actions` on a new event received at `received_at`, every step before `now`.

    `category_ids` is (final, initial): they differ when the plan reclassifies the event.
    """
    delays = [_log_uniform(rng, *DELAYS[action]) for action in actions]
    available = (now - received_at).total_seconds() / 60 - 1
    total = sum(delays)
    if total > available * 0.9:
        scale = available * (0.5 + 0.4 * rng.random()) / total
        delays = [delay * scale for delay in delays]

    right = minor.department
    wrong = pick(rng, _OTHER_DEPARTMENTS[right])
    # A dispatch followed at once by a return or another dispatch went to the wrong department.
    first = actions.index("dispatch") if "dispatch" in actions else -1
    first_dispatch_wrong = 0 <= first < len(actions) - 1 and actions[first + 1] in ("return", "dispatch")

    state, owner, handler = "reported", 0, None
    returns = reworks = reopens = dispatches = 0
    resolved_at = closed_at = None
    final_category, initial_category = category_ids
    category_id = initial_category if "reclassify" in actions else final_category
    if reporter is not None:
        report_actor = reporter
    elif source == "grid_worker":  # a grid without a demo account: the worker is not a user here
        report_actor = _Actor(None, "grid_worker", grid.id)
    else:  # hotline and Open311 come in through machine clients
        report_actor = _Actor(None, "system", None)
    history = [_row(received_at, report_actor, "report", None, state, None, "grid", None, grid.id, "", {"source": source})]
    at, merge_row = received_at, None
    for action, delay in zip(actions, delays):
        at = at + timedelta(seconds=max(round(delay * 60), 30))
        from_state, from_level, from_owner = state, grid.owners[owner][0], grid.owners[owner][1]
        state = next_state(state, action)
        if action in _HANDLER_ACTIONS:
            actor = handler
        elif action in _VERIFY_ACTIONS and grid.worker is not None and owner == 0:
            actor = grid.worker
        elif action == "escalate":
            actor = _SYSTEM
        else:
            actor = grid.supervisors[owner]
        note = pick(rng, ACTION_NOTES.get(action, ("",)))
        details: dict[str, Any] = {}
        if action == "dispatch":
            dispatches += 1
            key = wrong if first_dispatch_wrong and dispatches == 1 else right
            handler = grid.handlers[key]
            details["handler_id"] = handler.id
            note = f"派遣至{DEPARTMENTS[key]}。{note}".rstrip("。") + "。"
        elif action == "return":
            returns += 1
            details["handler_id"] = handler.id
            handler = None
        elif action == "resolve":
            resolved_at = at
            note = pick(rng, minor.resolutions)
        elif action == "verify":
            closed_at = at
        elif action == "rework":
            reworks += 1
            resolved_at = None
        elif action == "reopen":
            reopens += 1
            resolved_at = closed_at = None
        elif action == "escalate":
            owner += 1
            details["to_owner"] = grid.owners[owner][2]
            if state == "registered":
                handler = None
        elif action == "reclassify":
            details["category"] = [category_id, final_category]  # ids for now; codes set by the caller
            category_id = final_category
        row = _row(at, actor, action, from_state, state, from_level, grid.owners[owner][0], from_owner,
                   grid.owners[owner][1], note, details)
        if action == "merge":
            merge_row = row
        history.append(row)
    if at >= now:  # pragma: no cover - the scaling above keeps every step in the past
        raise RuntimeError("a demo event step fell in the future")
    event = {
        "source": source, "category_id": category_id,
        "priority": "urgent" if rng.random() < minor.urgent_share else "normal",
        "state": state, "level": grid.owners[owner][0], "owner_id": grid.owners[owner][1],
        "located_unit_id": grid.id, "grid_id": grid.id,
        "handler_id": handler.id if handler is not None else None,
        "reporter_id": reporter.id if reporter is not None else None, "merged_into_id": None,
        "needs_triage": False, "triage_reason": None,
        "return_count": returns, "rework_count": reworks, "reopen_count": reopens,
        "received_at": received_at, "created_at": received_at, "updated_at": at,
        "resolved_at": resolved_at, "closed_at": closed_at, "version": len(history),
    }
    return _Walk(event, history, merge_row)


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
        # Masked as in the hotline's own records, so that no demo row holds a dialable number.
        resident_phone = f"1{pick(rng, '3589')}{int(rng.random() * 10)}****{int(rng.random() * 10000):04d}"
    return {"description": description, "address": address, "resident_name": resident_name, "resident_phone": resident_phone}


def _timeline(rng: random.Random, count: int, now: datetime, zone: ZoneInfo) -> list[tuple[datetime, str]]:
    """(received_at, final state) for `count` events, oldest first, mostly in the daytime."""
    finals = _Weighted(list(FINAL_STATES), [share for share, _ in FINAL_STATES.values()])
    earliest = now - EVENT_WINDOW
    out = []
    for _ in range(count):
        final = finals.draw(rng)
        low, high = FINAL_STATES[final][1]
        received = now - timedelta(days=low + (high - low) * rng.random())
        local = received.astimezone(zone)
        if not 7 <= local.hour < 21 and rng.random() < 0.85:
            moved = local.replace(hour=7 + int(rng.random() * 14), minute=int(rng.random() * 60)).astimezone(UTC)
            if moved > now - timedelta(days=low):
                moved -= timedelta(days=1)
            if moved >= earliest:
                received = moved
        out.append((received.astimezone(UTC).replace(microsecond=0), final))
    out.sort(key=lambda item: item[0])
    return out


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
        community_sup = users.get(f"sup-{community.code}", street_sup)
        chain = (unit.code, community.code, street_code, DISTRICT_CODE)
        grids.append(_Grid(
            unit=unit, street_number=street_code[len(DISTRICT_CODE):], community_name=community.name,
            owners=[(level, ids[code], code) for level, code in zip(_OWNER_LEVELS, chain)],
            worker=users.get(f"wg-{unit.code}"),
            supervisors=[community_sup, community_sup, street_sup, district],
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
    seed and the number of events already stored). Pure Python: it never touches the session."""

    def __init__(self, rng: random.Random, grids: list[_Grid], category_ids: dict[str, int], now: datetime,
                 zone: ZoneInfo) -> None:
        self.rng, self.now, self.zone = rng, now, zone
        self.minors = minor_categories()
        self.minor_ids = [category_ids[minor.code] for minor in self.minors]
        self.code_of = {category_id: minor.code for category_id, minor in zip(self.minor_ids, self.minors)}
        self.grids = _Weighted(grids, [(0.35 if grid.is_town else 1.0) * (0.4 + 1.2 * rng.random()) for grid in grids])
        month = now.astimezone(zone).month  # snow in winter, barbecues in summer
        self.minor_weights = _Weighted(range(len(self.minors)),
                                       [minor.weight if not minor.months or month in minor.months else 0.0 for minor in self.minors])
        self.sources = _Weighted(list(SOURCES), list(SOURCES.values()))
        self.states: Counter = Counter()
        # The latest event (by index) a duplicate may be merged into, per (grid, category) and per grid.
        self._latest: dict[tuple[int, int], int] = {}
        self._latest_in_grid: dict[int, int] = {}

    def chunks(self, count: int, chunk_size: int) -> Iterator[_Chunk]:
        timeline = _timeline(self.rng, count, self.now, self.zone)
        for start in range(0, count, chunk_size):
            chunk = _Chunk(start, [], [])
            for index in range(start, min(start + chunk_size, count)):
                walk, target = self._event(index, *timeline[index])
                chunk.walks.append(walk)
                chunk.targets.append(target)
            yield chunk

    def _event(self, index: int, received_at: datetime, final: str) -> tuple[_Walk, int | None]:
        rng = self.rng
        grid: _Grid = self.grids.draw(rng)
        m = self.minor_weights.draw(rng)
        minor, minor_id = self.minors[m], self.minor_ids[m]
        source = self.sources.draw(rng)
        reporter = grid.worker if source == "grid_worker" else grid.supervisors[0] if source == "supervisor" else None
        target = None
        if final == "merged":
            target = self._latest.get((grid.id, minor_id), self._latest_in_grid.get(grid.id))
            if target is None:
                final = "rejected"  # nothing earlier in this grid to merge into
        # The category a reclassified event had at first: any other 小类.
        initial_id = self.minor_ids[(m + 1 + int(rng.random() * (len(self.minors) - 1))) % len(self.minors)]
        walk = _walk(rng, grid, minor, (minor_id, initial_id), plan_actions(rng, final), received_at, self.now, source, reporter)
        walk.event.update(_texts(rng, grid, minor, source))
        walk.event["lon"], walk.event["lat"] = sample_point(grid.unit, rng)
        for row in walk.history:
            if row["action"] == "reclassify":
                row["details"] = {"category": [self.code_of[c] for c in row["details"]["category"]]}
        if walk.event["state"] not in _NOT_MERGEABLE:
            self._latest[(grid.id, minor_id)] = self._latest_in_grid[grid.id] = index
        self.states[walk.event["state"]] += 1
        return walk, target


def seed_events(session: Session, count: int, *, now: datetime, rng_seed: int, timezone: str = "Asia/Shanghai",
                chunk_size: int = CHUNK_SIZE, progress: Callable[[int], None] | None = None) -> tuple[int, Counter]:
    """Add `count` demo events received over the last four weeks; returns (history rows, final states)."""
    existing = session.scalar(sa.select(sa.func.count()).select_from(Event)) or 0
    # The number of events already there enters the seed, so that a second run adds other events.
    rng = random.Random(f"grid-service demo events {rng_seed} {existing}")
    category_ids = {code: category_id for code, category_id in session.execute(sa.select(Category.code, Category.id))}
    generator = _Generator(rng, _load_grids(session), category_ids, now, ZoneInfo(timezone))
    writer = writer_for(session)

    ids: list[int] = []
    history_count = 0
    for chunk in generator.chunks(count, chunk_size):
        walks, targets = chunk.walks, chunk.targets
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
        history = []
        for i, walk in enumerate(walks):
            for row in walk.history:
                row["event_id"] = ids[chunk.start + i]
                history.append(row)
        writer.history(history)
        history_count += len(history)
        if progress is not None:
            progress(len(walks))
        logger.debug("demo events: %d of %d written", chunk.start + len(walks), count)
    return history_count, generator.states
