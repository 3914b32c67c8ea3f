"""Seed the demo district: territory (through the importer), categories, users and events.

`seed_demo` is idempotent: the territory import upserts by code (a second run finds every unit
unchanged), categories and users are added only when their code or name is missing, and events
are added only when asked for. Nothing here commits; the caller does.
"""
from __future__ import annotations

import base64
import binascii
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from ..auth.login import TOTP_PURPOSE, LoginPolicy, hash_password, password_problems
from ..auth.models import ApiToken, User
from ..auth.service import create_user, issue_token
from ..events.catalog import bump_catalog_version
from ..events.models import Category
from ..hotline.service import list_mappings, set_mapping
from ..infra import crypto
from ..infra.errors import Invalid
from ..open311.attributes import seed_demo_attributes
from ..sla.defaults import CATEGORY_LIMITS, ensure_default_policies
from ..sla.engine import SlaEngine, scope_key
from ..sla.models import Policy
from ..sla.policies import PolicyChange, save_policy
from ..territory.importer import ImportReport, import_units
from .data import CATEGORIES, DEPARTMENTS, HOTLINE_CATEGORIES, person_name
from .events import seed_events
from .geography import CODE_DIGITS, DISTRICT_CODE, STREETS, demo_feature_collection, demo_territory

logger = logging.getLogger(__name__)

DEFAULT_RNG_SEED = 150204
DEFAULT_TOKEN_TTL = timedelta(days=30)
DEFAULT_TIMEZONE = "Asia/Shanghai"
# The label of the tokens the demo seed issues: it tells the demo's users from those an operator created.
DEMO_TOKEN_LABEL = "demo"
# Demo logins (DEMO_PASSWORD, DEMO_TOTP_SECRET): public, documented values, given only to the users the
# demo seed creates. A real user never gets them (`flask users create` sets no password).
DEFAULT_DEMO_PASSWORD = "Qingshan-Demo-1"
DEFAULT_DEMO_TOTP_SECRET = "QINGSHAN2DEMO3GRID4SERVICE5TOTP7"


@dataclass(frozen=True, slots=True)
class DemoLogin:
    """How the demo users log in: one password for all and, for the roles that need a second factor
    (MFA_ROLES), one TOTP secret, already enrolled; None leaves them to enrol at their first login."""

    password: str
    policy: LoginPolicy
    app_secret: str  # SECRET_KEY: seals the TOTP secret like an enrolment does
    totp_secret: str | None = None


@dataclass(frozen=True, slots=True)
class NewUser:
    """A demo user created by this run, with the only copy of their token."""

    name: str
    display_name: str
    role: str
    unit_code: str
    unit_name: str
    token: str


@dataclass(slots=True)
class SeedReport:
    """What one `seed_demo` run did."""

    territory: ImportReport = field(default_factory=ImportReport)
    categories_created: int = 0
    attributes_created: int = 0  # Open311 questions of the demo 小类
    policies_created: int = 0  # per-小类 time limits from practice (CATEGORY_LIMITS)
    hotline_mappings_created: int = 0  # 12345 category codes mapped onto the demo 小类
    users: list[NewUser] = field(default_factory=list)
    passwords_set: int = 0  # demo users given the demo password (DEMO_PASSWORD)
    totp_enrolled: int = 0  # demo supervisors and admins given the demo TOTP secret (DEMO_TOTP_SECRET)
    events_created: int = 0
    history_created: int = 0
    clocks_created: int = 0
    escalations_created: int = 0  # by the timer, in the events' past
    event_states: Counter = field(default_factory=Counter)


