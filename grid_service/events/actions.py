"""Every workflow action, declared once (DESIGN §4). Pure: no Flask, no database.

An `Action` says everything the service does when someone takes it: the transitions it allows,
who may take it, the event fields it changes, what it does to the SLA clocks, what the hotline is
told and whom the inbox tells. Its readers: `events.service.apply_action` (checks and field
changes), `sla.engine` (the clock steps), `outbox.messages` (the hotline message), `inbox.notices`
(the notifications) and the demo's replay (all of them, without a database). Adding an action is
one entry here plus, where its arguments need the database (a handler to check, a target event),
one function in `events.service`.

The sweeper's own effects (a warning, a breach, 督办) are declared here too, as `Action`s that no
person can take (no transitions): they reach the inbox through the same published changes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..infra.errors import InvalidTransition
from .states import ESCALATABLE, OPEN_STATES, STATE_LABELS

SUPERVISING = frozenset({"supervisor", "admin"})
HANDLING = frozenset({"handler"})
ALL = ("accept", "level", "resolve")  # every clock metric


@dataclass(frozen=True)
class ClockStep:
    """One thing an action does to the event's clocks, in order (sla.engine.run_clock_steps).

    op: `stop` (met, or breached if late), `cancel`, `pause`, `resume` the live clocks of `metrics`;
    `reopen` the last stopped clock of each metric (its time runs on from the stop); `start` a new
    clock of each metric from now (a level clock for the owner after the change); `record_escalation`
    writes the escalation row of the live level clock (a manual 上报) before it stops; `reapply` the
    event's policy to the live clocks (after a reclassification); `extend` the chosen clock.
    """

    op: Literal["stop", "cancel", "pause", "resume", "reopen", "start", "record_escalation", "reapply", "extend"]
    metrics: tuple[str, ...] = ALL


@dataclass(frozen=True)
class Notice:
    """An inbox item the change sends: to the unit that owns the event after it (`owner`: its
    supervisors, or a grid's worker) and/or to the person handling it (`handler`).

    `message` is written for a person's action, `system_message` for the sweeper's. They may name
    {actor_unit} (the actor's unit), {note} (the actor's reason), {minutes} (an extension),
    {from_owner} and {to_owner} (the units' names), {metric} (the clock) and {due} (its deadline in
    the configured zone).
    """

    kind: str
    message: str = ""
    system_message: str = ""
    to: tuple[str, ...] = ("owner",)


@dataclass(frozen=True)
class HotlineMessage:
    """What the hotline hears (outbox kind `petition.<kind>`); `system_note` replaces the note when the
    sweeper made the change."""

    kind: str
    system_note: str = ""


@dataclass(frozen=True)
class Action:
    name: str
    label: str  # what people read (立案, 派遣 …)
    moves: Mapping[str, str] = field(default_factory=dict)  # state before → state after
    roles: frozenset[str] = frozenset()
    by_handler: bool = False  # taken by the event's handler (else by its territory's people)
    note_required: bool = False  # 退单/返工/挂账/重办/作废/延期 need a reason
    clears_triage: bool = False  # a person taking it has looked at the event
    count: str | None = None  # the counter it adds one to
    stamp: str | None = None  # the instant it sets to now
    clear: tuple[str, ...] = ()  # the instants it clears
    clocks: tuple[ClockStep, ...] = ()
    hotline: HotlineMessage | None = None
    notices: tuple[Notice, ...] = ()

    @property
    def is_workflow(self) -> bool:
        """Whether people take it (it has transitions); else it is one of the sweeper's effects."""
        return bool(self.moves)


def _same(states: Iterable[str]) -> dict[str, str]:
    return {state: state for state in states}


_DECLARED: tuple[Action, ...] = (
    Action("register", "立案", {"reported": "registered"}, SUPERVISING, clears_triage=True,
           clocks=(ClockStep("stop", ("accept",)),), hotline=HotlineMessage("registered")),
    Action("reject", "不予立案", {"reported": "rejected", "registered": "rejected"}, SUPERVISING, note_required=True,
           clears_triage=True, clocks=(ClockStep("cancel"),), hotline=HotlineMessage("rejected")),
    Action("merge", "合并", {"reported": "merged", "registered": "merged"}, SUPERVISING, clears_triage=True,
           clocks=(ClockStep("cancel"),), hotline=HotlineMessage("merged")),
    # A second dispatch before acceptance hands the event to another handler.
    Action("dispatch", "派遣", {"registered": "dispatched", "dispatched": "dispatched"}, SUPERVISING,
           hotline=HotlineMessage("dispatched"),
           notices=(Notice("dispatched", "{actor_unit}派遣事件给您处置", to=("handler",)),)),
    # 退单: the handler says it is not theirs; the owner dispatches again.
    Action("return", "退单", {"dispatched": "registered"}, HANDLING, by_handler=True, note_required=True,
           count="return_count", hotline=HotlineMessage("returned"),
           notices=(Notice("returned", "处置人员退单，请重新派遣：{note}"),)),
    Action("accept", "签收", {"dispatched": "in_progress"}, HANDLING, by_handler=True,
           hotline=HotlineMessage("accepted")),
    Action("resolve", "处置反馈", {"in_progress": "resolved"}, HANDLING, by_handler=True, stamp="resolved_at",
           clocks=(ClockStep("stop", ("resolve", "level", "accept")),), hotline=HotlineMessage("resolved")),
    Action("verify", "核查", {"resolved": "closed"}, SUPERVISING | {"grid_worker"}, stamp="closed_at",
           hotline=HotlineMessage("closed")),
    # 返工: verification failed, the same handler again; the stopped clocks run on as if never stopped.
    Action("rework", "返工", {"resolved": "in_progress"}, SUPERVISING | {"grid_worker"}, note_required=True,
           count="rework_count", clear=("resolved_at",), clocks=(ClockStep("reopen", ("resolve", "level")),),
           hotline=HotlineMessage("reworked"),
           notices=(Notice("rework", "核查未通过，请返工：{note}", to=("handler", "owner")),)),
    Action("suspend", "挂账", {"in_progress": "suspended"}, SUPERVISING, note_required=True,
           clocks=(ClockStep("pause"),), hotline=HotlineMessage("suspended")),
    Action("resume", "恢复办理", {"suspended": "in_progress"}, SUPERVISING, clocks=(ClockStep("resume"),),
           hotline=HotlineMessage("resumed")),
    # 重办: back to the handler who closed it, with new resolve and level clocks.
    Action("reopen", "重办", {"closed": "dispatched"}, SUPERVISING, note_required=True, count="reopen_count",
           clear=("closed_at", "resolved_at"),
           clocks=(ClockStep("stop", ("resolve", "level")), ClockStep("start", ("resolve", "level"))),
           hotline=HotlineMessage("reopened")),
    # 上报: level and owner change, not the state — except that a dispatched event goes back to
    # `registered` at its new owner, who dispatches again (DESIGN §4). The sweeper takes it too.
    Action("escalate", "上报", {"reported": "reported", "registered": "registered", "dispatched": "registered",
                              "in_progress": "in_progress"}, SUPERVISING, clears_triage=True,
           clocks=(ClockStep("record_escalation", ("level",)), ClockStep("stop", ("level",)),
                   ClockStep("start", ("level",))),
           hotline=HotlineMessage("escalated", system_note="处置超时，已自动上报至{to_owner}"),
           notices=(Notice("escalated", "事件由{actor_unit}上报至本单位处置", "{from_owner}处置超时，事件已自动上报至本单位"),)),
    Action("urge", "催办", _same(ESCALATABLE), SUPERVISING,
           notices=(Notice("urge", "{actor_unit}催办：请尽快处置", to=("handler", "owner")),)),
    Action("extend", "延期", _same((*ESCALATABLE, "suspended")), SUPERVISING, note_required=True,
           clocks=(ClockStep("extend"),), hotline=HotlineMessage("extended"),
           notices=(Notice("extended", "{actor_unit}批准延期{minutes}分钟：{note}", to=("handler",)),)),
    Action("reclassify", "重新分类", _same(sorted(OPEN_STATES)), SUPERVISING, clears_triage=True,
           clocks=(ClockStep("reapply"),), hotline=HotlineMessage("reclassified")),
    Action("cancel", "作废", {state: "cancelled" for state in sorted(OPEN_STATES)}, SUPERVISING, note_required=True,
           clears_triage=True, clocks=(ClockStep("cancel"),), hotline=HotlineMessage("cancelled")),
    # The sweeper's effects: no one takes them, the inbox hears them.
    Action("warn", "预警", notices=(Notice("warning", system_message="{metric}时限即将到期（{due}）",
                                          to=("owner", "handler")),)),
    Action("breach", "超期", notices=(Notice("breached", system_message="{metric}时限已超期", to=("owner", "handler")),)),
    Action("supervise", "督办", notices=(Notice("supervise", system_message="区级处置时限已到，事件列入督办"),)),
)

SPECS: dict[str, Action] = {action.name: action for action in _DECLARED}

# The transition table: TRANSITIONS[(state, action)] → the state after it, in declaration order
# (the order `allowed_actions` lists them in).
TRANSITIONS: dict[tuple[str, str], str] = {
    (before, action.name): after for action in _DECLARED for before, after in action.moves.items()
}
ACTIONS: tuple[str, ...] = tuple(sorted(action.name for action in _DECLARED if action.is_workflow))
ACTION_ROLES: dict[str, frozenset[str]] = {name: SPECS[name].roles for name in ACTIONS}
ACTION_LABELS: dict[str, str] = {name: SPECS[name].label for name in ACTIONS}
HANDLER_ACTIONS: frozenset[str] = frozenset(name for name in ACTIONS if SPECS[name].by_handler)
# Clock metric names people read (立案 / 本级处置 / 处置).
METRIC_LABELS: dict[str, str] = {"accept": "立案", "level": "本级处置", "resolve": "处置"}


def not_now(state: str, action: str) -> str:
    """Why `action` cannot be taken in `state`, for the person who tried."""
    return f"事件当前为“{STATE_LABELS[state]}”，不能执行“{SPECS[action].label}”"


def next_state(state: str, action: str, *, allowed_now: Callable[[], list[str]] | None = None) -> str:
    """The state after `action`, or InvalidTransition (409) saying why, with `allowed_now()` listed."""
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        extra = {} if allowed_now is None else {"allowed_actions": allowed_now()}
        raise InvalidTransition(not_now(state, action), errors={"action": [f"“{STATE_LABELS[state]}”状态下不允许此操作"]},
                                **extra) from None


def allowed_actions(state: str, roles: Iterable[str] | None = None) -> list[str]:
    """Actions possible from `state`, limited to those any of `roles` may take when given."""
    role_set = None if roles is None else set(roles)
    return [
        action
        for (from_state, action) in TRANSITIONS
        if from_state == state and (role_set is None or ACTION_ROLES[action] & role_set)
    ]


def field_changes(action: str, event: Any, now: datetime, to_state: str) -> dict[str, Any]:
    """The event columns `action` changes (besides state, owner and the action's own arguments).

    `event` is anything with the event's attributes (an ORM row, the demo's walk). An event that
    lands in `registered` has no handler: the owner (dispatching again) chooses one.
    """
    spec = SPECS[action]
    changes: dict[str, Any] = {}
    if spec.count is not None:
        changes[spec.count] = getattr(event, spec.count) + 1
    if spec.stamp is not None:
        changes[spec.stamp] = now
    for name in spec.clear:
        changes[name] = None
    if lands_without_handler(to_state) and getattr(event, "handler_id", None) is not None:
        changes["handler_id"] = None
    return changes


def lands_without_handler(to_state: str) -> bool:
    """Whether an event arriving in `to_state` loses its handler: a `registered` event waits for its
    owner to dispatch it (after a 退单, or a 上报 of a dispatched event)."""
    return to_state == "registered"
