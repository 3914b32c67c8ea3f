"""GET /api/v1/sla/summary on a hand-built Monday, every figure checked by hand, on both databases.

Policies: 暴露垃圾 01001 accept 60 / each level 60 / resolve 240; 道路不洁 01002 accept 60 / levels 120 /
resolve 120 (working minutes; Mon 2026-03-02, 09:00–12:00 and 13:30–17:30). Everything is received at
09:00; the sweeper runs at 10:00, 11:00, 12:00 and 14:30; the report is read at 15:00.

E1 g111 01001: registered 09:30, resolved 09:50 → met, 50 minutes.
E2 g111 01002: resolved 09:40, reworked (返工) 09:45 — the resolve clock runs on from 09:40 — swept at
   11:00 (breached; its grid level clock escalates it to community c11), resolved 11:30 → breached, 150.
E3 g121 01001: dispatched, returned (退单) 09:20, dispatched again, resolved 09:55 → met, 55.
E4 g121 01001: nothing done. Sweeps move it g121 → c12 (10:00) → s1 (11:00) → district (12:00); at
   14:30 its resolve clock is breached and the district's time runs out (督办). Open and overdue.
E5 g211 01002: sweep 11:00 breaches resolve and moves it g211 → c21; c21 escalates it by hand to s2 at
   11:10. Open and overdue.
"""
from __future__ import annotations

import pytest

from tests.helpers import act, report, run_sweep

D, S1, S2 = "150299", "150299001", "150299002"
C11, C12, C21, C22 = "150299001001", "150299001002", "150299002001", "150299002002"


@pytest.fixture
def people(make_actor, policies):
    keys = {"w111": ("grid_worker", "g111"), "w121": ("grid_worker", "g121"), "w211": ("grid_worker", "g211"),
            "c11": ("supervisor", "c11"), "c12": ("supervisor", "c12"), "c21": ("supervisor", "c21"),
            "s1": ("supervisor", "s1"), "s2": ("supervisor", "s2"), "d": ("supervisor", "d"),
            "admin": ("admin", "d"), "h": ("handler", "s1")}
    return {key: make_actor(role, unit) for key, (role, unit) in keys.items()}


@pytest.fixture
def monday(app, people, edge_clock):
    """The scenario in the module docstring; returns the event ids."""
    p = people
    h = p["h"].user.id

    def at(text: str) -> None:
        edge_clock.set(text + ":00+08:00")

    def do(actor, eid, action, **body):
        response = act(actor, eid, action, **body)
        assert response.status_code == 200, (action, response.json)

    at("2026-03-02T09:00")
    e1 = report(p["w111"])["id"]
    e2 = report(p["w111"], category_code="01002")["id"]
    e3 = report(p["w121"], lat=40.025, lon=110.005)["id"]
    e4 = report(p["w121"], lat=40.025, lon=110.005)["id"]
    e5 = report(p["w211"], category_code="01002", lat=40.005, lon=110.045)["id"]

    at("2026-03-02T09:10")
    do(p["c11"], e2, "register")
    do(p["s1"], e3, "register")
    at("2026-03-02T09:15")
    do(p["c11"], e2, "dispatch", handler_id=h)
    do(p["s1"], e3, "dispatch", handler_id=h)
    at("2026-03-02T09:20")
    do(p["h"], e2, "accept")
    do(p["h"], e3, "return", note="非本单位职责")
    at("2026-03-02T09:25")
    do(p["s1"], e3, "dispatch", handler_id=h)
    at("2026-03-02T09:30")
    do(p["h"], e3, "accept")
    do(p["c11"], e1, "register")
    do(p["c11"], e1, "dispatch", handler_id=h)
    do(p["h"], e1, "accept")
    at("2026-03-02T09:40")
    do(p["h"], e2, "resolve")
    at("2026-03-02T09:45")
    do(p["w111"], e2, "rework", note="未清理干净")
    at("2026-03-02T09:50")
    do(p["h"], e1, "resolve")
    at("2026-03-02T09:55")
    do(p["h"], e3, "resolve")

    run_sweep(app, "2026-03-02T10:00")
    run_sweep(app, "2026-03-02T11:00")
    at("2026-03-02T11:10")
    do(p["c21"], e5, "escalate", note="需街道协调")
    at("2026-03-02T11:30")
    do(p["h"], e2, "resolve")
    run_sweep(app, "2026-03-02T12:00")
    run_sweep(app, "2026-03-02T14:30")
    at("2026-03-02T15:00")
    return {"e1": e1, "e2": e2, "e3": e3, "e4": e4, "e5": e5}


def row(code, name, level, received=0, resolved=0, on_time=0, rate=None, breached=0, overdue=0, out=0, out_timer=0,
        returns=0, reworks=0, median=None) -> dict:
    return {"code": code, "name": name, "level": level, "received": received, "resolved": resolved,
            "resolved_on_time": on_time, "on_time_rate": rate, "breached": breached, "open_overdue": overdue,
            "escalations_out": out, "escalations_out_timer": out_timer, "returns": returns, "reworks": reworks,
            "median_resolve_minutes": median}


MONDAY = "from=2026-03-02T00:00:00%2B08:00&to=2026-03-03T00:00:00%2B08:00"


