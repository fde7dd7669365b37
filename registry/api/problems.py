"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from registry.errors import RegistryError, Unauthorized

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


def problem_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    body.setdefault("status", status)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _loc_to_field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(RegistryError)
    async def _registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        headers: dict[str, str] = {}
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="adapter-registry"'
        retry = exc.extra.get("retry_after")
        if retry is not None:
            headers["Retry-After"] = str(retry)
        body = exc.problem()
        body["instance"] = request.url.path
        return problem_response(exc.status, body, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            errors.append({"field": _loc_to_field(err.get("loc", ())), "message": err.get("msg", "")})
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return problem_response(422, {
            "type": "/problems/invalid-input",
            "title": "Invalid input",
            "detail": f"{first['field']}: {first['message']}",
            "field": first["field"],
            "errors": errors,
            "instance": request.url.path,
        })

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(exc.status_code, {
            "type": "about:blank",
            "title": str(exc.detail) if exc.status_code < 500 else "Server error",
            "detail": str(exc.detail),
            "instance": request.url.path,
        }, dict(exc.headers or {}))

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        log.info("integrity conflict on %s: %s", request.url.path, exc.orig)
        return problem_response(409, {
            "type": "/problems/conflict",
            "title": "Conflict",
            "detail": "the request conflicts with a row written at the same time; retry",
            "instance": request.url.path,
        })

    async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # An id or number larger than the database's integer type (SQLite raises OverflowError while
        # binding, PostgreSQL a DataError): the client's input is wrong, not the server.
        log.info("out-of-range value on %s: %s", request.url.path, exc)
        return problem_response(422, {
            "type": "/problems/invalid-input",
            "title": "Invalid input",
            "detail": "a number in the request is out of range",
            "instance": request.url.path,
        })

    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(DataError, _out_of_range)

    # PoolTimeout: every pooled connection stayed busy for REGISTRY_DB_POOL_TIMEOUT_S (overload).
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(OperationalError)
    async def _db_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.error("database error on %s: %s", request.url.path, exc)
        return problem_response(503, {
            "type": "/problems/unavailable",
            "title": "Service unavailable",
            "detail": "the database is unavailable or busy; retry",
            "instance": request.url.path,
        }, {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, {
            "type": "about:blank",
            "title": "Internal server error",
            "detail": "an unexpected error occurred; it has been logged",
            "instance": request.url.path,
        })
