"""Bearer tokens with scopes (read, write, admin) and optional task-name prefixes (namespaces).

Secrets are stored as sha256 only and shown once on creation. The admin token comes from settings
(production requires one; the embedded default generates one under REGISTRY_HOME and prints it).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.errors import Conflict, Forbidden, InvalidInput, Unauthorized
from registry.hashing import sha256_bytes
from registry.models import ApiToken
from registry.names import validate_name
from registry.settings import Settings

SCOPES = ("read", "write", "admin")
_IMPLIED = {"admin": {"admin", "write", "read"}, "write": {"write", "read"}, "read": {"read"}}


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]
    prefixes: tuple[str, ...] = field(default_factory=tuple)

    def has(self, scope: str) -> bool:
        return any(scope in _IMPLIED[s] for s in self.scopes)

    def may_touch(self, task_name: str) -> bool:
        return not self.prefixes or any(task_name.startswith(p) for p in self.prefixes)


ANONYMOUS = Principal("anonymous", frozenset())


def authenticate(session: Session, settings: Settings, authorization: str | None) -> Principal:
    if not authorization:
        return ANONYMOUS
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("use 'Authorization: Bearer <token>'")
    secret = secret.strip()
    admin = settings.admin_token or (settings.embedded_admin_token() if settings.mode == "embedded" else None)
    if admin and hmac.compare_digest(secret.encode(), admin.encode()):
        return Principal("admin", frozenset({"admin"}))
    digest = sha256_bytes(secret.encode())
    token = session.scalar(select(ApiToken).where(ApiToken.secret_sha256 == digest))
    if token is None or token.revoked:
        raise Unauthorized("the token is unknown or revoked")
    return Principal(token.name, frozenset(token.scopes), tuple(token.prefixes))


def require(principal: Principal, scope: str, *, task_name: str | None = None) -> None:
    if principal is ANONYMOUS:
        raise Unauthorized(f"this call needs a token with the {scope!r} scope")
    if not principal.has(scope):
        raise Forbidden(f"token {principal.name!r} lacks the {scope!r} scope")
    if task_name is not None and not principal.may_touch(task_name):
        raise Forbidden(
            f"token {principal.name!r} may not touch task {task_name!r} (namespaces {list(principal.prefixes)})"
        )


def create_token(
    session: Session, *, name: str, scopes: list[str], prefixes: list[str] | None = None
) -> tuple[ApiToken, str]:
    name = validate_name(name, field="name")
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise InvalidInput(f"scopes must be a non-empty subset of {SCOPES}", field="scopes")
    for p in prefixes or []:
        if not p or not p.replace("-", "").replace("_", "").replace(".", "").isalnum() or p != p.lower():
            raise InvalidInput(f"namespace prefix {p!r} is not valid", field="prefixes")
    if session.scalar(select(ApiToken).where(ApiToken.name == name)) is not None:
        raise Conflict(f"token {name!r} already exists", field="name")
    secret = "ar_" + secrets.token_urlsafe(32)
    token = ApiToken(name=name, secret_sha256=sha256_bytes(secret.encode()), scopes=sorted(set(scopes)),
                     prefixes=prefixes or [], created_at=datetime.now(UTC))
    session.add(token)
    session.flush()
    return token, secret
