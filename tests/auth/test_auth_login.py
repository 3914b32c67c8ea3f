"""Password login, lockout, refresh rotation, logout, TOTP for supervisors and admins, and the users CLI."""
from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
import sqlalchemy as sa

from grid_service.auth.login import LoginPolicy, set_password
from grid_service.auth.models import ApiToken, User
from grid_service.auth.service import create_user
from grid_service.infra import crypto
from grid_service.infra.db import db
from tests.helpers import T0

PASSWORD = "Correct-horse-42"
LOGIN = "/api/v1/auth/login"


@pytest.fixture
def fast_hashing(app):
    # Production argon2 parameters take ~0.1 s a hash; the tests only need the same code path.
    app.config.update(ARGON2_TIME_COST=1, ARGON2_MEMORY_KIB=1024, ARGON2_PARALLELISM=1)


@pytest.fixture
def make_login_user(app, territory, fast_hashing):
    def factory(role: str = "grid_worker", unit_key: str = "g111", name: str | None = None, password: str = PASSWORD) -> User:
        unit = territory[unit_key]
        user = create_user(db.session, name=name or f"{role}-{unit.code}", role=role, unit_code=unit.code, now=T0)
        set_password(db.session, user, password, now=T0, policy=LoginPolicy.from_config(app.config))
        db.session.commit()
        return user

    return factory


@pytest.fixture
def clock(edge_clock):
    edge_clock.set(T0)
    return edge_clock


def log_in(client, name, password=PASSWORD, **extra):
    return client.post(LOGIN, json={"name": name, "password": password} | extra)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def me(client, token):
    return client.get("/api/v1/me", headers=bearer(token))


def code_at(secret: str, instant, offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(instant, counter_offset=offset)


# ---------------------------------------------------------------- password login


def test_login_issues_a_short_access_token_and_a_refresh_token(client, make_login_user, clock):
    user = make_login_user()
    response = log_in(client, user.name)
    assert response.status_code == 200, response.json
    body = response.json
    assert body["token_type"] == "Bearer" and body["expires_in"] == 15 * 60
    assert body["totp_enrolment_required"] is False
    assert body["user"] == {"name": user.name, "display_name": user.name, "role": "grid_worker", "unit_code": "15029900100101"}
    assert response.headers["Cache-Control"] == "no-store"
    assert me(client, body["access_token"]).json["name"] == user.name
    # The refresh token only refreshes: it is not a bearer token.
    assert me(client, body["refresh_token"]).status_code == 401
    # Fifteen minutes later the access token is dead.
    clock.set(T0 + timedelta(minutes=15, seconds=1))
    assert me(client, body["access_token"]).status_code == 401


def test_the_password_is_stored_as_an_argon2id_hash(make_login_user):
    user = make_login_user()
    stored = db.session.scalar(sa.select(User.password_hash).where(User.id == user.id))
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_wrong_password_unknown_name_and_inactive_user_answer_alike(client, make_login_user, clock):
    user = make_login_user()
    inactive = make_login_user(name="gone")
    inactive.is_active = False
    db.session.commit()
    answers = [log_in(client, user.name, "Wrong-password-1"), log_in(client, "nobody-at-all"), log_in(client, "gone")]
    assert {r.status_code for r in answers} == {401}
    assert answers[0].json == answers[1].json == answers[2].json
    assert answers[0].json["code"] == "invalid_credentials"


def test_five_failures_lock_the_account_and_an_unknown_name_alike(client, make_login_user, clock):
    user = make_login_user()
    for name in (user.name, "no-such-user"):
        statuses = [log_in(client, name, "Wrong-password-1").status_code for _ in range(5)]
        assert statuses == [401] * 5, name
        locked = log_in(client, name)  # even the right password is refused now
        assert locked.status_code == 429, name
        assert locked.json["code"] == "too_many_attempts"
        assert locked.headers["Retry-After"] == str(15 * 60)
    # The two lock answers are the same, byte for byte.
    a, b = log_in(client, user.name), log_in(client, "no-such-user")
    assert (a.status_code, a.json, a.headers["Retry-After"]) == (b.status_code, b.json, b.headers["Retry-After"])
    # After the lockout the right password works again.
    clock.set(T0 + timedelta(minutes=15, seconds=2))
    assert log_in(client, user.name).status_code == 200


def test_a_success_resets_the_failure_count(client, make_login_user, clock):
    user = make_login_user()
    for _ in range(4):
        assert log_in(client, user.name, "Wrong-password-1").status_code == 401
    assert log_in(client, user.name).status_code == 200
    for _ in range(4):
        assert log_in(client, user.name, "Wrong-password-1").status_code == 401
    assert log_in(client, user.name).status_code == 200
    assert db.session.get(User, user.id).failed_logins == 0


def test_lockout_is_configurable(app, client, make_login_user, clock):
    app.config.update(LOGIN_MAX_FAILURES=2, LOGIN_LOCKOUT_MINUTES=1)
    user = make_login_user()
    assert [log_in(client, user.name, "Wrong-password-1").status_code for _ in range(3)] == [401, 401, 429]
    clock.set(T0 + timedelta(seconds=61))
    assert log_in(client, user.name).status_code == 200


@pytest.mark.parametrize("body", [
    {"name": "x"},
    {"password": PASSWORD},
    {"name": "x", "password": PASSWORD, "totp_code": "12ab56"},
    {"name": "x", "password": PASSWORD, "role": "admin"},
    {"name": "", "password": PASSWORD},
    {"name": "x", "password": "a\x00b"},
])
def test_malformed_login_is_422_and_counts_nothing(client, make_login_user, clock, body):
    user = make_login_user(name="x")
    response = client.post(LOGIN, json=body)
    assert response.status_code == 422, response.json
    assert db.session.get(User, user.id).failed_logins == 0


# ---------------------------------------------------------------- refresh and logout


def test_refresh_rotates_and_the_old_refresh_token_stops_working(client, make_login_user, clock):
    user = make_login_user()
    first = log_in(client, user.name).json
    clock.set(T0 + timedelta(minutes=10))
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.json
    pair = second.json
    assert pair["access_token"] != first["access_token"] and pair["refresh_token"] != first["refresh_token"]
    assert me(client, pair["access_token"]).status_code == 200
    clock.set(T0 + timedelta(minutes=11))
    third = client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert third.status_code == 200


def test_reusing_a_refresh_token_revokes_the_whole_session(client, make_login_user, clock):
    user = make_login_user()
    first = log_in(client, user.name).json
    rotated = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}).json
    replay = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401 and replay.json["code"] == "invalid_refresh_token"
    # The thief's replay ended the legitimate session too: its new tokens are dead.
    assert me(client, rotated["access_token"]).status_code == 401
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}).status_code == 401
    # Another login of the same user is another session and is untouched.
    other = log_in(client, user.name).json
    assert me(client, other["access_token"]).status_code == 200


