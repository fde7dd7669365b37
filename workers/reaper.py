"""The reaper: stale running jobs go back to the queue (or fail), and orphaned blobs are removed."""

from __future__ import annotations

import logging
import threading

from registry.db import session_scope
from registry.jobs import service as jobs
from registry.settings import Settings, get_settings

log = logging.getLogger(__name__)

_stop = threading.Event()
_thread: threading.Thread | None = None


def reap_once(settings: Settings | None = None) -> dict[str, list[int]]:
    settings = settings or get_settings()
    with session_scope(settings) as session:
        return jobs.reap(session, settings)


def _loop(settings: Settings) -> None:
    while not _stop.wait(settings.reaper_interval_s):
        try:
            reap_once(settings)
        except Exception:
            log.exception("reaper pass failed")


def start_background_reaper(settings: Settings) -> None:
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    _stop.clear()
    _thread = threading.Thread(target=_loop, args=(settings,), name="reaper", daemon=True)
    _thread.start()


def stop_background_reaper() -> None:
    _stop.set()
