"""The FastAPI application factory (JSON API + web pages). Never imports torch or workers."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from registry import __version__
from registry.api import problems
from registry.api.middleware import BodyLimitMiddleware
from registry.api.routers import base_models, blobs, jobs, system, tasks, versions
from registry.settings import Settings, get_settings
from registry.storage import get_store
from registry.web.routes import install as install_web

log = logging.getLogger(__name__)


def freeze_heap(when: str) -> None:
    """Collect, then move every surviving object to the GC's permanent generation: later
    collections (which stop the event loop) only walk what was allocated since."""
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info("gc.freeze %s: %d objects frozen in %.1f ms", when, gc.get_freeze_count(),
             1000 * (time.perf_counter() - t0))


def _lifespan(settings: Settings) -> object:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        later: asyncio.Task[None] | None = None
        if settings.gc_freeze:
            freeze_heap("after start-up")
            if settings.gc_refreeze_after_s > 0:

                async def refreeze() -> None:
                    await asyncio.sleep(settings.gc_refreeze_after_s)
                    freeze_heap("after warm-up")

                later = asyncio.create_task(refreeze())
        try:
            yield
        finally:
            if later is not None:
                later.cancel()

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_dirs()
    app = FastAPI(
        lifespan=_lifespan(settings),  # type: ignore[arg-type]
        title="Adapter Registry",
        version=__version__,
        description="Train adapters on a frozen base model on request; versions, aliases, lineage; "
        "pull by task name.",
    )
    app.state.settings = settings
    app.state.store = get_store(settings)
    problems.install(app)
    app.add_middleware(BodyLimitMiddleware, upload_limit=settings.max_upload_bytes)
    for module in (system, base_models, tasks, versions, jobs, blobs):
        app.include_router(module.router)
    app.include_router(tasks.datasets_router)
    install_web(app)
    return app
