"""`flask users list`: who can log in how, without ever showing a token."""
from __future__ import annotations

from datetime import timedelta

import pytest

from grid_service.auth.login import LoginPolicy, set_password
from grid_service.auth.service import create_user, issue_token
from grid_service.infra.db import db
from tests.helpers import T0


@pytest.fixture
def people(app, territory):
    app.config.update(ARGON2_TIME_COST=1, ARGON2_MEMORY_KIB=1024, ARGON2_PARALLELISM=1)
    policy = LoginPolicy.from_config(app.config)
    worker = create_user(db.session, name="li.wei", display_name="李伟", role="grid_worker",
                         unit_code=territory["g111"].code, now=T0)
    set_password(db.session, worker, "Correct-horse-42", now=T0, policy=policy)
    boss = create_user(db.session, name="zhao.min", display_name="赵敏", role="supervisor",
                       unit_code=territory["s2"].code, now=T0)
    set_password(db.session, boss, "Correct-horse-43", now=T0, policy=policy)
    boss.totp_secret, boss.totp_confirmed_at = "sealed", T0
    script = create_user(db.session, name="sync-bot", role="handler", unit_code=territory["s1"].code, now=T0)
    script.is_active = False
    tokens = [issue_token(db.session, user, now=T0, ttl=timedelta(days=30)) for user in (worker, boss, script)]
    db.session.commit()
    return tokens


def rows_of(output: str) -> dict[str, list[str]]:
    """The table's rows by login name, split on the runs of spaces between columns."""
    lines = output.strip().splitlines()
    assert lines[0].split() == ["name", "display", "name", "role", "unit", "active", "password", "totp"]
    assert set(lines[1]) <= {"-", " "}
    return {line.split()[0]: line.split() for line in lines[2:]}


def test_users_list_shows_each_users_unit_and_how_they_log_in_but_never_a_token(runner, territory, people):
    result = runner.invoke(args=["users", "list"])
    assert result.exit_code == 0, result.output
    rows = rows_of(result.stdout)
    g111, s1, s2 = territory["g111"], territory["s1"], territory["s2"]
    assert rows["li.wei"] == ["li.wei", "李伟", "grid_worker", g111.code, g111.name, "yes", "yes", "no"]
    assert rows["zhao.min"] == ["zhao.min", "赵敏", "supervisor", s2.code, s2.name, "yes", "yes", "yes"]
    assert rows["sync-bot"] == ["sync-bot", "sync-bot", "handler", s1.code, s1.name, "no", "no", "no"]
    assert list(rows) == ["sync-bot", "li.wei", "zhao.min"]  # by unit (territory order), then name
    for token in people:
        assert token not in result.output
    assert "gs_" not in result.output and "sealed" not in result.output


def test_users_list_filters_by_role_and_by_subtree(runner, territory, people):
    by_role = runner.invoke(args=["users", "list", "--role", "supervisor"])
    assert list(rows_of(by_role.stdout)) == ["zhao.min"]
    street = runner.invoke(args=["users", "list", "--unit", territory["s1"].code])
    assert list(rows_of(street.stdout)) == ["sync-bot", "li.wei"]  # the street and its grid
    unknown = runner.invoke(args=["users", "list", "--unit", "999"])
    assert unknown.exit_code == 1 and "999" in unknown.output
