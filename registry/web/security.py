"""Page sessions and CSRF.

A user logs in by pasting an API token; it is kept in an HttpOnly, SameSite=Strict cookie and
checked on every write exactly like an ``Authorization: Bearer`` header (same
:func:`registry.auth.service.authenticate` / :func:`require`). Every POST form carries a CSRF
token: for a signed-in user an HMAC of the session token (per-session, stateless, never readable
by script because the cookie is HttpOnly); for the login form itself a double-submit nonce cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response
from sqlalchemy.orm import Session

from registry.auth.service import ANONYMOUS, Principal, authenticate
from registry.errors import Forbidden, Unauthorized
from registry.settings import Settings

SESSION_COOKIE = "ar_session"
NONCE_COOKIE = "ar_csrf"
CSRF_FIELD = "csrf_token"
SESSION_MAX_AGE = 12 * 3600


def session_token(request: Request) -> str | None:
    token = request.cookies.get(SESSION_COOKIE)
    return token.strip() if token and token.strip() else None


def principal_from_cookie(request: Request, session: Session, settings: Settings) -> Principal:
    """The signed-in principal, or ANONYMOUS (a stale or revoked cookie counts as signed out)."""
    cached = getattr(request.state, "web_principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    token = session_token(request)
    principal = ANONYMOUS
    if token:
        try:
            principal = authenticate(session, settings, f"Bearer {token}")
        except Unauthorized:
            principal = ANONYMOUS
    request.state.web_principal = principal
    return principal


def _session_csrf(token: str) -> str:
    key = hashlib.sha256(b"adapter-registry-web-csrf\0" + token.encode()).digest()
    return hmac.new(key, b"csrf-v1", hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    """The token to embed in forms on this page (and remember to set the nonce cookie if needed)."""
    token = session_token(request)
    if token:
        return _session_csrf(token)
    nonce = request.cookies.get(NONCE_COOKIE) or getattr(request.state, "new_nonce", None)
    if not nonce:
        nonce = secrets.token_urlsafe(24)
        request.state.new_nonce = nonce
    return nonce


def apply_cookies(request: Request, response: Response) -> None:
    nonce = getattr(request.state, "new_nonce", None)
    if nonce:
        response.set_cookie(NONCE_COOKIE, nonce, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")


def check_csrf(request: Request, submitted: str | None, *, login: bool = False) -> None:
    """Raise Forbidden unless ``submitted`` matches this browser's session (or login nonce)."""
    token = session_token(request)
    candidates = [_session_csrf(token)] if token else []
    if login:  # the login form of a signed-out browser uses the nonce cookie
        candidates.append(request.cookies.get(NONCE_COOKIE) or "")
    ok = bool(submitted) and any(
        c and hmac.compare_digest(c.encode(), (submitted or "").encode()) for c in candidates
    )
    if not ok:
        raise Forbidden("the form has expired or did not come from this site; reload the page and try again",
                        field=CSRF_FIELD)


def set_session(request: Request, response: Response, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_MAX_AGE, httponly=True, samesite="strict",
                        path="/", secure=request.url.scheme == "https")
    response.delete_cookie(NONCE_COOKIE, path="/")


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")
