"""Domain errors: what services raise, each with the HTTP status and code it maps to (the edge turns
them into the one JSON error payload, web/kit/errors.py)."""
from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of the errors services raise; each maps to one HTTP status."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, errors: dict[str, Any] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}
        self.extra = extra

    def payload(self) -> dict[str, Any]:
        body = {"code": self.code, "message": self.message, "errors": self.errors, "status": self.status}
        body.update(self.extra)
        return body


class BadRequest(DomainError):
    status, code = 400, "bad_request"


class Unauthorized(DomainError):
    status, code = 401, "unauthorized"


class Forbidden(DomainError):
    status, code = 403, "forbidden"


class NotFound(DomainError):
    status, code = 404, "not_found"


class Conflict(DomainError):
    status, code = 409, "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class StaleVersion(Conflict):
    code = "stale_version"


class Invalid(DomainError):
    """Input that is well-formed but not acceptable (unknown category, point outside territory…)."""

    status, code = 422, "invalid"


class RateLimited(DomainError):
    """Too many requests: 429, with the seconds to wait in `Retry-After`."""

    status, code = 429, "too_many_requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