def test_an_idle_session_expires_and_no_session_outlives_its_maximum(client, make_login_user, clock):
    user = make_login_user()
    tokens = log_in(client, user.name).json
    clock.set(T0 + timedelta(minutes=31))
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    # Active all day: refreshing every 20 minutes works until the 12-hour cap, then never again.
    clock.set(T0 + timedelta(hours=1))
    tokens = log_in(client, user.name).json
    at, refreshed = T0 + timedelta(hours=1), 0
    while True:
        at += timedelta(minutes=20)
        clock.set(at)
        response = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        if response.status_code != 200:
            break
        tokens, refreshed = response.json, refreshed + 1
    assert at <= T0 + timedelta(hours=13, minutes=20) and refreshed >= 30


@pytest.mark.parametrize("token", ["", "gs_nonsense", "x" * 200])
def test_refresh_with_an_unknown_token_is_401(client, make_login_user, clock, token):
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": token})
    assert response.status_code in (401, 422)
    assert response.json["code"] in ("invalid_refresh_token", "validation_error")


def test_logout_revokes_the_access_and_the_refresh_token(client, make_login_user, clock):
    user = make_login_user()
    tokens = log_in(client, user.name).json
    response = client.post("/api/v1/auth/logout", headers=bearer(tokens["access_token"]))
    assert response.status_code == 204
    assert me(client, tokens["access_token"]).status_code == 401
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    # Logging out with only the refresh token works too; with nothing at all it is 401.
    tokens = log_in(client, user.name).json
    assert client.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}).status_code == 204
    assert me(client, tokens["access_token"]).status_code == 401
    assert client.post("/api/v1/auth/logout").status_code == 401


# ---------------------------------------------------------------- TOTP


def enrol(client, name, now):
    """Log in without a code, enrol TOTP, confirm it; returns (secret, full tokens)."""
    enrolment = log_in(client, name)
    assert enrolment.status_code == 200, enrolment.json
    assert enrolment.json["totp_enrolment_required"] is True and enrolment.json["refresh_token"] is None
    token = enrolment.json["access_token"]
    setup = client.post("/api/v1/auth/totp/setup", headers=bearer(token), json={"password": PASSWORD})
    assert setup.status_code == 200, setup.json
    secret = setup.json["secret"]
    assert setup.json["otpauth_uri"].startswith("otpauth://totp/") and f"secret={secret}" in setup.json["otpauth_uri"]
    confirmed = client.post("/api/v1/auth/totp/confirm", headers=bearer(token), json={"code": code_at(secret, now)})
    assert confirmed.status_code == 200, confirmed.json
    assert me(client, token).status_code == 401  # the enrolment token is spent
    return secret, confirmed.json


