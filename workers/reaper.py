"""The reaper: stale running jobs go back to the queue (or fail), lost messages are re-sent, and
orphaned blobs are removed.

It runs without ``celery beat``: every worker runs :func:`start_background_reaper` in a thread of its
main process (``worker_ready``), and ``python -m workers.reaper`` runs the same loop as a process of
its own (for deployments that want it apart from the workers). Passes are safe to run concurrently:
stale jobs are taken with ``FOR UPDATE SKIP LOCKED``, a duplicate message is harmless (claims are
atomic), and deleting an object that another reaper already deleted is not an error.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta

from registry.db import session_scope, set_idle_transaction_timeout
from registry.jobs import service as jobs
from registry.settings import Settings, get_settings
from registry.storage import ArtifactStore, LocalStore, get_store, sha256_of_key
from registry.versions.repository import referenced_sha256s

log = logging.getLogger(__name__)

BLOB_PREFIX = "blobs/"

_stop = threading.Event()
_thread: threading.Thread | None = None


def reap_once(settings: Settings | None = None) -> dict[str, list[int]]:
    settings = settings or get_settings()
    with session_scope(settings) as session:
        return jobs.reap(session, settings)


def _referenced(settings: Settings) -> set[str]:
    with session_scope(settings, write=False) as session:
        return referenced_sha256s(session)


def reap_orphans(
    settings: Settings | None = None, store: ArtifactStore | None = None, *, grace_s: float | None = None
) -> list[str]:
    """Delete blobs older than ``grace_s`` that no version, base model or dataset refers to.

    Registration uploads files first and commits the row last, so a crash in between leaves
    unreferenced blobs; the grace period (``orphan_grace_s``) keeps the files of a registration in
    progress. The referenced set is read twice, before and after listing, so a version committed
    while the store is listed keeps its files. Also removes stale temp files of the local store.
    Returns the deleted keys.
    """
    settings = settings or get_settings()
    store = store or get_store(settings)
    grace = settings.orphan_grace_s if grace_s is None else grace_s
    cutoff = datetime.now(UTC) - timedelta(seconds=grace)
    referenced = _referenced(settings)
    candidates: list[str] = []
    for key, _size, mtime in store.list_keys(BLOB_PREFIX):
        sha = sha256_of_key(key)
        if sha is None or sha in referenced:
            continue
        if mtime.tzinfo is None:
            mtime = mtime.replace(tzinfo=UTC)
        if mtime < cutoff:
            candidates.append(key)
    removed: list[str] = []
    if candidates:
        referenced = _referenced(settings)  # again: a version may have been committed meanwhile
        for key in candidates:
            if sha256_of_key(key) in referenced:
                continue
            store.delete(key)
            removed.append(key)
        if removed:
            log.warning("orphan reaper: removed %d unreferenced blobs: %s", len(removed), removed[:20])
    if isinstance(store, LocalStore):
        store.remove_stale_temp_files(older_than_s=max(grace, 60.0))
    return removed


def _loop(settings: Settings) -> None:
    store: ArtifactStore | None = None
    last_orphan_pass = 0.0
    while not _stop.wait(settings.reaper_interval_s):
        try:
            reap_once(settings)
        except Exception:
            log.exception("reaper pass failed")
        # Orphans are rare (a crash between upload and commit): look a few times per grace period.
        if time.monotonic() - last_orphan_pass >= max(settings.reaper_interval_s, settings.orphan_grace_s / 4):
            last_orphan_pass = time.monotonic()
            try:
                store = store or get_store(settings)
                reap_orphans(settings, store)
            except Exception:
                log.exception("orphan reaper pass failed")


def start_background_reaper(settings: Settings) -> None:
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    _stop.clear()
    _thread = threading.Thread(target=_loop, args=(settings,), name="reaper", daemon=True)
    _thread.start()
    log.info("reaper thread started in process %d (every %.1fs, heartbeat timeout %.1fs)",
             os.getpid(), settings.reaper_interval_s, settings.heartbeat_timeout_s)


def stop_background_reaper() -> None:
    _stop.set()


def main(argv: list[str] | None = None) -> None:
    """``python -m workers.reaper``: the reaper as a process of its own (no celery beat needed)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--once", action="store_true", help="one pass (jobs and orphans), then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    set_idle_transaction_timeout(settings.heartbeat_timeout_s)  # as in a worker: no lock held forever
    if args.once:
        log.info("jobs: %s; orphans removed: %s", reap_once(settings), reap_orphans(settings))
        return
    start_background_reaper(settings)
    try:
        while _thread is not None and _thread.is_alive():
            _thread.join(1.0)
    except KeyboardInterrupt:
        stop_background_reaper()


if __name__ == "__main__":
    main()
