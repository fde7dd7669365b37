from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from registry.api.deps import LimitDep, ReaderDep, SessionDep, WriterDep
from registry.auth.service import require
from registry.basemodels import service as base_models
from registry.errors import Conflict
from registry.methods import METHOD_NAMES
from registry.tasks import service as tasks
from registry.versions import repository as repo
from registry.versions import service

router = APIRouter(tags=["versions"])


class VersionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[str] | None = Field(default=None, max_length=32)


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)


def _aliases_by_version(session: Any, task_id: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for a in repo.aliases_for_task(session, task_id):
        out.setdefault(a.version_id, []).append(a.name)
    return out


@router.get("/api/tasks/{name}/versions")
def list_task_versions(
    session: SessionDep, _: ReaderDep, limit: LimitDep, name: str, cursor: str | None = None,
    method: Annotated[str | None, Query(max_length=32)] = None, tag: Annotated[str | None, Query(max_length=64)] = None,
    min_metric: Annotated[float | None, Query(allow_inf_nan=False)] = None,
) -> dict[str, Any]:
    task = tasks.get_by_name(session, name)
    page = repo.list_page(session, task_id=task.id, method=method, tag=tag, min_metric=min_metric,
                          limit=limit, cursor=cursor)
    by_version = _aliases_by_version(session, task.id)
    return {"items": [service.to_out(v, by_version.get(v.id, [])) for v in page.items],
            "next_cursor": page.next_cursor}


@router.get("/api/tasks/{name}/versions/{number}")
def get_version(session: SessionDep, _: ReaderDep, name: str, number: int) -> dict[str, Any]:
    task = tasks.get_by_name(session, name)
    v = service.resolve(session, task, version=number)
    return service.to_out(v, _aliases_by_version(session, task.id).get(v.id, []))


@router.patch("/api/tasks/{name}/versions/{number}")
def update_version(
    session: SessionDep, principal: WriterDep, name: str, number: int, body: VersionUpdate
) -> dict[str, Any]:
    """Only description and tags may change; a version's files, method and numbers never do."""
    require(principal, "write", task_name=name)
    task = tasks.get_by_name(session, name)
    v = service.resolve(session, task, version=number)
    service.update_metadata(session, v, description=body.description, tags=body.tags)
    return service.to_out(v, _aliases_by_version(session, task.id).get(v.id, []))


@router.api_route("/api/tasks/{name}/versions/{number}/files{rest:path}", methods=["PUT", "POST", "DELETE", "PATCH"])
def refuse_file_changes(session: SessionDep, principal: WriterDep, name: str, number: int, rest: str) -> None:
    """Versions are immutable: their files can never be replaced or removed."""
    task = tasks.get_by_name(session, name)
    service.resolve(session, task, version=number)
    raise Conflict(f"{name} v{number} is immutable: its files cannot be changed; train or import a new version",
                   field="files")


@router.get("/api/tasks/{name}/adapter")
def pull_manifest(
    session: SessionDep, _: ReaderDep, name: str,
    alias: Annotated[str | None, Query(max_length=64)] = None,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """The pull manifest: which version, its files (sha256, size, URL), base model identity, labels."""
    task = tasks.get_by_name(session, name)
    v = service.resolve(session, task, alias=alias, version=version)
    return service.manifest(v, _aliases_by_version(session, task.id).get(v.id, []))


@router.get("/api/tasks/{name}/aliases")
def list_aliases(session: SessionDep, _: ReaderDep, name: str) -> dict[str, Any]:
    task = tasks.get_by_name(session, name)
    events = repo.alias_events(session, task.id)
    numbers = {v.id: v.number for v in repo.list_page(session, task_id=task.id, limit=10_000, cursor=None).items}
    return {
        "aliases": [{"name": a.name, "version": a.version.number, "updated_by": a.updated_by,
                     "updated_at": a.updated_at} for a in repo.aliases_for_task(session, task.id)],
        "history": [{"alias": e.alias, "from": numbers.get(e.from_version_id or -1),
                     "to": numbers.get(e.to_version_id or -1), "actor": e.actor, "at": e.at} for e in events],
    }


@router.put("/api/tasks/{name}/aliases/{alias}")
def set_alias(session: SessionDep, principal: WriterDep, name: str, alias: str, body: AliasSet) -> dict[str, Any]:
    """Promote: point an alias (production, staging, ...) at a version. The move is recorded."""
    require(principal, "write", task_name=name)
    task = tasks.get_by_name(session, name)
    a = service.set_alias(session, task, alias, body.version, actor=principal.name)
    return {"task": task.name, "alias": a.name, "version": a.version.number, "updated_by": a.updated_by}


@router.delete("/api/tasks/{name}/aliases/{alias}", status_code=204)
def delete_alias(session: SessionDep, principal: WriterDep, name: str, alias: str) -> None:
    require(principal, "write", task_name=name)
    task = tasks.get_by_name(session, name)
    service.delete_alias(session, task, alias, actor=principal.name)


@router.get("/api/tasks/{name}/versions/{number}/lineage")
def version_lineage(session: SessionDep, _: ReaderDep, name: str, number: int) -> dict[str, Any]:
    task = tasks.get_by_name(session, name)
    return service.lineage(session, service.resolve(session, task, version=number))


@router.get("/api/versions")
def search_versions(
    session: SessionDep, _: ReaderDep, limit: LimitDep, request: Request, cursor: str | None = None,
    task: Annotated[str | None, Query(max_length=200)] = None,
    method: Annotated[str | None, Query(max_length=32)] = None,
    base_model: Annotated[str | None, Query(max_length=200)] = None,
    dataset_id: Annotated[int | None, Query(ge=1)] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    min_metric: Annotated[float | None, Query(allow_inf_nan=False)] = None,
) -> dict[str, Any]:
    """Everything trained on a dataset or base model, by method, tag or metric threshold."""
    if method is not None and method not in METHOD_NAMES:
        from registry.errors import InvalidInput

        raise InvalidInput(f"method must be one of {', '.join(METHOD_NAMES)}", field="method")
    task_id = tasks.get_by_name(session, task).id if task else None
    bm_id = base_models.get_by_name(session, base_model).id if base_model else None
    page = repo.list_page(session, task_id=task_id, method=method, base_model_id=bm_id, dataset_id=dataset_id,
                          tag=tag, min_metric=min_metric, limit=limit, cursor=cursor)
    return {"items": [service.to_out(v) for v in page.items], "next_cursor": page.next_cursor}