@pytest.mark.parametrize("role", ["supervisor", "admin"])
def test_supervisors_and_admins_need_a_totp_code(client, make_login_user, clock, role):
    user = make_login_user(role, "c11")
    # Before enrolment a correct password only opens the enrolment endpoints.
    enrolment = log_in(client, user.name).json
    assert enrolment["totp_enrolment_required"] is True
    assert me(client, enrolment["access_token"]).status_code == 401
    assert client.get("/api/v1/events", headers=bearer(enrolment["access_token"])).status_code == 401
    secret, tokens = enrol(client, user.name, T0)
    assert me(client, tokens["access_token"]).json["role"] == role
    clock.set(T0 + timedelta(minutes=1))
    missing = log_in(client, user.name)
    assert missing.status_code == 401 and missing.json["code"] == "totp_required"
    good = log_in(client, user.name, totp_code=code_at(secret, T0 + timedelta(minutes=1)))
    assert good.status_code == 200 and good.json["totp_enrolment_required"] is False
    # The same code cannot be used twice.
    replay = log_in(client, user.name, totp_code=code_at(secret, T0 + timedelta(minutes=1)))
    assert replay.status_code == 401 and replay.json["code"] == "invalid_totp"


def test_a_code_one_step_either_side_is_accepted_two_steps_is_not(client, make_login_user, clock):
    user = make_login_user("supervisor", "s1")
    secret, _ = enrol(client, user.name, T0)
    now = T0 + timedelta(minutes=10)
    clock.set(now)
    assert log_in(client, user.name, totp_code=code_at(secret, now, -2)).json["code"] == "invalid_totp"
    assert log_in(client, user.name, totp_code=code_at(secret, now, -1)).status_code == 200
    assert log_in(client, user.name, totp_code=code_at(secret, now, +1)).status_code == 200
    # The current step is earlier than one already used: refused (codes only move forward).
    assert log_in(client, user.name, totp_code=code_at(secret, now)).json["code"] == "invalid_totp"


def test_wrong_codes_count_towards_the_lockout(client, make_login_user, clock):
    user = make_login_user("admin", "d")
    secret, _ = enrol(client, user.name, T0)
    right = code_at(secret, T0 + timedelta(minutes=5))
    clock.set(T0 + timedelta(minutes=5))
    wrong = "000000" if right != "000000" else "111111"
    assert [log_in(client, user.name, totp_code=wrong).status_code for _ in range(5)] == [401] * 5
    assert log_in(client, user.name, totp_code=right).status_code == 429


def test_handlers_and_grid_workers_log_in_with_a_password_alone(client, make_login_user, clock):
    for role, unit in (("handler", "s1"), ("grid_worker", "g111")):
        user = make_login_user(role, unit)
        body = log_in(client, user.name).json
        assert body["totp_enrolment_required"] is False and body["refresh_token"]


def test_the_totp_secret_is_stored_encrypted(app, client, make_login_user, clock):
    user = make_login_user("supervisor", "c11")
    secret, _ = enrol(client, user.name, T0)
    stored = db.session.scalar(sa.select(User.totp_secret).where(User.id == user.id))
    assert secret not in stored and stored.startswith("v1.")
    assert crypto.decrypt(app.config["SECRET_KEY"], stored, purpose="totp", aad=f"user:{user.id}") == secret
    with pytest.raises(ValueError):  # bound to the user: copied onto another user it does not open
        crypto.decrypt(app.config["SECRET_KEY"], stored, purpose="totp", aad="user:999")


def test_totp_setup_rules(client, make_login_user, clock):
    user = make_login_user("supervisor", "c11")
    token = log_in(client, user.name).json["access_token"]
    # Confirming before setup, and a wrong password at setup, are refused.
    assert client.post("/api/v1/auth/totp/confirm", headers=bearer(token), json={"code": "123456"}).status_code == 409
    wrong = client.post("/api/v1/auth/totp/setup", headers=bearer(token), json={"password": "Wrong-password-1"})
    assert wrong.status_code == 403
    assert db.session.get(User, user.id).failed_logins == 1
    # A wrong first code does not activate anything.
    secret = client.post("/api/v1/auth/totp/setup", headers=bearer(token), json={"password": PASSWORD}).json["secret"]
    bad = "000000" if code_at(secret, T0) != "000000" else "111111"
    assert client.post("/api/v1/auth/totp/confirm", headers=bearer(token), json={"code": bad}).status_code == 422
    assert db.session.get(User, user.id).totp_confirmed_at is None
    # After enrolment, setup again is a conflict (an admin resets TOTP instead).
    tokens = client.post("/api/v1/auth/totp/confirm", headers=bearer(token), json={"code": code_at(secret, T0)}).json
    again = client.post("/api/v1/auth/totp/setup", headers=bearer(tokens["access_token"]), json={"password": PASSWORD})
    assert again.status_code == 409
    # Without a token the endpoints are 401; a refresh token is not accepted there either.
    assert client.post("/api/v1/auth/totp/setup", json={"password": PASSWORD}).status_code == 401
    assert client.post("/api/v1/auth/totp/setup", headers=bearer(tokens["refresh_token"]), json={"password": PASSWORD}).status_code == 401