def seed_demo(session: Session, *, now: datetime, events: int = 0, rng_seed: int = DEFAULT_RNG_SEED,
              token_ttl: timedelta = DEFAULT_TOKEN_TTL, timezone: str = DEFAULT_TIMEZONE,
              progress: Callable[[int], None] | None = None, sla: SlaEngine | None = None,
              login: DemoLogin | None = None) -> SeedReport:
    """Create whatever of the demo district is missing, plus `events` new events with their SLA clocks
    (from `sla`, by default the app's engine); with `login`, the demo users can log in. Never commits."""
    report = SeedReport()
    report.territory = seed_territory(session, now=now)
    report.categories_created = seed_categories(session, now=now)
    report.attributes_created = seed_demo_attributes(session, now=now)
    report.hotline_mappings_created = seed_hotline_mappings(session, now=now)
    report.users = seed_users(session, now=now, token_ttl=token_ttl)
    if login is not None:
        report.passwords_set, report.totp_enrolled = seed_logins(session, login, now=now)
    sla = sla or current_app.extensions["sla"]
    report.policies_created = seed_policies(session, sla, now=now)
    if events > 0:
        written = seed_events(session, events, now=now, rng_seed=rng_seed, sla=sla,
                              timezone=timezone, progress=progress)
        report.events_created = events
        report.history_created, report.clocks_created = written.history, written.clocks
        report.escalations_created, report.event_states = written.escalations, written.states
    logger.info("demo seed: %d units created, %d categories, %d users, %d events",
                report.territory.created, report.categories_created, len(report.users), report.events_created)
    return report


def seed_territory(session: Session, *, now: datetime) -> ImportReport:
    """Import the demo district through the territory importer (the same checks as any district)."""
    return import_units(session, demo_feature_collection(), now=now, code_digits=CODE_DIGITS)


def seed_policies(session: Session, sla: SlaEngine, *, now: datetime) -> int:
    """Install the practice time limits of the demo 小类 that have them (CATEGORY_LIMITS: 暴露垃圾 4
    working hours, 道路不洁 2, 占道经营 1 working day, 私搭乱建 20 …) for normal priority; urgent cases
    keep the 24×7 `*|urgent` policy. A scope that has ever had a policy is left alone, so an admin's
    edits survive a second seed. Returns how many were created."""
    ensure_default_policies(session, now)
    accept = session.scalar(sa.select(Policy.accept_minutes).where(Policy.scope == "*|*", Policy.is_current.is_(True)))
    known = set(session.scalars(sa.select(Policy.scope)))
    created = 0
    for major in CATEGORIES:
        for minor in major.minors:
            limits = CATEGORY_LIMITS.get(minor.name)
            if limits is None or scope_key(minor.code, "normal") in known:
                continue
            resolve, levels = limits
            save_policy(session, sla, PolicyChange(category_code=minor.code, priority="normal", accept_minutes=accept,
                                                   level_minutes=dict(levels), resolve_minutes=resolve,
                                                   note=f"{minor.name}：数字化城市管理实践时限"), actor=None, now=now)
            created += 1
    if created:
        sla.invalidate()  # the events seeded next read the new limits at once
    return created


def seed_hotline_mappings(session: Session, *, now: datetime) -> int:
    """Map the demo 12345 platform's category codes (HOTLINE_CATEGORIES) onto the demo 小类, so its
    petitions are not flagged `unmapped_category`. A code that is mapped already is left alone, so an
    admin's changes survive a second seed. Returns how many were added."""
    known = {row.external_code for row in list_mappings(session)}
    existing = set(session.scalars(sa.select(Category.code)))
    created = 0
    for external_code, name, category_code in HOTLINE_CATEGORIES:
        if external_code in known or category_code not in existing:
            continue
        set_mapping(session, external_code, category_code, note=name, now=now)
        created += 1
    return created


def seed_categories(session: Session, *, now: datetime) -> int:
    """Add the demo 大类/小类 whose codes are missing; returns how many were added."""
    existing = {code: category_id for code, category_id in session.execute(sa.select(Category.code, Category.id))}
    created = 0
    for major_order, major in enumerate(CATEGORIES, start=1):
        if major.code not in existing:
            row = Category(code=major.code, name=major.name, level="major", parent_id=None,
                           description=f"{major.kind}：{major.description}", keywords=major.kind,
                           is_active=True, sort_order=major_order * 100)
            session.add(row)
            session.flush()
            existing[major.code] = row.id
            created += 1
        for minor_order, minor in enumerate(major.minors, start=1):
            if minor.code in existing:
                continue
            session.add(Category(code=minor.code, name=minor.name, level="minor", parent_id=existing[major.code],
                                 description=minor.description, keywords=minor.keywords, is_active=True,
                                 sort_order=major_order * 100 + minor_order))
            created += 1
    if created:
        session.flush()
        bump_catalog_version(session, now)
    return created


