from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from registry.models import Job, JobState
from registry.pagination import Page, paginate


def get(session: Session, job_id: int, *, for_update: bool = False) -> Job | None:
    if for_update:
        return session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    return session.get(Job, job_id)


def get_by_idempotency_key(session: Session, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.idempotency_key == key))


def list_page(
    session: Session, *, state: str | None, task_id: int | None, method: str | None, limit: int,
    cursor: str | None,
) -> Page[Job]:
    stmt = select(Job)
    if state:
        stmt = stmt.where(Job.state == state)
    if task_id is not None:
        stmt = stmt.where(Job.task_id == task_id)
    if method:
        stmt = stmt.where(Job.method == method)
    return paginate(session, stmt, sort_col=Job.id, id_col=Job.id, descending=True, limit=limit, cursor=cursor)


def stale_running(session: Session, *, older_than: datetime) -> tuple[list[Job], list[int]]:
    """Running jobs whose heartbeat is older than ``older_than``, locked (``SKIP LOCKED``), and the
    ids of those skipped because another transaction holds their row lock."""
    stale = select(Job.id).where(Job.state == JobState.running.value, Job.heartbeat_at < older_than)
    ids = list(session.scalars(stale))
    if not ids:
        return [], []
    locked = list(session.scalars(
        select(Job).where(Job.id.in_(ids), Job.state == JobState.running.value, Job.heartbeat_at < older_than)
        .with_for_update(skip_locked=True)
    ))
    taken = {j.id for j in locked}
    return locked, [i for i in ids if i not in taken]


def queued_older_than(session: Session, *, older_than: datetime) -> list[Job]:
    return list(session.scalars(
        select(Job).where(Job.state == JobState.queued.value, Job.created_at < older_than)
    ))


def queued_needing_message(session: Session, *, now: datetime, resend_after_s: float) -> list[Job]:
    """Queued jobs whose message send failed (``enqueued_at`` NULL) or was sent too long ago."""
    cutoff = now - timedelta(seconds=resend_after_s)
    return list(session.scalars(
        select(Job).where(
            Job.state == JobState.queued.value,
            Job.cancel_requested.is_(False),
            or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff),
        ).order_by(Job.id).limit(1000).with_for_update(skip_locked=True)
    ))


def mark_unsent(session: Session, job_id: int) -> None:
    session.execute(
        update(Job).where(Job.id == job_id, Job.state == JobState.queued.value).values(enqueued_at=None)
    )


def count_by_state(session: Session) -> dict[str, int]:
    return {s: int(n) for s, n in session.execute(select(Job.state, func.count(Job.id)).group_by(Job.state))}


def claim(session: Session, job_id: int, *, token: str, worker: str, now: datetime) -> bool:
    """queued -> running with a new lease token; False if someone else holds it or it is terminal."""
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.queued.value)
        .values(state=JobState.running.value, lease_token=token, worker=worker, heartbeat_at=now,
                started_at=now, attempts=Job.attempts + 1)
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]


def heartbeat(session: Session, job_id: int, *, token: str, now: datetime) -> bool:
    res = session.execute(
        update(Job).where(Job.id == job_id, Job.lease_token == token, Job.state == JobState.running.value)
        .values(heartbeat_at=now)
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]
