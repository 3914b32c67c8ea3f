"""Auth API: password login, TOTP enrolment, refresh-token rotation, logout; per-user rate limits."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import marshmallow as ma
from flask import Flask, current_app, request
from flask.views import MethodView

from ...auth import login as auth
from ...auth.models import ApiToken
from ...auth.service import live_token
from ...infra.db import db
from ...infra.errors import DomainError, Unauthorized
from ..kit.blueprint import GridBlueprint
from ..kit.errors import ErrorSchema
from ..kit.fields import LocalDateTime, Str
from ..kit.request import BEARER, current_user, request_now
from ..kit.security import enforce_rate_limit, limiter

blp = GridBlueprint("auth", __name__, url_prefix="/api/v1/auth",
                    description="Login (口令 + 动态验证码), token refresh and logout")

T = TypeVar("T")
TOTP_CODE = ma.validate.Regexp(r"^[0-9]{6}$", error="应为 6 位数字")
OPTIONAL_BEARER = [{"bearerAuth": []}, {}]
# Where the per-user limit counts: the API, not the health probe, the OpenAPI document or the docs page.
LIMITED_PATHS = ("/api/", "/open311/")


# ---------------------------------------------------------------- schemas


class LoginSchema(ma.Schema):
    name = Str(required=True, validate=ma.validate.Length(1, 64), metadata={"example": "zhang.wei"})
    password = Str(required=True, strip=False, load_only=True, validate=ma.validate.Length(1, 1024))
    totp_code = Str(validate=TOTP_CODE, metadata={"description": "动态验证码: required for supervisors and admins", "example": "123456"})


class RefreshSchema(ma.Schema):
    refresh_token = Str(required=True, validate=ma.validate.Length(1, 200))


class LogoutSchema(ma.Schema):
    refresh_token = Str(validate=ma.validate.Length(1, 200), metadata={"description": "Also end this refresh token's session"})


class TotpSetupSchema(ma.Schema):
    password = Str(required=True, strip=False, load_only=True, validate=ma.validate.Length(1, 1024),
                   metadata={"description": "Your password again"})


class TotpSetupResultSchema(ma.Schema):
    secret = ma.fields.String(required=True, metadata={"description": "Base32 secret, for typing into the app by hand"})
    otpauth_uri = ma.fields.String(required=True, metadata={"description": "otpauth:// URI for a QR code; shown this once"})


class TotpConfirmSchema(ma.Schema):
    code = Str(required=True, validate=TOTP_CODE, metadata={"description": "The code the app shows now"})


class TokenUserSchema(ma.Schema):
    name = ma.fields.String(required=True)
    display_name = ma.fields.String(required=True)
    role = ma.fields.String(required=True)
    unit_code = ma.fields.Function(lambda u: u.unit.code, required=True)


class TokenSchema(ma.Schema):
    token_type = ma.fields.Constant("Bearer", required=True)
    access_token = ma.fields.String(required=True, metadata={"description": "Send as `Authorization: Bearer …`"})
    expires_in = ma.fields.Function(lambda t: _seconds_left(t.access_expires_at), required=True,
                                    metadata={"description": "Seconds the access token lives"})
    expires_at = LocalDateTime(attribute="access_expires_at", required=True)
    refresh_token = ma.fields.String(required=True, allow_none=True,
                                     metadata={"description": "Single use: POST it to /auth/refresh for a new pair"})
    refresh_expires_at = LocalDateTime(required=True, allow_none=True)
    totp_enrolment_required = ma.fields.Boolean(required=True, metadata={
        "description": "true: the access token only reaches /auth/totp/setup and /auth/totp/confirm"})
    user = ma.fields.Nested(TokenUserSchema, required=True)


def _seconds_left(instant) -> int:
    return max(0, int((instant - request_now()).total_seconds()))


# ---------------------------------------------------------------- helpers


def _policy() -> auth.LoginPolicy:
    return auth.LoginPolicy.from_config(current_app.config)


def _app_secrets() -> list[str]:
    config = current_app.config
    return [str(config["SECRET_KEY"]), *(str(k) for k in config.get("SECRET_KEY_FALLBACKS") or [])]


def _client_ip() -> str:
    # Behind a reverse proxy, configure Werkzeug's ProxyFix so that this is the caller's address.
    return request.remote_addr or "unknown"


def _caller_token(kinds: tuple[str, ...], *, required: bool = True) -> ApiToken | None:
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        if required:
            raise Unauthorized("缺少访问令牌（Authorization: Bearer …）")
        return None
    return live_token(db.session, raw.strip(), request_now(), kinds)


def _committed(work: Callable[[], T]) -> T:
    """Run `work` and commit; a refused attempt still commits what it recorded (failure counts, revocations)."""
    try:
        result = work()
    except DomainError:
        db.session.commit()
        raise
    db.session.commit()
    return result


@blp.after_request
def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


# ---------------------------------------------------------------- views


@blp.route("/login")
class Login(MethodView):
    @blp.arguments(LoginSchema())
    @blp.response(200, TokenSchema())
    @blp.alt_response(401, schema=ErrorSchema, description=(
        "invalid_credentials (wrong name or password: the same answer either way), totp_required, invalid_totp"))
    @blp.alt_response(429, schema=ErrorSchema, description=(
        "too_many_attempts (the account, or the name, is locked for a while) or too_many_requests (this address); see Retry-After"))
    def post(self, data):
        """Log in with name and password (and the TOTP code for supervisors and admins)."""
        now = request_now()
        enforce_rate_limit("login", _client_ip(), now)
        return _committed(lambda: auth.login(
            db.session, data["name"], data["password"], data.get("totp_code"), now=now, policy=_policy(),
            app_secrets=_app_secrets(), attempts=limiter()))


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.arguments(RefreshSchema())
    @blp.response(200, TokenSchema())
    @blp.alt_response(401, schema=ErrorSchema, description="Unknown, expired or already used refresh token (reuse ends the session)")
    @blp.alt_response(429, schema=ErrorSchema, description="Too many requests from this address; see Retry-After")
    def post(self, data):
        """Exchange a refresh token for a new access token and a new refresh token (the old one stops working)."""
        now = request_now()
        enforce_rate_limit("refresh", _client_ip(), now)
        return _committed(lambda: auth.refresh(db.session, data["refresh_token"], now=now, policy=_policy()))


@blp.route("/logout")
class Logout(MethodView):
    @blp.doc(security=OPTIONAL_BEARER)
    @blp.arguments(LogoutSchema(), required=False)
    @blp.response(204)
    @blp.alt_response(401, schema=ErrorSchema, description="Neither a live bearer token nor a known refresh token was given")
    def post(self, data):
        """End the session: the bearer token's, and the refresh token's if one is given."""
        now = request_now()
        caller = _caller_token(("access", "cli", "enrol"), required=False)
        auth.logout(db.session, caller, (data or {}).get("refresh_token"), now=now)
        db.session.commit()


@blp.route("/totp/setup")
class TotpSetup(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(TotpSetupSchema())
    @blp.response(200, TotpSetupResultSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(403, schema=ErrorSchema, description="Wrong password (counts as a failed login)")
    @blp.alt_response(409, schema=ErrorSchema, description="TOTP is already enrolled (an admin resets it)")
    @blp.alt_response(429, schema=ErrorSchema, description="Locked after failed attempts, or too many requests; see Retry-After")
    def post(self, data):
        """Start TOTP enrolment: a new secret and its otpauth URI (shown once), pending until confirmed."""
        now = request_now()
        caller = _caller_token(("access", "enrol"))
        enforce_rate_limit("login", _client_ip(), now)
        secret, uri = _committed(lambda: auth.begin_totp_enrolment(
            db.session, caller.user, data["password"], now=now, policy=_policy(), app_secret=_app_secrets()[0],
            attempts=limiter()))
        return {"secret": secret, "otpauth_uri": uri}


@blp.route("/totp/confirm")
class TotpConfirm(MethodView):
    @blp.doc(security=BEARER)
    @blp.arguments(TotpConfirmSchema())
    @blp.response(200, TokenSchema())
    @blp.alt_response(401, schema=ErrorSchema())
    @blp.alt_response(409, schema=ErrorSchema, description="Nothing to confirm (call setup first) or already enrolled")
    @blp.alt_response(429, schema=ErrorSchema, description="Locked after failed attempts, or too many requests; see Retry-After")
    def post(self, data):
        """Activate TOTP with the first code; answers with a new full session (the caller's token ends)."""
        now = request_now()
        caller = _caller_token(("access", "enrol"))
        enforce_rate_limit("login", _client_ip(), now)
        return _committed(lambda: auth.confirm_totp(
            db.session, caller.user, caller, data["code"], now=now, policy=_policy(), app_secrets=_app_secrets(),
            attempts=limiter()))


# ---------------------------------------------------------------- per-user limits


def limit_per_user() -> None:
    """before_request: count an API request with a valid bearer token against its user's limit."""
    counter = limiter()
    if not counter.enabled or not counter.limits.get("user") or "Authorization" not in request.headers:
        return
    if request.method == "OPTIONS" or not request.path.startswith(LIMITED_PATHS):
        return
    try:
        user = current_user()
    except DomainError:
        return  # the view answers 401 if it needs a caller
    enforce_rate_limit("user", user.id, request_now())


def register(app: Flask, api) -> None:
    """The auth endpoints, and the per-user rate limit on every request."""
    api.register_blueprint(blp)
    app.before_request(limit_per_user)
