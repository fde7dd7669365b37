from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from pydantic import BaseModel, ConfigDict, Field

from registry.api.deps import LimitDep, ReaderDep, SessionDep, SettingsDep, StoreDep, WriterDep
from registry.api.uploads import plain_filename, spooled
from registry.auth.service import require
from registry.datasets import repository as datasets_repo
from registry.datasets import service as datasets
from registry.datasets.parsing import ColumnMapping
from registry.errors import InvalidInput
from registry.models import Dataset, Task
from registry.tasks import repository as repo
from registry.tasks import service
from registry.versions import repository as versions_repo

router = APIRouter(prefix="/api/tasks", tags=["tasks"])


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200)
    type: str = Field(default="single_label", max_length=32)
    labels: list[str] = Field(default_factory=list, max_length=1000)
    description: str = Field(default="", max_length=10_000)
    tags: list[str] = Field(default_factory=list, max_length=32)


class TaskUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[str] | None = Field(default=None, max_length=32)
    labels: list[str] | None = Field(default=None, max_length=1000)


def task_out(session: Any, task: Task) -> dict[str, Any]:
    aliases = {a.name: a.version.number for a in versions_repo.aliases_for_task(session, task.id)}
    latest = versions_repo.latest(session, task.id)
    return {
        "id": task.id, "name": task.name, "type": task.type, "labels": task.labels,
        "description": task.description, "tags": task.tags, "versions": repo.version_count(session, task.id),
        "latest_version": latest.number if latest else None, "aliases": aliases,
        "created_at": task.created_at, "created_by": task.created_by,
    }


def dataset_out(ds: Dataset) -> dict[str, Any]:
    return {
        "id": ds.id, "task": ds.task.name, "name": ds.name, "sha256": ds.sha256,
        "source_filename": ds.source_filename, "source_format": ds.source_format,
        "source_sha256": ds.source_sha256, "column_mapping": ds.column_mapping,
        "splits": {k: {**v, "url": f"/api/blobs/{v['sha256']}"} for k, v in ds.splits.items()},
        "label_counts": ds.label_counts, "num_rows": ds.num_rows, "created_at": ds.created_at,
        "created_by": ds.created_by,
    }


@router.post("", status_code=status.HTTP_201_CREATED)
def create_task(session: SessionDep, principal: WriterDep, body: TaskCreate) -> dict[str, Any]:
    require(principal, "write", task_name=body.name)
    task = service.create(session, name=body.name, type=body.type, labels=body.labels,
                          description=body.description, tags=body.tags, actor=principal.name)
    return task_out(session, task)


@router.get("")
def list_tasks(
    session: SessionDep, _: ReaderDep, limit: LimitDep, q: str | None = None, tag: str | None = None,
    type: str | None = None, cursor: str | None = None,
) -> dict[str, Any]:
    page = repo.list_page(session, q=q, tag=tag, type_=type, limit=limit, cursor=cursor)
    return {"items": [task_out(session, t) for t in page.items], "next_cursor": page.next_cursor}


@router.get("/{name}")
def get_task(session: SessionDep, _: ReaderDep, name: str) -> dict[str, Any]:
    return task_out(session, service.get_by_name(session, name))


@router.patch("/{name}")
def update_task(session: SessionDep, principal: WriterDep, name: str, body: TaskUpdate) -> dict[str, Any]:
    require(principal, "write", task_name=name)
    task = service.get_by_name(session, name)
    service.update(session, task, description=body.description, tags=body.tags, labels=body.labels)
    return task_out(session, task)


@router.post("/{name}/datasets", status_code=status.HTTP_201_CREATED)
def upload_dataset(
    session: SessionDep, store: StoreDep, settings: SettingsDep, principal: WriterDep, response: Response,
    name: str,
    train: Annotated[UploadFile, File(description="training split (TSV, CSV or JSONL)")],
    mapping: Annotated[str, Form(description='JSON: {"text": col, "label": col, "text_pair": col, '
                                             '"response": col, "has_header": bool}')],
    dev: Annotated[UploadFile | None, File(description="optional dev split, same layout")] = None,
    format: Annotated[str | None, Form(max_length=8)] = None,
    dataset_name: Annotated[str | None, Form(max_length=200)] = None,
) -> dict[str, Any]:
    """Upload a dataset for a task with a column mapping; stored content-addressed after validation."""
    require(principal, "write", task_name=name)
    task = service.get_by_name(session, name)
    try:
        raw = json.loads(mapping)
        if not isinstance(raw, dict):
            raise ValueError
        cm = ColumnMapping(
            text=str(raw["text"]),
            label=None if raw.get("label") is None else str(raw["label"]),
            text_pair=None if raw.get("text_pair") is None else str(raw["text_pair"]),
            response=None if raw.get("response") is None else str(raw["response"]),
            has_header=bool(raw.get("has_header", True)),
        )
        unknown = set(raw) - {"text", "label", "text_pair", "response", "has_header"}
        if unknown:
            raise InvalidInput(f"unknown mapping keys {sorted(unknown)}", field="mapping")
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput('mapping must be a JSON object with at least "text"', field="mapping") from exc
    uploads = {"train": train} | ({"dev": dev} if dev is not None else {})
    names = {k: plain_filename(u, field=k) for k, u in uploads.items()}
    assert settings.work_dir is not None
    with spooled(uploads, settings.work_dir, max_bytes=settings.max_dataset_bytes) as paths:
        ds, created = datasets.upload(
            session, store, task=task, train=(names["train"], paths["train"]),
            dev=(names["dev"], paths["dev"]) if "dev" in paths else None, mapping=cm, fmt=format,
            name=dataset_name, max_line_bytes=settings.max_line_bytes, work_dir=settings.work_dir,
            actor=principal.name,
        )
    if not created:
        response.status_code = status.HTTP_200_OK
    session.refresh(ds)
    return dataset_out(ds)


@router.get("/{name}/datasets")
def list_task_datasets(
    session: SessionDep, _: ReaderDep, limit: LimitDep, name: str, cursor: str | None = None
) -> dict[str, Any]:
    task = service.get_by_name(session, name)
    page = datasets_repo.list_page(session, task_id=task.id, limit=limit, cursor=cursor)
    return {"items": [dataset_out(d) for d in page.items], "next_cursor": page.next_cursor}


datasets_router = APIRouter(prefix="/api/datasets", tags=["datasets"])


@datasets_router.get("")
def list_datasets(
    session: SessionDep, _: ReaderDep, limit: LimitDep, cursor: str | None = None,
    task: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    task_id = service.get_by_name(session, task).id if task else None
    page = datasets_repo.list_page(session, task_id=task_id, limit=limit, cursor=cursor)
    return {"items": [dataset_out(d) for d in page.items], "next_cursor": page.next_cursor}


@datasets_router.get("/{dataset_id}")
def get_dataset(session: SessionDep, _: ReaderDep, dataset_id: int) -> dict[str, Any]:
    ds = datasets.get(session, dataset_id)
    out = dataset_out(ds)
    page = versions_repo.list_page(session, dataset_id=ds.id, limit=200, cursor=None)
    out["versions"] = [{"task": v.task.name, "version": v.number, "method": v.method} for v in page.items]
    return out
