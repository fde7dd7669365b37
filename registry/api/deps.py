"""Typed dependencies: settings, the request's session scope, the store, the caller."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from registry.auth.service import Principal, authenticate, require
from registry.db import read_scope, session_scope
from registry.settings import Settings
from registry.storage import ArtifactStore

READ_METHODS = ("GET", "HEAD", "OPTIONS")
T = TypeVar("T")


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(request: Request, settings: SettingsDep) -> Iterator[Session]:
    """The request's scope, the only place the API commits: after the handler returned (scope
    "function", before the response is sent), then after-commit work such as Celery messages."""
    with session_scope(settings, write=request.method not in READ_METHODS) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


StoreDep = Annotated[ArtifactStore, Depends(get_store)]


def get_principal(
    session: SessionDep, settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    return authenticate(session, settings, authorization)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def reader(principal: PrincipalDep, settings: SettingsDep) -> Principal:
    if not settings.public_reads:
        require(principal, "read")
    return principal


def writer(principal: PrincipalDep) -> Principal:
    require(principal, "write")
    return principal


def admin(principal: PrincipalDep) -> Principal:
    require(principal, "admin")
    return principal


ReaderDep = Annotated[Principal, Depends(reader)]
WriterDep = Annotated[Principal, Depends(writer)]
AdminDep = Annotated[Principal, Depends(admin)]


def page_limit(settings: SettingsDep, limit: Annotated[int, Query(ge=1)] = 50) -> int:
    return min(limit, settings.max_page_size)


LimitDep = Annotated[int, Depends(page_limit)]


_read_slots: dict[int, asyncio.Semaphore] = {}


async def hot_read(settings: Settings, authorization: str | None, fn: Callable[..., T], *args: Any,
                   **kwargs: Any) -> T:
    """For the hottest read routes (pull manifest, version list): the token check, the read session
    (:func:`registry.db.read_scope`: no transaction, no pre-ping on PostgreSQL) and
    ``fn(session, *args)`` in ONE hop to the thread pool instead of one per dependency, with at
    most ``settings.hot_read_slots`` running at once per process (the rest wait in the event loop in
    arrival order): on 2 cores, 40 threads fighting for the CPU only lengthen the tail."""

    def read(session: Session) -> T:
        principal = authenticate(session, settings, authorization)
        if not settings.public_reads:
            require(principal, "read")
        return fn(session, *args, **kwargs)

    def run() -> T:
        return read_scope(settings, read)

    if settings.hot_read_slots <= 0:
        return await run_in_threadpool(run)
    loop_id = id(asyncio.get_running_loop())
    slots = _read_slots.setdefault(loop_id, asyncio.Semaphore(settings.hot_read_slots))
    async with slots:
        return await run_in_threadpool(run)
