"""One error hierarchy for the whole service.

Every error carries its HTTP status and a problem type so the API can render RFC 9457
``application/problem+json`` from one handler; services raise these and never HTTP exceptions.
"""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    status: int = 400
    type: str = "about:blank"
    title: str = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return body


class InvalidInput(RegistryError):
    status = 422
    type = "/problems/invalid-input"
    title = "Invalid input"


class NotFound(RegistryError):
    status = 404
    type = "/problems/not-found"
    title = "Not found"


class Conflict(RegistryError):
    status = 409
    type = "/problems/conflict"
    title = "Conflict"


class PayloadTooLarge(RegistryError):
    status = 413
    type = "/problems/payload-too-large"
    title = "Payload too large"


class Unauthorized(RegistryError):
    status = 401
    type = "/problems/unauthorized"
    title = "Unauthorized"


class Forbidden(RegistryError):
    status = 403
    type = "/problems/forbidden"
    title = "Forbidden"


class RateLimited(RegistryError):
    status = 429
    type = "/problems/rate-limited"
    title = "Too many requests"


class IntegrityFailure(RegistryError):
    """A stored or downloaded file does not match its recorded sha256."""

    status = 502
    type = "/problems/integrity"
    title = "Integrity check failed"


class BaseModelMismatch(RegistryError):
    status = 409
    type = "/problems/base-model-mismatch"
    title = "Base model mismatch"
