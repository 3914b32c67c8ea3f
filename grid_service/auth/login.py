"""Password login, TOTP second factor, refresh-token rotation, logout and lockout.

A login session is a `family` of tokens: a short-lived access token and a refresh token that is
rotated on every use (the old one is revoked; presenting a revoked one again revokes the whole
family: someone replayed it). Supervisors and admins (MFA_ROLES) need a TOTP code besides the
password (两种以上鉴别技术); until they enrol, a correct password only buys an `enrol` token that
the TOTP endpoints alone accept. Consecutive failures lock the account for a while; names that
belong to nobody lock the same way, so the answers never tell whether a name exists.

Services take the session and `now`, flush and never commit; failed attempts flush their counters
and then raise, and the edge commits those before answering.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import math
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import argon2
import pyotp
import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..infra import crypto
from ..infra.errors import Conflict, Forbidden, Invalid, RateLimited, Unauthorized
from .models import ApiToken, User
from .service import hash_token, issue_token

logger = logging.getLogger(__name__)

TOTP_PURPOSE = "totp"
TOTP_INTERVAL = 30
SESSION_KINDS = ("access", "refresh", "enrol")
_LOCKOUT_MEMORY = 86400  # seconds a nameless failure streak is remembered


# ---------------------------------------------------------------- errors


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("用户名或密码错误")


class TotpRequired(Unauthorized):
    code = "totp_required"

    def __init__(self) -> None:
        super().__init__("请输入动态验证码（totp_code）", {"totp_code": ["此账号必须填写"]})


class InvalidTotp(Unauthorized):
    code = "invalid_totp"

    def __init__(self) -> None:
        super().__init__("动态验证码错误或已使用", {"totp_code": ["错误、已过期或已使用"]})


class TotpUnavailable(Unauthorized):
    code = "totp_unavailable"

    def __init__(self) -> None:
        super().__init__("动态验证码密钥无法读取（SECRET_KEY 已更换？），请联系管理员执行 users reset-totp")


class InvalidRefresh(Unauthorized):
    code = "invalid_refresh_token"

    def __init__(self) -> None:
        super().__init__("登录已失效，请重新登录")


class TooManyAttempts(RateLimited):
    code = "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        minutes = max(1, -(-retry_after // 60))
        super().__init__(f"登录失败次数过多，请 {minutes} 分钟后再试", retry_after)


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int = 5
    lockout: timedelta = timedelta(minutes=15)
    access_ttl: timedelta = timedelta(minutes=15)
    session_idle: timedelta = timedelta(minutes=30)
    session_max: timedelta = timedelta(hours=12)
    enrol_ttl: timedelta = timedelta(minutes=10)
    mfa_roles: frozenset[str] = frozenset({"supervisor", "admin"})
    totp_issuer: str = "网格化服务管理平台"
    password_min_length: int = 10
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LoginPolicy:
        """The policy the settings of docs/security.md describe."""
        return cls(
            max_failures=max(1, int(config["LOGIN_MAX_FAILURES"])),
            lockout=timedelta(minutes=int(config["LOGIN_LOCKOUT_MINUTES"])),
            access_ttl=timedelta(minutes=int(config["ACCESS_TOKEN_MINUTES"])),
            session_idle=timedelta(minutes=int(config["SESSION_IDLE_MINUTES"])),
            session_max=timedelta(hours=int(config["SESSION_MAX_HOURS"])),
            enrol_ttl=timedelta(minutes=int(config["ENROL_TOKEN_MINUTES"])),
            mfa_roles=frozenset(r.strip() for r in str(config["MFA_ROLES"]).split(",") if r.strip()),
            totp_issuer=str(config["TOTP_ISSUER"]),
            password_min_length=int(config["PASSWORD_MIN_LENGTH"]),
            argon2_time_cost=int(config["ARGON2_TIME_COST"]),
            argon2_memory_kib=int(config["ARGON2_MEMORY_KIB"]),
            argon2_parallelism=int(config["ARGON2_PARALLELISM"]),
        )

    def hasher(self) -> argon2.PasswordHasher:
        return _hasher(self.argon2_time_cost, self.argon2_memory_kib, self.argon2_parallelism)


class AttemptStore(Protocol):
    """Counters for names that belong to nobody (the rate-limit storage fits)."""

    def incr(self, key: str, now: int, period: int) -> tuple[int, int]: ...

    def peek(self, key: str) -> tuple[int, int] | None: ...

    def clear(self, key: str) -> None: ...


@dataclass
class Tokens:
    """What a login, refresh or enrolment hands out; raw tokens are shown this once."""

    user: User
    access_token: str
    access_expires_at: datetime
    refresh_token: str | None = None
    refresh_expires_at: datetime | None = None
    totp_enrolment_required: bool = False


# ---------------------------------------------------------------- passwords


@functools.lru_cache(maxsize=4)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> argon2.PasswordHasher:
    return argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism,
                                 type=argon2.Type.ID)


@functools.lru_cache(maxsize=4)
def _dummy_hash(time_cost: int, memory_kib: int, parallelism: int) -> str:
    # Verified against when the name is unknown, so that answer takes as long as a wrong password.
    return _hasher(time_cost, memory_kib, parallelism).hash(secrets.token_urlsafe(16))


def hash_password(password: str, policy: LoginPolicy) -> str:
    return policy.hasher().hash(password)


def verify_password(stored: str | None, password: str, policy: LoginPolicy) -> bool:
    """Constant-work check: a missing hash still costs one argon2 verification."""
    target = stored or _dummy_hash(policy.argon2_time_cost, policy.argon2_memory_kib, policy.argon2_parallelism)
    try:
        return policy.hasher().verify(target, password) and stored is not None
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def password_problems(name: str, password: str, policy: LoginPolicy) -> list[str]:
    """Why `password` is too weak for `name` (口令复杂度), empty when it is acceptable."""
    problems = []
    if len(password) < policy.password_min_length:
        problems.append(f"至少 {policy.password_min_length} 个字符")
    if len(password) > 1024:
        problems.append("至多 1024 个字符")
    classes = sum((any(c.islower() for c in password), any(c.isupper() for c in password),
                   any(c.isdigit() for c in password), any(not c.isalnum() for c in password)))
    if classes < 3:
        problems.append("须包含大写字母、小写字母、数字、符号中的至少三类")
    if len(name) >= 3 and name.lower() in password.lower():
        problems.append("不能包含用户名")
    return problems


def set_password(session: Session, user: User, password: str, *, now: datetime, policy: LoginPolicy) -> None:
    """Set a new password (422 when too weak); unlocks the account and ends its login sessions."""
    problems = password_problems(user.name, password, policy)
    if problems:
        raise Invalid("密码不符合要求：" + "；".join(problems), {"password": problems})
    user.password_hash = hash_password(password, policy)
    user.password_changed_at = now
    unlock(session, user)
    revoke_sessions(session, user, now)


def unlock(session: Session, user: User) -> None:
    user.failed_logins = 0
    user.locked_until = None
    session.flush()


# ---------------------------------------------------------------- TOTP


def _seal_totp(app_secret: str, user: User, secret: str) -> str:
    return crypto.encrypt(app_secret, secret, purpose=TOTP_PURPOSE, aad=f"user:{user.id}")


def _open_totp(app_secrets: Iterable[str], user: User) -> str:
    try:
        return crypto.decrypt(app_secrets, user.totp_secret or "", purpose=TOTP_PURPOSE, aad=f"user:{user.id}")
    except ValueError:
        logger.error("the TOTP secret of user %s does not decrypt with SECRET_KEY or SECRET_KEY_FALLBACKS", user.name)
        raise TotpUnavailable() from None


def totp_step(secret: str, code: str, now: datetime) -> int | None:
    """The 30-second step (now, or one either side) whose code `code` is; None when none matches."""
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_INTERVAL)
    current = totp.timecode(now)
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _claim_step(session: Session, user: User, step: int) -> bool:
    """Record `step` as used; False when it (or a later step) was used before: a replayed code."""
    claimed = session.execute(
        sa.update(User)
        .where(User.id == user.id, sa.or_(User.totp_last_step.is_(None), User.totp_last_step < step))
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    if claimed:
        session.expire(user, ["totp_last_step"])
    return claimed


def begin_totp_enrolment(session: Session, user: User, password: str, *, now: datetime, policy: LoginPolicy,
                         app_secret: str, attempts: AttemptStore) -> tuple[str, str]:
    """A new pending TOTP secret for `user` (who re-enters the password); (secret, otpauth URI)."""
    _refuse_if_locked(user, now, attempts)
    if user.totp_confirmed_at is not None:
        raise Conflict("已启用动态验证码；如需更换，请管理员执行 users reset-totp", {"totp": ["已启用"]})
    if not verify_password(user.password_hash, password, policy):
        _record_failure(session, user, now, policy, attempts)
        raise Forbidden("密码错误", {"password": ["密码错误"]})
    secret = pyotp.random_base32()
    user.totp_secret = _seal_totp(app_secret, user, secret)
    user.totp_last_step = None
    session.flush()
    uri = pyotp.TOTP(secret, interval=TOTP_INTERVAL).provisioning_uri(name=user.name, issuer_name=policy.totp_issuer)
    return secret, uri


def confirm_totp(session: Session, user: User, caller: ApiToken, code: str, *, now: datetime, policy: LoginPolicy,
                 app_secrets: list[str], attempts: AttemptStore) -> Tokens:
    """Activate the pending secret with a first code; the caller's session is replaced by a full one."""
    _refuse_if_locked(user, now, attempts)
    if user.totp_confirmed_at is not None:
        raise Conflict("已启用动态验证码", {"totp": ["已启用"]})
    if user.totp_secret is None:
        raise Conflict("请先调用 /api/v1/auth/totp/setup 获取密钥", {"totp": ["尚未获取密钥"]})
    step = totp_step(_open_totp(app_secrets, user), code, now)
    if step is None or not _claim_step(session, user, step):
        _record_failure(session, user, now, policy, attempts)
        raise Invalid("动态验证码错误或已使用", {"code": ["错误、已过期或已使用"]})
    user.totp_confirmed_at = now
    _reset_failures(user)
    _revoke_caller(session, caller, now)
    return _new_session(session, user, now, policy)


