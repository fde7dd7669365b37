from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status

from registry.api.deps import LimitDep, ReaderDep, SessionDep, SettingsDep, WriterDep
from registry.api.ratelimit import check_submit_rate
from registry.auth.service import require
from registry.jobs import repository as repo
from registry.jobs import service
from registry.jobs.schemas import JobCreate
from registry.models import JobState
from registry.tasks import service as tasks

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def submit_job(
    session: SessionDep, settings: SettingsDep, principal: WriterDep, body: JobCreate, response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None,
) -> dict[str, Any]:
    """Queue a training job. The same Idempotency-Key and body return the same job."""
    require(principal, "write", task_name=body.task)
    check_submit_rate(principal.name, settings.submit_rate_per_minute)
    job, created = service.submit(session, settings, body, actor=principal.name, idempotency_key=idempotency_key)
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/api/jobs/{job.id}"
    return service.to_out(job)


@router.get("")
def list_jobs(
    session: SessionDep, _: ReaderDep, limit: LimitDep, cursor: str | None = None,
    state: Annotated[JobState | None, Query()] = None,
    task: Annotated[str | None, Query(max_length=200)] = None,
    method: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    task_id = tasks.get_by_name(session, task).id if task else None
    page = repo.list_page(session, state=state.value if state else None, task_id=task_id, method=method,
                          limit=limit, cursor=cursor)
    return {"items": [service.to_out(j) for j in page.items], "next_cursor": page.next_cursor}


@router.get("/{job_id}")
def get_job(session: SessionDep, _: ReaderDep, job_id: int) -> dict[str, Any]:
    return service.to_out(service.get(session, job_id))


@router.post("/{job_id}/cancel")
def cancel_job(session: SessionDep, principal: WriterDep, job_id: int) -> dict[str, Any]:
    """Cancel a queued job at once, or ask a running one to stop; a cancelled job registers nothing."""
    job = service.get(session, job_id)
    require(principal, "write", task_name=job.task.name)
    return service.to_out(service.cancel(session, job_id, actor=principal.name))
