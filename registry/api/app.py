"""The FastAPI application factory (JSON API + web pages). Never imports torch or workers."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from registry import __version__
from registry.api import problems
from registry.api.middleware import BodyLimitMiddleware
from registry.api.routers import base_models, blobs, jobs, system, tasks, versions
from registry.settings import Settings, get_settings
from registry.storage import get_store
from registry.web.routes import install as install_web

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_dirs()
    app = FastAPI(
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
