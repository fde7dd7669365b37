from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Query, Request, UploadFile, status
from pydantic import BaseModel, ConfigDict, Field

from registry.api.deps import LimitDep, ReaderDep, SessionDep, SettingsDep, StoreDep, WriterDep, hot_read
from registry.api.uploads import plain_filename, spooled
from registry.auth.service import require
from registry.basemodels import service as base_models
from registry.db import new_session, session_scope
from registry.errors import Conflict, InvalidInput
from registry.methods import METHOD_NAMES
from registry.settings import Settings
from registry.tasks import service as tasks
from registry.versions import imports, service
from registry.versions import repository as repo

router = APIRouter(tags=["versions"])


class VersionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[str] | None = Field(default=None, max_length=32)


class AliasSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)


@router.get("/api/tasks/{name}/versions")
async def list_task_versions(
    request: Request, name: str, cursor: str | None = None,
    limit: Annotated[int, Query(ge=1)] = 50,
    method: Annotated[str | None, Query(max_length=32)] = None, tag: Annotated[str | None, Query(max_length=64)] = None,
    min_metric: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """A task's versions, newest first (cursor pagination). Like the pull manifest, the token
    check and the queries run in one hop to the thread pool."""
    settings: Settings = request.app.state.settings
    return await hot_read(settings, authorization, service.list_task_versions, name,
                          limit=min(limit, settings.max_page_size), cursor=cursor, method=method, tag=tag,
                          min_metric=min_metric)


@router.get("/api/tasks/{name}/versions/{number}")
def get_version(session: SessionDep, _: ReaderDep, name: str, number: int) -> dict[str, Any]:
    task = tasks.get_by_name(session, name)
    v = service.resolve(session, task, version=number)
    return service.to_out(v, service.aliases_by_version(session, task.id).get(v.id, []))


@router.patch("/api/tasks/{name}/versions/{number}")
def update_version(
    session: SessionDep, principal: WriterDep, name: str, number: int, body: VersionUpdate
) -> dict[str, Any]:
    """Only description and tags may change; a version's files, method and numbers never do."""
    require(principal, "write", task_name=name)
    task = tasks.get_by_name(session, name)
    v = service.resolve(session, task, version=number)
    service.update_metadata(session, v, description=body.description, tags=body.tags)
    return service.to_out(v, service.aliases_by_version(session, task.id).get(v.id, []))


@router.api_route("/api/tasks/{name}/versions/{number}/files{rest:path}", methods=["PUT", "POST", "DELETE", "PATCH"])
def refuse_file_changes(session: SessionDep, principal: WriterDep, name: str, number: int, rest: str) -> None:
    """Versions are immutable: their files can never be replaced or removed."""
    task = tasks.get_by_name(session, name)
    service.resolve(session, task, version=number)
    raise Conflict(f"{name} v{number} is immutable: its files cannot be changed; train or import a new version",
                   field="files")


@router.get("/api/tasks/{name}/adapter")
async def pull_manifest(
    request: Request, name: str,
    alias: Annotated[str | None, Query(max_length=64)] = None,
    version: Annotated[int | None, Query(ge=1)] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """The pull manifest: which version, its files (sha256, size, URL), base model identity, labels.

    The hottest route: it does what ReaderDep + SessionDep do (same token check, same read
    session) but in a single hop to the thread pool instead of one per dependency, which keeps
    latency flat when many clients pull at once."""
    settings: Settings = request.app.state.settings
    return await hot_read(settings, authorization, service.pull_manifest, name, alias=alias, version=version)


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
    q: Annotated[str | None, Query(max_length=200, description="text in the task name or description")] = None,
    origin: Annotated[str | None, Query(pattern="^(trained|imported)$")] = None,
) -> dict[str, Any]:
    """Everything trained on a dataset or base model, by method, tag, metric threshold or text."""
    if method is not None and method not in METHOD_NAMES:
        raise InvalidInput(f"method must be one of {', '.join(METHOD_NAMES)}", field="method")
    task_id = tasks.get_by_name(session, task).id if task else None
    bm_id = base_models.get_by_name(session, base_model).id if base_model else None
    page = repo.list_page(session, task_id=task_id, method=method, base_model_id=bm_id, dataset_id=dataset_id,
                          tag=tag, min_metric=min_metric, q=q, origin=origin, limit=limit, cursor=cursor)
    return {"items": [service.to_out(v) for v in page.items], "next_cursor": page.next_cursor}


@router.get("/api/lineage")
def lineage_search(
    session: SessionDep, _: ReaderDep, limit: LimitDep, cursor: str | None = None,
    dataset_id: Annotated[int | None, Query(ge=1)] = None,
    base_model: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Downstream lineage: every version trained on a dataset and/or a base model (with its parent)."""
    if dataset_id is None and base_model is None:
        raise InvalidInput("give dataset_id or base_model", field="dataset_id")
    bm = base_models.get_by_name(session, base_model) if base_model else None
    ds_out = None
    if dataset_id is not None:
        from registry.datasets import service as datasets

        ds = datasets.get(session, dataset_id)
        ds_out = {"id": ds.id, "name": ds.name, "sha256": ds.sha256, "task": ds.task.name}
    page = repo.list_page(session, dataset_id=dataset_id, base_model_id=bm.id if bm else None, limit=limit,
                          cursor=cursor)
    return {
        "dataset": ds_out,
        "base_model": {"name": bm.name, "sha256": bm.weights_sha256} if bm else None,
        "items": [service.version_ref(v) | {"origin": v.origin, "job_id": v.job_id,
                                            "parent": service.version_ref(v.parent) if v.parent else None}
                  for v in page.items],
        "next_cursor": page.next_cursor,
    }


def _parse_metrics(raw: str | None) -> dict[str, float]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput("metrics must be a JSON object of numbers", field="metrics") from exc
    if not isinstance(data, dict) or len(data) > 100:
        raise InvalidInput("metrics must be a JSON object of at most 100 numbers", field="metrics")
    out: dict[str, float] = {}
    for k, v in data.items():
        if not isinstance(k, str) or len(k) > 64 or isinstance(v, bool) or not isinstance(v, int | float) \
                or not math.isfinite(v):
            raise InvalidInput(f"metric {k!r} must be a finite number", field="metrics")
        out[k] = float(v)
    return out


@router.post("/api/tasks/{name}/versions/import", status_code=status.HTTP_201_CREATED)
def import_version(
    session: SessionDep, store: StoreDep, settings: SettingsDep, principal: WriterDep, name: str,
    base_model: Annotated[str, Form(max_length=200, description="the base model the adapter was trained on")],
    files: Annotated[list[UploadFile], File(description="adapter_config.json, adapter_model.safetensors "
                                                        "[, head.safetensors]")],
    metrics: Annotated[str | None, Form(max_length=10_000, description="JSON object of numbers")] = None,
    description: Annotated[str, Form(max_length=10_000)] = "",
    parent_version: Annotated[int | None, Form(ge=1)] = None,
) -> dict[str, Any]:
    """Register an adapter trained elsewhere (PEFT layout, safetensors only) as the next version.

    Pickles are refused (422) and never read; shapes are checked against the named base model's
    stored weights header; the version's lineage says ``imported`` (no job, no dataset)."""
    require(principal, "write", task_name=name)
    named: dict[str, UploadFile] = {}
    for up in files:
        fname = plain_filename(up, field="files")
        if fname in named:
            raise InvalidInput(f"file {fname!r} given twice", field="files")
        named[fname] = up
    imports.check_file_names(list(named))  # refuse pickles by name before reading a byte
    parsed_metrics = _parse_metrics(metrics)
    if session.in_transaction():
        # Authentication may have read a token row, which on SQLite opened the write transaction
        # (BEGIN IMMEDIATE). End it so the upload below never runs under the write lock.
        session.commit()
    assert settings.work_dir is not None
    with spooled(named, settings.work_dir, max_bytes=settings.max_upload_bytes) as paths:
        # Validate and store with a read-only session: the write transaction (SQLite's write lock,
        # PostgreSQL's task row lock) is taken only for the few statements that register.
        reader = new_session(settings, write=False)
        try:
            task = tasks.get_by_name(reader, name)
            bm = base_models.get_by_name(reader, base_model)
            parent = service.resolve(reader, task, version=parent_version) if parent_version else None
            prepared = imports.prepare_import(store, task=task, base_model=bm, files=paths, parent=parent,
                                              work_dir=settings.work_dir)
        finally:
            reader.close()
    # Register and commit on this same thread: a transaction that holds SQLite's write lock must
    # never wait for a free thread-pool slot to commit (the request scope commits on another
    # thread), or 40 imports queued on the lock can starve it until the busy timeout.
    with session_scope(settings) as ws:
        task = tasks.get_by_name(ws, name)
        bm = base_models.get_by_name(ws, base_model)
        parent = service.resolve(ws, task, version=parent_version) if parent_version else None
        v = imports.register_prepared(ws, prepared, task=task, base_model=bm, metrics=parsed_metrics,
                                      description=description, parent=parent, actor=principal.name)
        ws.flush()
        return service.to_out(v, [])