def test_the_scenario_happened_as_described(people, monday):
    events = {k: people["admin"].get(f"/api/v1/events/{v}").json for k, v in monday.items()}
    assert [(e["state"], e["owner"]["code"]) for e in events.values()] == [
        ("resolved", "15029900100101"), ("resolved", C11), ("resolved", "15029900100201"), ("reported", D), ("reported", S2),
    ]
    assert events["e4"]["is_supervised"]
    clocks = {c["metric"]: c for c in people["admin"].get(f"/api/v1/events/{monday['e2']}/sla").json["clocks"] if c["metric"] == "resolve"}
    assert (clocks["resolve"]["state"], clocks["resolve"]["used_minutes"]) == ("breached", 150)


def test_district_summary_with_a_row_per_street(people, monday):
    response = people["d"].get(f"/api/v1/sla/summary?{MONDAY}")
    assert response.status_code == 200, response.json
    body = response.json
    assert (body["from"], body["to"], body["as_of"]) == ("2026-03-02T00:00:00+08:00", "2026-03-03T00:00:00+08:00", "2026-03-02T15:00:00+08:00")
    # Resolved E1 (50, met), E3 (55, met), E2 (150, breached): median 55, on time 2/3.
    # Breached: E2 (11:00), E5 (11:00), E4 (14:30). Out of the district: nothing ever leaves it.
    assert body["unit"] == row(D, "测试区", "district", received=5, resolved=3, on_time=2, rate=0.6667, breached=3, overdue=2,
                               returns=1, reworks=1, median=55)
    assert body["children"] == [
        # E4 left street s1 for the district at 12:00 (by the sweeper).
        row(S1, "测试街道1", "street", received=4, resolved=3, on_time=2, rate=0.6667, breached=2, overdue=1, out=1, out_timer=1,
            returns=1, reworks=1, median=55),
        # E5 went g211 → c21 (timer) → s2 (by hand): both stay inside s2.
        row(S2, "测试街道2", "street", received=1, breached=1, overdue=1),
    ]


def test_street_summary_with_a_row_per_community(people, monday):
    body = people["s1"].get(f"/api/v1/sla/summary?unit={S1}&{MONDAY}").json
    assert body["unit"]["code"] == S1 and body["unit"]["escalations_out"] == 1
    assert body["children"] == [
        # E1 (50) and E2 (150): the median of an even count is the mean of the middle two. E2's move
        # g111 → c11 stays inside c11.
        row(C11, "测试社区1-1", "community", received=2, resolved=2, on_time=1, rate=0.5, breached=1, reworks=1, median=100),
        # E4 went g121 → c12 (inside) → s1 (out of c12).
        row(C12, "测试社区1-2", "community", received=2, resolved=1, on_time=1, rate=1.0, breached=1, overdue=1, out=1,
            out_timer=1, returns=1, median=55),
    ]


def test_manual_escalations_count_out_but_not_as_timer(people, monday):
    body = people["s2"].get(f"/api/v1/sla/summary?{MONDAY}").json  # default unit: the caller's own
    assert body["unit"]["code"] == S2
    assert [(c["code"], c["escalations_out"], c["escalations_out_timer"]) for c in body["children"]] == [(C21, 1, 0), (C22, 0, 0)]
    grid = people["c21"].get(f"/api/v1/sla/summary?unit=15029900200101&{MONDAY}").json
    assert (grid["unit"]["escalations_out"], grid["unit"]["escalations_out_timer"], grid["children"]) == (1, 1, [])


def test_the_period_bounds_everything_but_the_overdue_snapshot(people, monday):
    tuesday = people["d"].get("/api/v1/sla/summary?from=2026-03-03T00:00:00%2B08:00&to=2026-03-04T00:00:00%2B08:00").json
    assert tuesday["unit"] == row(D, "测试区", "district", overdue=2)
    # Up to 11:00 exclusive: E1 and E3 resolved, nothing breached yet, E4's first move (g121 → c12) is inside s1.
    morning = people["d"].get("/api/v1/sla/summary?from=2026-03-02T00:00:00%2B08:00&to=2026-03-02T11:00:00%2B08:00").json
    assert morning["unit"] == row(D, "测试区", "district", received=5, resolved=2, on_time=2, rate=1.0, overdue=2,
                                  returns=1, reworks=1, median=52.5)


def test_default_period_is_this_month_up_to_now(people, monday):
    body = people["d"].get("/api/v1/sla/summary").json
    assert (body["from"], body["to"]) == ("2026-03-01T00:00:00+08:00", "2026-03-02T15:00:00+08:00")
    assert body["unit"]["received"] == 5 and body["unit"]["median_resolve_minutes"] == 55
    # An end at midnight on the 1st closes the month before: February, where nothing happened.
    february = people["d"].get("/api/v1/sla/summary?to=2026-03-01T00:00:00%2B08:00").json
    assert (february["from"], february["to"]) == ("2026-02-01T00:00:00+08:00", "2026-03-01T00:00:00+08:00")
    assert february["unit"] == row(D, "测试区", "district", overdue=2)


def test_summary_scope_roles_and_validation(people, monday):
    s1 = people["s1"]
    for code in (D, S2, C21, "nope"):
        response = s1.get(f"/api/v1/sla/summary?unit={code}")
        assert response.status_code == 404 and response.json["code"] == "not_found", code
    assert people["h"].get("/api/v1/sla/summary").status_code == 403
    worker = people["w111"].get("/api/v1/sla/summary").json
    assert worker["unit"]["code"] == "15029900100101" and worker["children"] == []
    for bad in ("from=2026-03-03T00:00:00%2B08:00&to=2026-03-02T00:00:00%2B08:00", "from=yesterday", "from=2026-03-02T16:00:00%2B08:00",
                "unit=", "period=month"):
        response = s1.get(f"/api/v1/sla/summary?{bad}")
        assert response.status_code == 422, (bad, response.json)