@dataclass(frozen=True, slots=True)
class UserSpec:
    """A demo account: login name, name shown, role and the code of its unit."""

    name: str
    display_name: str
    role: str
    unit_code: str


def demo_users() -> list[UserSpec]:
    """An admin; supervisors for the district, every street and one community per street; two
    grid workers per street; and per street a handler for each department (环卫所, 城管中队, 市政所)."""
    rng = random.Random("grid-service demo users")
    taken: set[str] = set()

    def person() -> str:
        while (name := person_name(rng)) in taken:
            pass
        taken.add(name)
        return name

    territory = demo_territory()
    communities = territory.by_level("community")
    grids = territory.by_level("grid")
    specs = [
        UserSpec("admin", "区网格化管理中心管理员", "admin", DISTRICT_CODE),
        UserSpec(f"sup-{DISTRICT_CODE}", person(), "supervisor", DISTRICT_CODE),
    ]
    for street in STREETS:
        street_code = DISTRICT_CODE + street.number
        community = next(c for c in communities if c.parent_code == street_code)
        specs.append(UserSpec(f"sup-{street_code}", person(), "supervisor", street_code))
        specs.append(UserSpec(f"sup-{community.code}", person(), "supervisor", community.code))
        specs.extend(UserSpec(f"wg-{grid.code}", person(), "grid_worker", grid.code)
                     for grid in [g for g in grids if g.parent_code == community.code][:2])
        specs.extend(UserSpec(f"{key}-{street_code}", f"{street.name}{department}", "handler", street_code)
                     for key, department in DEPARTMENTS.items())
    return specs


def seed_users(session: Session, *, now: datetime, token_ttl: timedelta) -> list[NewUser]:
    """Create the missing demo users, each with a fresh token; existing users are left alone."""
    existing = set(session.scalars(sa.select(User.name)))
    created = []
    for spec in demo_users():
        if spec.name in existing:
            continue
        user = create_user(session, name=spec.name, role=spec.role, unit_code=spec.unit_code, now=now,
                           display_name=spec.display_name)
        token = issue_token(session, user, now=now, ttl=token_ttl, label=DEMO_TOKEN_LABEL)
        created.append(NewUser(user.name, user.display_name, user.role, spec.unit_code, user.unit.name, token))
    return created


def seed_logins(session: Session, login: DemoLogin, *, now: datetime) -> tuple[int, int]:
    """Give the demo's own users (those holding a token of the demo seed) without a password the demo
    password, and those of them in MFA_ROLES without TOTP the demo TOTP secret, enrolled. Users an
    operator created, and any password or TOTP already set, are left alone. (passwords, TOTP) set."""
    specs = {spec.name for spec in demo_users()}
    problems = sorted({problem for name in specs for problem in password_problems(name, login.password, login.policy)})
    if problems:
        raise Invalid("DEMO_PASSWORD 不符合密码要求：" + "；".join(problems), {"DEMO_PASSWORD": problems})
    if login.totp_secret is not None:
        _check_base32(login.totp_secret)
    demo_user_ids = sa.select(ApiToken.user_id).where(ApiToken.label == DEMO_TOKEN_LABEL)
    users = session.scalars(sa.select(User).where(User.name.in_(sorted(specs)), User.id.in_(demo_user_ids))
                            .order_by(User.id)).all()
    # One hash for all: the password is public anyway, and argon2 costs ~0.1 s a hash.
    hashed = None
    passwords = totps = 0
    for user in users:
        if user.password_hash is None:
            hashed = hashed or hash_password(login.password, login.policy)
            user.password_hash, user.password_changed_at = hashed, now
            passwords += 1
        if login.totp_secret is not None and user.role in login.policy.mfa_roles and user.totp_secret is None:
            user.totp_secret = crypto.encrypt(login.app_secret, login.totp_secret, purpose=TOTP_PURPOSE, aad=f"user:{user.id}")
            user.totp_confirmed_at, user.totp_last_step = now, None
            totps += 1
    session.flush()
    return passwords, totps


def _check_base32(secret: str) -> None:
    try:
        base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    except (binascii.Error, ValueError):
        raise Invalid("DEMO_TOTP_SECRET 应为 Base32 编码（A–Z、2–7）",
                      {"DEMO_TOTP_SECRET": ["not a Base32 secret"]}) from None
