"""Thin Celery tasks: ids in, the real work in workers.execute."""

from __future__ import annotations

import logging

from workers.celery_app import app

log = logging.getLogger(__name__)


@app.task(name="workers.tasks.train_adapter", bind=True, acks_late=True, reject_on_worker_lost=True)
def train_adapter(self: object, job_id: int) -> str:
    from workers.execute import execute_job

    return execute_job(int(job_id))


@app.task(name="workers.tasks.reap")
def reap() -> dict[str, list[int]]:
    from workers.reaper import reap_once

    return reap_once()
