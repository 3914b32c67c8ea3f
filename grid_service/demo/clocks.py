"""SLA clocks for demo events: what the engine and the sweeper would have made of each trail.

A demo event's walk (events.py) drives one `EventClocks` step by step, so the trail and its clocks
are one story:

- `EventClocks.on_action` runs the clock steps the action declares (events.actions) through the
  engine's own `run_clock_steps`, on `DemoClock` objects instead of ORM rows (which would add
  seconds per 100,000 events, and queries per event): the same rules, deadlines, warning instants,
  working time used, met or breached, and provisional years.
- `EventClocks.sweep` is one pass of escalation/sweeper.py over the event's due clocks at one
  sweeper tick: a warning marked, an accept or resolve clock marked breached, a level clock that
  ran out closed for the caller to move the event up.

tests/test_demo_seed.py replays seeded trails through the real engine and sweeper and compares
the clocks, so a change to either shows up there.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from ..events.actions import SPECS
from ..sla.engine import AnyCalendar, PolicyInfo, SlaEngine
from ..sla.models import Clock

# The scheduler's default SWEEP_INTERVAL_SECONDS: sweeper passes happen on this grid of instants.
SWEEP_TICK = timedelta(seconds=30)
assert 60 % SWEEP_TICK.seconds == 0, "is_tick assumes ticks on the same seconds of every minute"
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
CLOCK_COLUMNS: tuple[str, ...] = tuple(column.name for column in Clock.__table__.columns if column.name != "id")


def sweep_tick(after: datetime) -> datetime:
    """The first sweeper pass at or after `after`."""
    ticks = math.ceil((after - _EPOCH) / SWEEP_TICK)
    return _EPOCH + ticks * SWEEP_TICK


def is_tick(at: datetime) -> bool:
    """Whether a sweeper pass happens at `at` (passes fall on whole half minutes, in every zone)."""
    return at.microsecond == 0 and at.second % SWEEP_TICK.seconds == 0


class WorkingAges:
    """Instants a given amount of the calendar's working time before `end`: a table of working time
    per 5 minutes back from `end`, grown as needed, bisected to the step, then within it."""

    STEP = timedelta(minutes=5)

    def __init__(self, calendar: AnyCalendar, end: datetime, limit: timedelta = timedelta(days=60)) -> None:
        self.calendar, self.end, self.steps = calendar, end, int(limit / self.STEP)
        self.cumulative = [0.0]  # [k]: working minutes in [end - k steps, end)

    def before(self, minutes: float) -> datetime:
        """A whole second from which `minutes` (and at most two seconds more) of working time have
        passed by `end`; the oldest instant of the table when the calendar has not that much."""
        cumulative, step, end = self.cumulative, self.STEP, self.end
        while cumulative[-1] < minutes and len(cumulative) <= self.steps:
            k = len(cumulative)
            cumulative.append(cumulative[-1] + self.calendar.between(end - k * step, end - (k - 1) * step))
        k = bisect_left(cumulative, minutes)
        if k >= len(cumulative):
            return (end - (len(cumulative) - 1) * step).replace(microsecond=0)
        if k == 0:
            return end.replace(microsecond=0)
        later, earlier = end - (k - 1) * step, end - k * step
        need = minutes - cumulative[k - 1]
        if cumulative[k] - cumulative[k - 1] == step / timedelta(minutes=1):  # all working: exact
            return (later - timedelta(minutes=need)).replace(microsecond=0)
        # Within a step that holds the start or end of working hours: bisect to the second.
        while earlier - later < timedelta(seconds=-1):
            middle = later + (earlier - later) / 2
            if self.calendar.between(middle, end - (k - 1) * step) >= need:
                earlier = middle
            else:
                later = middle
        return earlier.replace(microsecond=0)


class DemoClock:
    """A clock's column values (an `sla_clocks` row to be), with the attributes the engine's methods use."""

    __slots__ = (*CLOCK_COLUMNS, "id")

    def __init__(self, values: dict[str, Any]) -> None:
        for name in CLOCK_COLUMNS:
            setattr(self, name, values[name])
        self.id: int | None = None

    def row(self, event_id: int) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in CLOCK_COLUMNS}
        values["event_id"] = event_id
        return values


class SeedEngine(SlaEngine):
    """The SLA engine's clock arithmetic over calendars read once, so that the demo's walk never goes
    back to the database (thousands of calls per second through the engine's version check)."""

    def __init__(self, calendars: dict[int, AnyCalendar]) -> None:
        super().__init__(refresh_seconds=0.0)
        self._fixed = calendars

    def calendar(self, session: Session | None, calendar_id: int) -> AnyCalendar:
        return self._fixed[calendar_id]


class DemoSla:
    """The engine (calendars fixed) and the policy of every (category, priority) the demo uses."""

    def __init__(self, engine: SeedEngine, policies: dict[tuple[int, str], PolicyInfo]) -> None:
        self.engine, self.policies, self.session = engine, policies, None
        self._ages: dict[tuple[int, datetime], WorkingAges] = {}

    def calendar(self, calendar_id: int) -> AnyCalendar:
        return self.engine.calendar(None, calendar_id)

    def working_before(self, calendar_id: int, end: datetime, minutes: float) -> datetime:
        """About `minutes` of the calendar's working time before `end` (see WorkingAges)."""
        ages = self._ages.get((calendar_id, end))
        if ages is None:
            ages = self._ages[(calendar_id, end)] = WorkingAges(self.calendar(calendar_id), end)
        return ages.before(minutes)

    def new_clock(self, policy: PolicyInfo, metric: str, start: datetime, *, seq: int, level: str | None = None,
                  owner_id: int | None = None) -> DemoClock | None:
        row = self.engine.new_clock(None, 0, policy, metric, start=start, seq=seq, level=level, owner_id=owner_id)
        return None if row is None else DemoClock(row)


class EventClocks:
    """The clocks of one demo event as its walk goes: the SLA engine's own clock steps (run_clock_steps,
    as an action declares them) on DemoClocks, and a sweeper's pass over them."""

    __slots__ = ("sla", "policy", "clocks", "_live", "_last")

    def __init__(self, sla: DemoSla, policy: PolicyInfo, received_at: datetime, grid_id: int) -> None:
        self.sla, self.policy = sla, policy
        self.clocks: list[DemoClock] = []
        self._live: dict[str, DemoClock] = {}
        self._last: dict[str, DemoClock] = {}
        self.start("accept", received_at)
        self.start("level", received_at, "grid", grid_id)
        self.start("resolve", received_at)

    def start(self, metric: str, at: datetime, level: str | None = None, owner_id: int | None = None) -> None:
        """A new running clock of `metric` (the next cycle), unless the policy sets no limit for it."""
        last = self._last.get(metric)
        clock = self.sla.new_clock(self.policy, metric, at, seq=last.seq + 1 if last else 1, level=level, owner_id=owner_id)
        if clock is not None:
            self._added(clock)

    def _added(self, clock: DemoClock) -> DemoClock:
        self.clocks.append(clock)
        self._live[clock.metric] = self._last[clock.metric] = clock
        return clock

    def running(self, metric: str) -> DemoClock | None:
        clock = self._live.get(metric)
        return clock if clock is not None and clock.state == "running" else None

    def calendar(self, clock: DemoClock) -> AnyCalendar:
        return self.sla.calendar(clock.calendar_id)

    def on_action(self, action: str, at: datetime, *, level: str, owner_id: int, policy: PolicyInfo | None = None,
                  extend_minutes: int | None = None, extend_metric: str = "resolve") -> None:
        """What a person's workflow action does to the clocks: its declared steps, as the engine runs them."""
        steps = SPECS[action].clocks
        if not steps:
            return
        if policy is not None:  # reclassified: the new policy from now on
            self.policy = policy
        self.sla.engine.run_clock_steps(None, self, steps, at, event_id=0, level=level, owner_id=owner_id,
                                        policy=lambda: self.policy, extend_minutes=extend_minutes,
                                        extend_metric=extend_metric)

    # ClockSet (sla.engine): the engine keeps `live` up to date as it stops, reopens and starts clocks.

    def live(self) -> dict[str, DemoClock]:
        return self._live

    def last(self, metric: str) -> DemoClock | None:
        return self._last.get(metric)

    def add(self, row: dict[str, Any]) -> DemoClock:
        return self._added(DemoClock(row))

    def record_escalation(self, level_clock: DemoClock | None, now: datetime) -> None:
        raise ValueError("demo escalations are the sweeper's: use sweep() and start()")

    # -- the sweeper ---------------------------------------------------------------------------

    def next_check(self) -> datetime | None:
        """When the sweeper next needs to look at one of the event's clocks (None: never)."""
        first = None
        for clock in self._live.values():
            check = clock.next_check_at
            if check is not None and clock.state == "running" and (first is None or check < first):
                first = check
        return first

    def sweep(self, tick: datetime, *, is_escalatable: bool) -> DemoClock | None:
        """One sweeper pass at `tick` over the event's due clocks (escalation/sweeper.py's sweep_batch).

        Warnings and breaches are marked here; a level clock that ran out is closed and returned
        when the event can move, so that the caller escalates it (or flags it 督办 at the district).
        """
        due = sorted((clock for clock in self._live.values() if clock.state == "running"
                      and clock.next_check_at is not None and clock.next_check_at <= tick),
                     key=lambda clock: clock.next_check_at)
        lapsed = None
        for clock in due:
            if clock.due_at <= tick:
                if clock.metric != "level":
                    clock.breached_at, clock.next_check_at = tick, None
                    continue
                clock.used_minutes += self.calendar(clock).between(clock.segment_started_at, tick)
                clock.state, clock.breached_at, clock.stopped_at = "breached", tick, tick
                clock.segment_started_at = clock.next_check_at = None
                del self._live["level"]
                if is_escalatable and lapsed is None:
                    lapsed = clock
            elif clock.warned_at is None and clock.warn_at <= tick:
                clock.warned_at, clock.next_check_at = tick, clock.due_at
            else:  # a stale check instant: look again at the next threshold
                clock.next_check_at = clock.warn_at if clock.warned_at is None and clock.warn_at < clock.due_at else clock.due_at
        return lapsed
