from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile, status

from registry.api.deps import LimitDep, ReaderDep, SessionDep, SettingsDep, StoreDep, WriterDep
from registry.api.uploads import plain_filename, spooled
from registry.basemodels import repository as repo
from registry.basemodels import service
from registry.errors import InvalidInput
from registry.models import BaseModel

router = APIRouter(prefix="/api/base-models", tags=["base models"])


def base_model_out(bm: BaseModel) -> dict[str, Any]:
    return {
        "id": bm.id, "name": bm.name, "architecture": bm.architecture, "model_type": bm.model_type,
        "hidden_size": bm.hidden_size, "num_layers": bm.num_layers, "num_parameters": bm.num_parameters,
        "task_types": bm.task_types, "weights_sha256": bm.weights_sha256, "size_bytes": bm.size_bytes,
        "files": [{**f, "url": f"/api/blobs/{f['sha256']}"} for f in bm.files],
        "description": bm.description, "created_by": bm.created_by, "created_at": bm.created_at,
    }


@router.post("", status_code=status.HTTP_201_CREATED)
def register_base_model(
    session: SessionDep, store: StoreDep, settings: SettingsDep, principal: WriterDep,
    name: Annotated[str, Form(max_length=200)],
    files: Annotated[list[UploadFile], File(description="config.json, model.safetensors, tokenizer files")],
    description: Annotated[str, Form(max_length=10_000)] = "",
) -> dict[str, Any]:
    """Register a base model from the files of a local Hugging Face directory (safetensors only)."""
    named: dict[str, UploadFile] = {}
    for up in files:
        fname = plain_filename(up, field="files")
        if fname in named:
            raise InvalidInput(f"file {fname!r} given twice", field="files")
        named[fname] = up
    if len(named) > 64:
        raise InvalidInput("at most 64 files", field="files")
    assert settings.work_dir is not None
    with spooled(named, settings.work_dir, max_bytes=settings.max_upload_bytes) as paths:
        bm = service.register(session, store, name=name, files=paths, description=description,
                              actor=principal.name)
        return base_model_out(bm)


@router.get("")
def list_base_models(
    session: SessionDep, _: ReaderDep, limit: LimitDep, q: str | None = None, cursor: str | None = None
) -> dict[str, Any]:
    page = repo.list_page(session, q=q, limit=limit, cursor=cursor)
    return {"items": [base_model_out(b) for b in page.items], "next_cursor": page.next_cursor}


@router.get("/{name}")
def get_base_model(session: SessionDep, _: ReaderDep, name: str) -> dict[str, Any]:
    bm = service.get_by_name(session, name)
    out = base_model_out(bm)
    out["config"] = bm.config
    out["tasks"] = [{"task": t, "versions": n} for t, n in repo.tasks_with_adapters(session, bm.id)]
    return out