def reset_totp(session: Session, user: User, *, now: datetime) -> None:
    """Forget the user's TOTP secret (lost phone); they enrol again at the next login."""
    user.totp_secret = None
    user.totp_confirmed_at = None
    user.totp_last_step = None
    revoke_sessions(session, user, now)


# ---------------------------------------------------------------- lockout


def _name_key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:40]


def _epoch(now: datetime) -> int:
    return math.floor(now.timestamp())


def _refuse_if_locked(user: User | None, now: datetime, attempts: AttemptStore, name: str = "",
                      policy: LoginPolicy | None = None) -> None:
    if user is not None:
        if user.locked_until is not None and user.locked_until > now:
            # Whole epoch seconds, computed like the unknown-name lock below, so both answers match.
            raise TooManyAttempts(_epoch(user.locked_until) - _epoch(now))
        return
    lock = attempts.peek(f"lockout:{_name_key(name)}")
    if lock is not None and policy is not None:
        until = lock[1] + int(policy.lockout.total_seconds())
        if until > _epoch(now):
            raise TooManyAttempts(until - _epoch(now))


def _record_failure(session: Session, user: User | None, now: datetime, policy: LoginPolicy,
                    attempts: AttemptStore, name: str = "") -> None:
    """Count one failed attempt; the `max_failures`-th locks the account (or the unknown name)."""
    if user is None:
        key = _name_key(name)
        failures, _ = attempts.incr(f"failures:{key}", _epoch(now), _LOCKOUT_MEMORY)
        if failures >= policy.max_failures:
            attempts.clear(f"failures:{key}")
            attempts.incr(f"lockout:{key}", _epoch(now), int(policy.lockout.total_seconds()))
        return
    failures = session.execute(
        sa.update(User).where(User.id == user.id).values(failed_logins=User.failed_logins + 1)
        .returning(User.failed_logins).execution_options(synchronize_session=False)
    ).scalar_one()
    if failures >= policy.max_failures:
        user.failed_logins = 0
        user.locked_until = now + policy.lockout
        logger.warning("account %s locked after %d failed logins", user.name, failures)
    else:
        session.expire(user, ["failed_logins"])
    session.flush()


