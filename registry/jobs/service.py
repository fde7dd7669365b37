"""Training jobs: submission, cancellation, progress, and the reaper. Never commits."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from registry import methods
from registry.basemodels import service as base_models
from registry.datasets import service as datasets
from registry.db import after_commit
from registry.errors import Conflict, InvalidInput, NotFound
from registry.jobs import repository as repo
from registry.jobs.schemas import JobCreate
from registry.models import AdapterVersion, Job, JobState
from registry.queue import send_training_job
from registry.settings import Settings
from registry.tasks import service as tasks
from registry.versions import repository as versions_repo

log = logging.getLogger(__name__)

MAX_LOG_LINES = 200


def _now() -> datetime:
    return datetime.now(UTC)


def request_hash(body: JobCreate) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def submit(
    session: Session, settings: Settings, body: JobCreate, *, actor: str = "", idempotency_key: str | None = None
) -> tuple[Job, bool]:
    """Validate everything, insert a queued job and send its id after commit. Returns (job, created)."""
    digest = request_hash(body)
    if idempotency_key is not None:
        if not (1 <= len(idempotency_key) <= 128) or not idempotency_key.isprintable():
            raise InvalidInput("Idempotency-Key must be 1-128 printable characters", field="Idempotency-Key")
        existing = repo.get_by_idempotency_key(session, idempotency_key)
        if existing is not None:
            if existing.request_hash != digest:
                raise InvalidInput("this Idempotency-Key was used with a different request body",
                                   field="Idempotency-Key")
            return existing, False
    task = tasks.get_by_name(session, body.task, field="task")
    bm = base_models.get_by_name(session, body.base_model)
    if task.type not in bm.task_types:
        raise InvalidInput(f"base model {bm.name} ({bm.model_type}) does not support {task.type} tasks",
                           field="base_model")
    if body.method not in methods.METHOD_NAMES:
        raise InvalidInput(f"method must be one of {', '.join(methods.METHOD_NAMES)}", field="method")
    method_config = methods.validate_method_config(body.method, body.method_config)
    ds = datasets.get(session, body.dataset_id)
    if ds.task_id != task.id:
        raise InvalidInput(f"dataset {ds.id} belongs to another task", field="dataset_id")
    if task.type in ("single_label", "text_pair") and len(task.labels) < 2:
        raise InvalidInput("the task has no label set yet; upload a dataset first", field="task")
    parent: AdapterVersion | None = None
    if body.parent_version is not None:
        parent = versions_repo.get_by_number(session, task.id, body.parent_version)
        if parent is None:
            raise InvalidInput(f"task {task.name} has no version {body.parent_version}", field="parent_version")
        if parent.base_model_id != bm.id:
            raise InvalidInput("the parent version was trained on another base model", field="parent_version")
        if parent.method != body.method:
            raise InvalidInput(f"the parent version uses method {parent.method}; warm starts keep the method",
                               field="parent_version")
        method_config = dict(parent.method_config)
    job = Job(
        task_id=task.id,
        base_model_id=bm.id,
        dataset_id=ds.id,
        parent_version_id=parent.id if parent else None,
        method=body.method,
        method_config=method_config,
        hyperparameters=body.hyperparameters.model_dump(),
        state=JobState.queued.value,
        progress={"step": 0, "total_steps": None, "history": []},
        logs=[],
        attempts=0,
        max_attempts=settings.max_attempts,
        idempotency_key=idempotency_key,
        request_hash=digest,
        queue=settings.training_queue,
        submitted_by=actor,
    )
    job.enqueued_at = _now()
    session.add(job)
    session.flush()
    _send_after_commit(session, settings, [(job.id, job.queue)])
    log.info("job %d queued: task=%s base=%s method=%s", job.id, task.name, bm.name, job.method)
    return job, True


def _send_after_commit(session: Session, settings: Settings, jobs: list[tuple[int, str]]) -> None:
    """Send each job's message once the rows are committed. If a send fails (broker down) the row is
    marked (``enqueued_at = NULL``), and so are the rest of the batch without trying, so the reaper
    re-sends them on a later pass: an accepted job is never lost, and a dead broker costs one timeout."""

    def send() -> None:
        unsent: list[int] = []
        for job_id, queue in jobs:
            if unsent:
                unsent.append(job_id)
                continue
            try:
                send_training_job(job_id, queue=queue, settings=settings)
            except Exception:
                log.warning("job %d: sending its message failed; the reaper will re-send it", job_id,
                            exc_info=True)
                unsent.append(job_id)
        if not unsent:
            return
        try:
            from registry.db import session_scope

            with session_scope(settings) as s:
                for job_id in unsent:
                    repo.mark_unsent(s, job_id)
        except Exception:  # the rows keep their enqueued_at: re-sent after queued_resend_s
            log.exception("jobs %s: could not mark their messages as unsent", unsent)

    if jobs:
        after_commit(session, send)


def get(session: Session, job_id: int) -> Job:
    job = repo.get(session, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist", field="job_id")
    return job


def append_log(job: Job, line: str) -> None:
    stamp = _now().strftime("%H:%M:%S")
    job.logs = [*job.logs[-(MAX_LOG_LINES - 1):], f"{stamp} {line}"]


def cancel(session: Session, job_id: int, *, actor: str = "") -> Job:
    job = repo.get(session, job_id, for_update=True)
    if job is None:
        raise NotFound(f"job {job_id} does not exist", field="job_id")
    if JobState(job.state).terminal:
        raise Conflict(f"job {job_id} is already {job.state}", field="job_id")
    if job.state == JobState.queued.value:
        job.state = JobState.cancelled.value
        job.finished_at = _now()
        job.lease_token = None
    job.cancel_requested = True
    append_log(job, f"cancel requested by {actor or 'anonymous'}")
    session.flush()
    return job


def reap(session: Session, settings: Settings) -> dict[str, list[int]]:
    """Jobs whose heartbeat stopped: back to the queue while attempts remain, else failed; queued
    jobs whose message was lost get it re-sent.

    Returns the ids it touched; requeued and re-sent ids get their message sent after commit.
    """
    now = _now()
    requeued: list[int] = []
    failed: list[int] = []
    stale, skipped = repo.stale_running(session, older_than=now - timedelta(seconds=settings.heartbeat_timeout_s))
    if skipped:
        # Another reaper's pass, or a worker stopped inside a transaction on the row (it is ended
        # after the heartbeat timeout, see registry.db.set_idle_transaction_timeout): retried next pass.
        log.warning("reaper: stale jobs %s are row-locked by another transaction; skipped this pass", skipped)
    for job in stale:
        job.lease_token = None  # fences the lost worker: it can no longer register a version
        if job.cancel_requested:
            job.state = JobState.cancelled.value
            job.finished_at = now
            append_log(job, "worker lost while cancelling; cancelled")
        elif job.attempts < job.max_attempts:
            job.state = JobState.queued.value
            append_log(job, f"heartbeat lost after attempt {job.attempts}; requeued")
            requeued.append(job.id)
        else:
            job.state = JobState.failed.value
            job.finished_at = now
            job.error_code = "worker_lost"
            job.error_message = (f"the worker stopped sending heartbeats {job.attempts} times "
                                 f"(limit {job.max_attempts}); giving up")
            append_log(job, job.error_message)
            failed.append(job.id)
        if job.state == JobState.queued.value:
            job.enqueued_at = now
    # Queued jobs whose message was lost (broker down at submit, a broker restart without
    # persistence): send it again. A duplicate is harmless, the claim is atomic.
    lost = repo.queued_needing_message(session, now=now, resend_after_s=settings.queued_resend_s)
    for job in lost:
        job.enqueued_at = now
    resent = [j.id for j in lost]
    session.flush()
    to_send = [(j.id, j.queue) for j in [*stale, *lost] if j.state == JobState.queued.value]
    _send_after_commit(session, settings, to_send)
    if requeued or failed or resent:
        log.warning("reaper: requeued %s, failed %s, re-sent %s", requeued, failed, resent)
    return {"requeued": requeued, "failed": failed, "resent": resent}


def to_out(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "task": job.task.name,
        "base_model": job.base_model.name,
        "dataset_id": job.dataset_id,
        "method": job.method,
        "method_config": job.method_config,
        "hyperparameters": job.hyperparameters,
        "parent_version": job.parent_version.number if job.parent_version else None,
        "state": job.state,
        "progress": job.progress,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested,
        "error_code": job.error_code,
        "error_message": job.error_message,
        "version": job.version.number if job.version else None,
        "submitted_by": job.submitted_by,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "heartbeat_at": job.heartbeat_at,
        "logs": job.logs[-50:],
    }