# ---------------------------------------------------------------- CLI


def test_cli_set_password_then_login(runner, client, territory, fast_hashing, clock):
    created = runner.invoke(args=["users", "create", "--name", "wang", "--role", "grid_worker", "--unit", "15029900100101"])
    assert created.exit_code == 0, created.output
    cli_token = created.output.strip().splitlines()[-1]
    assert me(client, cli_token).json["name"] == "wang"  # the script token from `users create` still works
    assert log_in(client, "wang").status_code == 401  # no password yet
    result = runner.invoke(args=["users", "set-password", "wang", "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert log_in(client, "wang").status_code == 200
    weak = runner.invoke(args=["users", "set-password", "wang", "--password-stdin"], input="short\n")
    assert weak.exit_code != 0 and "密码不符合要求" in weak.output
    assert log_in(client, "wang").status_code == 200  # the old password still stands
    prompted = runner.invoke(args=["users", "set-password", "wang"], input="Another-pass-99\nAnother-pass-99\n")
    assert prompted.exit_code == 0, prompted.output
    assert log_in(client, "wang", "Another-pass-99").status_code == 200
    assert runner.invoke(args=["users", "set-password", "nobody", "--password-stdin"], input=PASSWORD + "\n").exit_code != 0


def test_setting_a_password_ends_the_login_sessions_but_not_cli_tokens(runner, client, make_login_user, make_actor, clock):
    actor = make_actor("grid_worker", "g112", name="li")
    runner.invoke(args=["users", "set-password", "li", "--password-stdin"], input=PASSWORD + "\n")
    session = log_in(client, "li").json
    runner.invoke(args=["users", "set-password", "li", "--password-stdin"], input="Brand-new-pass-7\n")
    assert me(client, session["access_token"]).status_code == 401
    assert me(client, actor.token).status_code == 200


def test_cli_unlock(runner, client, make_login_user, clock):
    user = make_login_user()
    for _ in range(5):
        log_in(client, user.name, "Wrong-password-1")
    assert log_in(client, user.name).status_code == 429
    assert runner.invoke(args=["users", "unlock", user.name]).exit_code == 0
    assert log_in(client, user.name).status_code == 200


def test_cli_reset_totp_ends_sessions_and_asks_for_enrolment_again(runner, client, make_login_user, clock):
    user = make_login_user("supervisor", "c11")
    _, tokens = enrol(client, user.name, T0)
    result = runner.invoke(args=["users", "reset-totp", user.name])
    assert result.exit_code == 0, result.output
    assert me(client, tokens["access_token"]).status_code == 401
    assert log_in(client, user.name).json["totp_enrolment_required"] is True
    clock.set(T0 + timedelta(minutes=2))
    enrol(client, user.name, T0 + timedelta(minutes=2))  # a new phone
    assert runner.invoke(args=["users", "reset-totp", "nobody"]).exit_code != 0


def test_cli_tokens_of_supervisors_still_work_without_totp(make_actor, categories):
    # Minted on the server by an operator: the scripts' "API token" path.
    supervisor = make_actor("supervisor", "c11")
    assert supervisor.get("/api/v1/events").status_code == 200
    kinds = db.session.scalars(sa.select(ApiToken.kind).where(ApiToken.user_id == supervisor.user.id)).all()
    assert kinds == ["cli"]


def test_a_totp_secret_sealed_under_another_key_is_a_clear_401_not_a_crash(app, client, make_login_user, clock):
    user = make_login_user("supervisor", "c11")
    secret, _ = enrol(client, user.name, T0)
    app.config["SECRET_KEY"] = "a-new-key"
    clock.set(T0 + timedelta(minutes=1))
    response = log_in(client, user.name, totp_code=code_at(secret, T0 + timedelta(minutes=1)))
    assert response.status_code == 401 and response.json["code"] == "totp_unavailable"
    # The old key kept as a fallback still opens it.
    app.config["SECRET_KEY_FALLBACKS"] = ["test-secret"]
    assert log_in(client, user.name, totp_code=code_at(secret, T0 + timedelta(minutes=1))).status_code == 200
