"""The Celery app for training workers.

Reliability settings (see docs/reliability.md): late acknowledgement with reject-on-worker-lost so a
killed worker's job is redelivered rather than dropped; prefetch 1 because jobs are long; a Redis
visibility timeout longer than the longest allowed job so a running job is not handed to a second
worker (celery#5935). Even so, the job row's lease token is what prevents double registration.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down

from registry.queue import broker_options
from registry.settings import get_settings

settings = get_settings()

app = Celery("adapter-registry", broker=settings.broker_url, include=["workers.tasks"])
app.conf.update(
    broker_transport_options=broker_options(settings),
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_acks_on_failure_or_timeout=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_default_queue="default",
    task_routes={"workers.tasks.train_adapter": {"queue": settings.training_queue}},
    task_time_limit=settings.max_job_seconds + 300,
    task_soft_time_limit=settings.max_job_seconds,
    worker_cancel_long_running_tasks_on_connection_loss=False,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    beat_schedule={
        "reap": {"task": "workers.tasks.reap", "schedule": settings.reaper_interval_s, "options": {"queue": "default"}},
    },
)


@worker_ready.connect
def _start_reaper(sender: object = None, **_: object) -> None:
    # The embedded default runs no beat process: the worker runs the reaper in a thread.
    from workers.reaper import start_background_reaper

    start_background_reaper(settings)


@worker_shutting_down.connect
def _stop_reaper(**_: object) -> None:
    from workers.reaper import stop_background_reaper

    stop_background_reaper()
