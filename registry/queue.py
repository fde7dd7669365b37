"""Sending training messages from the service without importing the workers package.

Messages carry the job id only; the worker re-reads everything from the database. They are sent
by the request/session scope *after* its commit (see ``registry.db.after_commit``).
"""

from __future__ import annotations

import logging
import threading

from celery import Celery

from registry.settings import Settings, get_settings

log = logging.getLogger(__name__)

TRAIN_TASK = "workers.tasks.train_adapter"


def broker_options(settings: Settings) -> dict[str, object]:
    if settings.broker_url.startswith("filesystem"):
        settings.ensure_dirs()
        folder = str(settings.broker_folder / "in")
        return {"data_folder_in": folder, "data_folder_out": folder,
                "processed_folder": str(settings.broker_folder / "processed"), "store_processed": False,
                # exchange/binding metadata; kombu's default is ./control in the working directory
                "control_folder": str(settings.broker_folder / "control")}
    # A visibility timeout longer than the longest job, or Redis redelivers running jobs (celery#5935).
    return {"visibility_timeout": settings.visibility_timeout_s}


_producers: dict[tuple[str, str], Celery] = {}
_lock = threading.Lock()


def _producer(settings: Settings) -> Celery:
    key = (settings.broker_url, str(settings.home))
    with _lock:
        app = _producers.get(key)
        if app is None:
            app = Celery("adapter-registry-producer", broker=settings.broker_url)
            app.conf.broker_transport_options = broker_options(settings)
            app.conf.broker_connection_retry_on_startup = True
            # Publishing must not hang a request when the broker is down: fail fast, the reaper re-sends.
            app.conf.broker_connection_timeout = 5
            app.conf.task_publish_retry_policy = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5}
            _producers[key] = app
        return app


def send_training_job(job_id: int, *, queue: str, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    app = _producer(settings)
    app.send_task(TRAIN_TASK, args=[job_id], queue=queue)
    log.info("job %d: message sent to queue %s", job_id, queue)
