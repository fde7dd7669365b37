"""The Celery app for training workers.

Reliability settings (see docs/reliability.md): late acknowledgement with reject-on-worker-lost so a
killed worker's job is redelivered rather than dropped; prefetch 1 because jobs are long; a Redis
visibility timeout longer than the longest allowed job so a running job is not handed to a second
worker (celery#5935). Even so, the job row's lease token is what prevents double registration, and
the database, not the broker, is the truth: the reaper re-sends messages a broker lost.

The reaper runs in a thread of the worker's *main* process (``worker_ready`` fires there, after the
prefork pool has forked its children), so no ``celery beat`` is needed; ``python -m workers.reaper``
runs it as a process of its own instead.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutting_down

from registry.queue import broker_options
from registry.settings import Settings, get_settings

log = logging.getLogger(__name__)

settings = get_settings()


def transport_options(s: Settings) -> dict[str, Any]:
    opts: dict[str, Any] = dict(broker_options(s))
    if s.broker_url.startswith(("redis://", "rediss://")):
        if s.visibility_timeout_s <= s.max_job_seconds:
            raise ValueError(
                f"REGISTRY_VISIBILITY_TIMEOUT_S ({s.visibility_timeout_s}) must exceed REGISTRY_MAX_JOB_SECONDS "
                f"({s.max_job_seconds}), or Redis hands running jobs to a second worker (celery#5935)"
            )
        # Notice a dead or restarted Redis quickly and reconnect (celery#8091): keepalive, a health
        # check on idle connections, timeouts instead of blocking forever on a half-open socket.
        opts.update(socket_keepalive=True, socket_connect_timeout=5, socket_timeout=30,
                    health_check_interval=10, retry_on_timeout=True)
    return opts


app = Celery("adapter-registry", broker=settings.broker_url, include=["workers.tasks"])
app.conf.update(
    broker_transport_options=transport_options(settings),
    broker_connection_retry=True,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,  # keep trying while the broker is down; never exit
    broker_connection_timeout=5,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_acks_on_failure_or_timeout=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_default_queue="default",
    task_routes={"workers.tasks.train_adapter": {"queue": settings.training_queue}},
    task_time_limit=settings.max_job_seconds + 300,
    task_soft_time_limit=settings.max_job_seconds,
    # A running job survives a broker blip: its lease lives in the database, not in the broker.
    worker_cancel_long_running_tasks_on_connection_loss=False,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    beat_schedule={
        "reap": {"task": "workers.tasks.reap", "schedule": settings.reaper_interval_s, "options": {"queue": "default"}},
    },
)


def effective_settings(celery_app: Celery = app) -> dict[str, Any]:
    """What this worker process actually runs with (logged at start; tests read it)."""
    conf = celery_app.conf
    return {
        "pid": os.getpid(),
        "broker_transport_options": dict(conf.broker_transport_options or {}),
        "task_acks_late": conf.task_acks_late,
        "task_reject_on_worker_lost": conf.task_reject_on_worker_lost,
        "worker_prefetch_multiplier": conf.worker_prefetch_multiplier,
        "broker_connection_retry": conf.broker_connection_retry,
        "broker_connection_max_retries": conf.broker_connection_max_retries,
        "max_job_seconds": settings.max_job_seconds,
    }


@worker_init.connect
def _limit_idle_transactions(**_: object) -> None:
    """Before the pool forks (children inherit it): PostgreSQL ends a worker transaction left idle for
    longer than the heartbeat timeout, so a frozen worker cannot hold its job's row lock and keep the
    reaper from requeueing the job (see registry.db.set_idle_transaction_timeout)."""
    from registry.db import set_idle_transaction_timeout

    set_idle_transaction_timeout(settings.heartbeat_timeout_s)


@worker_process_init.connect
def _forget_parent_connections(**_: object) -> None:
    """A prefork child must not use the pooled database connections it inherited from the main
    process (the reaper thread there has some): drop them without closing the parent's sockets."""
    from registry.db import forget_inherited_connections

    forget_inherited_connections()


@worker_ready.connect
def _start_reaper(sender: Any = None, **_: object) -> None:
    from workers.reaper import start_background_reaper

    eff = effective_settings()
    channel_vt = None
    try:  # the value the Redis channel really uses, not just what the config says
        channel_vt = getattr(sender.connection.default_channel, "visibility_timeout", None)
    except Exception:  # filesystem transport or an unreachable broker: nothing to read
        pass
    log.info("effective worker settings: %s; channel visibility_timeout=%s", eff, channel_vt)
    start_background_reaper(settings)


@worker_shutting_down.connect
def _stop_reaper(**_: object) -> None:
    from workers.reaper import stop_background_reaper

    stop_background_reaper()