def _reset_failures(user: User) -> None:
    if user.failed_logins or user.locked_until is not None:
        user.failed_logins = 0
        user.locked_until = None


# ---------------------------------------------------------------- sessions


def _new_session(session: Session, user: User, now: datetime, policy: LoginPolicy,
                 family: str | None = None, family_expires_at: datetime | None = None) -> Tokens:
    family = family or uuid.uuid4().hex
    family_end = family_expires_at or now + policy.session_max
    access_end = min(now + policy.access_ttl, family_end)
    refresh_end = min(now + policy.session_idle, family_end)
    access = issue_token(session, user, now=now, ttl=access_end - now, kind="access", family=family,
                         family_expires_at=family_end)
    refresh = issue_token(session, user, now=now, ttl=refresh_end - now, kind="refresh", family=family,
                          family_expires_at=family_end)
    return Tokens(user, access, access_end, refresh, refresh_end)


def login(session: Session, name: str, password: str, totp_code: str | None, *, now: datetime,
          policy: LoginPolicy, app_secrets: list[str], attempts: AttemptStore) -> Tokens:
    """Check the password (and the TOTP code where required) and open a login session."""
    user = session.scalar(sa.select(User).where(User.name == name))
    _refuse_if_locked(user, now, attempts, name, policy)
    if not verify_password(user.password_hash if user else None, password, policy) or user is None or not user.is_active:
        _record_failure(session, user, now, policy, attempts, name)
        raise InvalidCredentials()
    if user.role in policy.mfa_roles or user.totp_confirmed_at is not None:
        if user.totp_confirmed_at is None:
            _reset_failures(user)
            family = uuid.uuid4().hex
            ttl = policy.enrol_ttl
            token = issue_token(session, user, now=now, ttl=ttl, kind="enrol", family=family, family_expires_at=now + ttl)
            return Tokens(user, token, now + ttl, totp_enrolment_required=True)
        if not totp_code:
            raise TotpRequired()
        step = totp_step(_open_totp(app_secrets, user), totp_code, now)
        if step is None or not _claim_step(session, user, step):
            _record_failure(session, user, now, policy, attempts)
            raise InvalidTotp()
    _reset_failures(user)
    if policy.hasher().check_needs_rehash(user.password_hash or ""):
        user.password_hash = hash_password(password, policy)
    return _new_session(session, user, now, policy)


