from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from registry import __version__
from registry.api.deps import AdminDep, ReaderDep, SessionDep
from registry.auth.service import create_token
from registry.basemodels import repository as base_models_repo
from registry.datasets import repository as datasets_repo
from registry.jobs import repository as jobs_repo
from registry.tasks import repository as tasks_repo
from registry.versions import repository as versions_repo

router = APIRouter(tags=["system"])


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200)
    scopes: list[str] = Field(min_length=1, max_length=3)
    prefixes: list[str] = Field(default_factory=list, max_length=32)


@router.get("/healthz")
def healthz(session: SessionDep) -> dict[str, Any]:
    session.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__}


@router.get("/api/stats")
def stats(session: SessionDep, _: ReaderDep) -> dict[str, Any]:
    return {
        "base_models": base_models_repo.count(session),
        "tasks": tasks_repo.count(session),
        "datasets": datasets_repo.count(session),
        "versions": versions_repo.count(session),
        "jobs": jobs_repo.count_by_state(session),
    }


@router.post("/api/tokens", status_code=201)
def new_token(session: SessionDep, _: AdminDep, body: TokenCreate) -> dict[str, Any]:
    """Create a scoped token; the secret is shown once and stored only as a hash."""
    token, secret = create_token(session, name=body.name, scopes=body.scopes, prefixes=body.prefixes)
    return {"name": token.name, "scopes": token.scopes, "prefixes": token.prefixes, "token": secret}
