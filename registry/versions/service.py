"""Adapter versions: all-or-nothing registration, resolution by alias/number/latest, aliases, lineage.

Registration runs after every file is already in the store (create-only, verified). Here, in the
caller's single transaction: the job row is locked and its lease token checked (a redelivered twin
whose lease was replaced cannot register), the task's version counter is bumped with
``UPDATE ... RETURNING`` (row lock: gapless numbers under concurrency), the version row is inserted
and the job marked succeeded. Nothing is visible until the scope commits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from registry.errors import Conflict, InvalidInput, NotFound
from registry.jobs import repository as jobs_repo
from registry.models import AdapterVersion, Alias, AliasEvent, BaseModel, Dataset, Job, JobState, Task
from registry.names import validate_name
from registry.tasks import repository as tasks_repo
from registry.tasks.service import validate_tags
from registry.versions import repository as repo

log = logging.getLogger(__name__)

PRIMARY_METRICS = ("accuracy", "pearson", "neg_eval_loss")


def primary_metric(metrics: dict[str, Any]) -> float | None:
    for key in PRIMARY_METRICS:
        v = metrics.get(key)
        if isinstance(v, int | float):
            return float(v)
    return None


def register(
    session: Session,
    *,
    task: Task,
    base_model: BaseModel,
    method: str,
    method_config: dict[str, Any],
    files: list[dict[str, Any]],
    metrics: dict[str, Any],
    trainable_params: int,
    total_params: int,
    code_version: str,
    origin: str = "trained",
    job: Job | None = None,
    lease_token: str | None = None,
    dataset: Dataset | None = None,
    parent: AdapterVersion | None = None,
    hyperparameters: dict[str, Any] | None = None,
    actor: str = "",
    description: str = "",
) -> AdapterVersion:
    if job is not None:
        locked = jobs_repo.get(session, job.id, for_update=True)
        session.refresh(job)
        if locked is None or job.state != JobState.running.value or job.lease_token != lease_token:
            raise Conflict(f"job {job.id} is no longer held by this worker (state {job.state}); not registering",
                           field="lease_token")
        if job.cancel_requested:
            raise Conflict(f"job {job.id} was cancelled; not registering", field="job_id")
    number = tasks_repo.allocate_version_number(session, task.id)
    version = AdapterVersion(
        task_id=task.id,
        number=number,
        origin=origin,
        job_id=job.id if job else None,
        method=method,
        method_config=method_config,
        hyperparameters=hyperparameters or {},
        task_type=task.type,
        labels=list(task.labels),
        base_model_id=base_model.id,
        base_model_sha256=base_model.weights_sha256,
        dataset_id=dataset.id if dataset else None,
        dataset_sha256=dataset.sha256 if dataset else None,
        parent_version_id=parent.id if parent else None,
        metrics=metrics,
        primary_metric=primary_metric(metrics),
        trainable_params=trainable_params,
        total_params=total_params,
        trainable_share=(trainable_params / total_params) if total_params else 0.0,
        files=files,
        size_bytes=sum(int(f["size"]) for f in files),
        code_version=code_version,
        created_by=actor,
        description=description,
        tags=[],
    )
    session.add(version)
    session.flush()
    if job is not None:
        job.state = JobState.succeeded.value
        job.version_id = version.id
        job.finished_at = datetime.now(UTC)
        job.lease_token = None
    session.flush()
    log.info("registered %s v%d (%s, %d files)", task.name, number, method, len(files))
    return version


def resolve(session: Session, task: Task, *, alias: str | None = None, version: int | None = None) -> AdapterVersion:
    if alias is not None and version is not None:
        raise InvalidInput("give alias or version, not both", field="alias")
    if alias is not None:
        alias = validate_name(alias, field="alias")
        a = repo.get_alias(session, task.id, alias)
        if a is None:
            raise NotFound(f"task {task.name} has no alias {alias!r}", field="alias")
        return a.version
    if version is not None:
        v = repo.get_by_number(session, task.id, version)
        if v is None:
            raise NotFound(f"task {task.name} has no version {version}", field="version")
        return v
    v = repo.latest(session, task.id)
    if v is None:
        raise NotFound(f"task {task.name} has no versions yet", field="task")
    return v


def set_alias(session: Session, task: Task, name: str, number: int, *, actor: str = "") -> Alias:
    name = validate_name(name, field="alias")
    if name == "latest":
        raise InvalidInput("'latest' is reserved: it always means the newest version", field="alias")
    target = repo.get_by_number(session, task.id, number)
    if target is None:
        raise NotFound(f"task {task.name} has no version {number}", field="version")
    alias = repo.get_alias(session, task.id, name)
    previous = alias.version_id if alias else None
    if alias is None:
        alias = Alias(task_id=task.id, name=name, version_id=target.id, updated_by=actor)
        session.add(alias)
    else:
        alias.version_id = target.id
        alias.updated_by = actor
        alias.updated_at = datetime.now(UTC)
    session.add(AliasEvent(task_id=task.id, alias=name, from_version_id=previous, to_version_id=target.id,
                           actor=actor))
    session.flush()
    session.refresh(alias)
    return alias


def delete_alias(session: Session, task: Task, name: str, *, actor: str = "") -> None:
    name = validate_name(name, field="alias")
    alias = repo.get_alias(session, task.id, name)
    if alias is None:
        raise NotFound(f"task {task.name} has no alias {name!r}", field="alias")
    session.add(AliasEvent(task_id=task.id, alias=name, from_version_id=alias.version_id, to_version_id=None,
                           actor=actor))
    session.delete(alias)
    session.flush()


def update_metadata(
    session: Session, version: AdapterVersion, *, description: str | None, tags: Sequence[str] | None
) -> AdapterVersion:
    if description is not None:
        if len(description) > 10_000:
            raise InvalidInput("description is longer than 10000 characters", field="description")
        version.description = description
    if tags is not None:
        version.tags = validate_tags(tags)
    session.flush()
    return version


def ancestry(session: Session, version: AdapterVersion, max_depth: int = 1000) -> list[AdapterVersion]:
    chain: list[AdapterVersion] = []
    seen: set[int] = set()
    cur = version.parent
    while cur is not None and cur.id not in seen and len(chain) < max_depth:
        chain.append(cur)
        seen.add(cur.id)
        cur = cur.parent
    return chain


def version_ref(v: AdapterVersion) -> dict[str, Any]:
    return {"task": v.task.name, "version": v.number, "id": v.id, "method": v.method,
            "created_at": v.created_at.isoformat()}


def lineage(session: Session, version: AdapterVersion) -> dict[str, Any]:
    job = version.job
    return {
        "version": version_ref(version),
        "origin": version.origin,
        "base_model": {"name": version.base_model.name, "sha256": version.base_model_sha256},
        "dataset": (
            {"id": version.dataset.id, "name": version.dataset.name, "sha256": version.dataset_sha256}
            if version.dataset else None
        ),
        "job": {"id": job.id, "state": job.state, "submitted_by": job.submitted_by} if job else None,
        "parent": version_ref(version.parent) if version.parent else None,
        "ancestry": [version_ref(v) for v in ancestry(session, version)],
        "children": [version_ref(v) for v in repo.children(session, version.id)],
        "hyperparameters": version.hyperparameters,
        "code_version": version.code_version,
    }


def manifest(version: AdapterVersion, aliases: list[str]) -> dict[str, Any]:
    return {
        "task": version.task.name,
        "task_type": version.task_type,
        "version": version.number,
        "aliases": aliases,
        "method": version.method,
        "method_config": version.method_config,
        "labels": version.labels,
        "base_model": {
            "name": version.base_model.name,
            "sha256": version.base_model_sha256,
            "architecture": version.base_model.architecture,
        },
        "files": [
            {"name": f["name"], "size": f["size"], "sha256": f["sha256"], "url": f"/api/blobs/{f['sha256']}"}
            for f in version.files
        ],
        "metrics": version.metrics,
        "created_at": version.created_at.isoformat(),
    }


def to_out(version: AdapterVersion, aliases: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": version.id,
        "task": version.task.name,
        "version": version.number,
        "origin": version.origin,
        "method": version.method,
        "method_config": version.method_config,
        "hyperparameters": version.hyperparameters,
        "task_type": version.task_type,
        "labels": version.labels,
        "base_model": version.base_model.name,
        "base_model_sha256": version.base_model_sha256,
        "dataset_id": version.dataset_id,
        "dataset_sha256": version.dataset_sha256,
        "parent_version": version.parent.number if version.parent else None,
        "job_id": version.job_id,
        "metrics": version.metrics,
        "trainable_params": version.trainable_params,
        "total_params": version.total_params,
        "trainable_share": version.trainable_share,
        "files": version.files,
        "size_bytes": version.size_bytes,
        "code_version": version.code_version,
        "created_by": version.created_by,
        "created_at": version.created_at,
        "description": version.description,
        "tags": version.tags,
        "aliases": aliases or [],
    }


def fast_manifest(session: Session, task_name: str, *, alias: str | None = None,
                  version: int | None = None) -> dict[str, Any] | None:
    """:func:`manifest` from one indexed Core statement; None when anything is missing (then the
    caller resolves through the ORM, which raises the precise 404/422)."""
    if alias is not None and version is not None:
        return None
    if alias is not None:
        try:
            alias = validate_name(alias, field="alias")
        except InvalidInput:
            return None
    rows = repo.manifest_rows(session, task_name, alias=alias, version=version)
    if not rows:
        return None
    row = rows[0]
    return {
        "task": row.task,
        "task_type": row.task_type,
        "version": row.number,
        "aliases": sorted(r.alias_name for r in rows if r.alias_name is not None),
        "method": row.method,
        "method_config": row.method_config,
        "labels": row.labels,
        "base_model": {"name": row.base_name, "sha256": row.base_model_sha256, "architecture": row.architecture},
        "files": [
            {"name": f["name"], "size": f["size"], "sha256": f["sha256"], "url": f"/api/blobs/{f['sha256']}"}
            for f in row.files
        ],
        "metrics": row.metrics,
        "created_at": row.created_at.isoformat(),
    }


def row_to_out(row: Any, task_name: str, aliases: list[str] | None = None) -> dict[str, Any]:
    """:func:`to_out` for a row of :func:`repository.task_versions_rows` (same keys, same values)."""
    return {
        "id": row.id, "task": task_name, "version": row.number, "origin": row.origin, "method": row.method,
        "method_config": row.method_config, "hyperparameters": row.hyperparameters, "task_type": row.task_type,
        "labels": row.labels, "base_model": row.base_name, "base_model_sha256": row.base_model_sha256,
        "dataset_id": row.dataset_id, "dataset_sha256": row.dataset_sha256, "parent_version": row.parent_number,
        "job_id": row.job_id, "metrics": row.metrics, "trainable_params": row.trainable_params,
        "total_params": row.total_params, "trainable_share": row.trainable_share, "files": row.files,
        "size_bytes": row.size_bytes, "code_version": row.code_version, "created_by": row.created_by,
        "created_at": row.created_at, "description": row.description, "tags": row.tags, "aliases": aliases or [],
    }


def aliases_by_version(session: Session, task_id: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for a in repo.aliases_for_task(session, task_id):
        out.setdefault(a.version_id, []).append(a.name)
    return out


def pull_manifest(session: Session, task_name: str, *, alias: str | None = None,
                  version: int | None = None) -> dict[str, Any]:
    """The manifest clients pull by task name: prebuilt indexed queries first, the ORM path for
    everything else (and for the errors, which name the missing task, alias or version)."""
    fast = fast_manifest(session, task_name, alias=alias, version=version)
    if fast is not None:
        return fast
    from registry.tasks import service as tasks

    task = tasks.get_by_name(session, task_name)
    v = resolve(session, task, alias=alias, version=version)
    return manifest(v, aliases_by_version(session, task.id).get(v.id, []))


def list_task_versions(session: Session, task_name: str, *, limit: int, cursor: str | None,
                       method: str | None = None, tag: str | None = None,
                       min_metric: float | None = None) -> dict[str, Any]:
    """A task's versions, newest first, one cursor page. The unfiltered page (the common one) is a
    single joined Core query; filters go through the general keyset paginator."""
    from registry.pagination import decode_cursor, encode_cursor
    from registry.tasks import service as tasks

    task = tasks.get_by_name(session, task_name)
    by_version = aliases_by_version(session, task.id)
    if method is None and tag is None and min_metric is None:
        after = None
        if cursor:
            number, vid = decode_cursor(cursor)
            if not isinstance(number, int) or not isinstance(vid, int):
                raise InvalidInput("cursor is not valid", field="cursor")
            after = (number, vid)
        rows = repo.task_versions_rows(session, task.id, limit=limit, after=after)
        next_cursor = encode_cursor([rows[limit - 1].number, rows[limit - 1].id]) if len(rows) > limit else None
        return {"items": [row_to_out(r, task.name, by_version.get(r.id, [])) for r in rows[:limit]],
                "next_cursor": next_cursor}
    page = repo.list_page(session, task_id=task.id, method=method, tag=tag, min_metric=min_metric,
                          limit=limit, cursor=cursor)
    return {"items": [to_out(v, by_version.get(v.id, [])) for v in page.items], "next_cursor": page.next_cursor}