def revoke_family(session: Session, family: str, now: datetime) -> int:
    return session.execute(
        sa.update(ApiToken).where(ApiToken.family == family, ApiToken.revoked_at.is_(None)).values(revoked_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount


def revoke_sessions(session: Session, user: User, now: datetime) -> int:
    """End every login session of `user` (CLI tokens stay: revoke those with `users revoke`)."""
    count = session.execute(
        sa.update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.kind.in_(SESSION_KINDS), ApiToken.revoked_at.is_(None))
        .values(revoked_at=now).execution_options(synchronize_session=False)
    ).rowcount
    session.flush()
    return count


def _revoke_caller(session: Session, caller: ApiToken, now: datetime) -> None:
    if caller.family:
        revoke_family(session, caller.family, now)
    else:
        session.execute(sa.update(ApiToken).where(ApiToken.id == caller.id, ApiToken.revoked_at.is_(None))
                        .values(revoked_at=now).execution_options(synchronize_session=False))


def refresh(session: Session, raw: str, *, now: datetime, policy: LoginPolicy) -> Tokens:
    """Rotate a refresh token: the old one is revoked; a revoked one presented again ends its family."""
    row = session.scalar(sa.select(ApiToken).where(ApiToken.token_hash == hash_token(raw), ApiToken.kind == "refresh"))
    if row is None:
        raise InvalidRefresh()
    if row.revoked_at is not None:
        if revoke_family(session, row.family, now):
            logger.warning("revoked refresh token reused for user %s: its session family is revoked", row.user.name)
        raise InvalidRefresh()
    if row.expires_at <= now or not row.user.is_active:
        raise InvalidRefresh()
    claimed = session.execute(
        sa.update(ApiToken).where(ApiToken.id == row.id, ApiToken.revoked_at.is_(None)).values(revoked_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    if not claimed:  # a concurrent refresh with the same token won: treat it as a replay
        revoke_family(session, row.family, now)
        raise InvalidRefresh()
    return _new_session(session, row.user, now, policy, row.family, row.family_expires_at)


def logout(session: Session, caller: ApiToken | None, refresh_raw: str | None, *, now: datetime) -> None:
    """End the caller's session and/or the session of the refresh token given; 401 when neither is live."""
    ended = False
    if caller is not None:
        _revoke_caller(session, caller, now)
        ended = True
    if refresh_raw:
        row = session.scalar(sa.select(ApiToken).where(ApiToken.token_hash == hash_token(refresh_raw),
                                                       ApiToken.kind == "refresh"))
        if row is not None and row.family and (caller is None or row.user_id == caller.user_id):
            revoke_family(session, row.family, now)
            ended = True
    if not ended:
        raise InvalidRefresh()
    session.flush()
