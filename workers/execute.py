"""The one module that ties the database, the store and the training core together.

A Celery message carries only a job id; everything is re-read from the database here. The job is
claimed with a fresh lease token (``queued -> running``), a heartbeat thread keeps the lease alive
and notices cancellation or a lost lease, training runs in pure torch (workers.training), files are
uploaded create-only under their content address, and the version is registered in one
transaction that re-checks the lease, so a redelivered twin can never register a second version.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import update

from registry import __version__
from registry.db import session_scope
from registry.errors import Conflict, IntegrityFailure
from registry.hashing import sha256_file
from registry.jobs import repository as jobs_repo
from registry.jobs.service import append_log
from registry.models import AdapterVersion, Job, JobState
from registry.settings import Settings, get_settings
from registry.storage import ArtifactStore, StorageError, get_store
from registry.storage.keys import blob_key
from registry.versions import service as versions

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0
HISTORY_MAX = 2000


def _now() -> datetime:
    return datetime.now(UTC)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    env = os.environ.get("REGISTRY_CODE_VERSION")
    if env:
        return env[:64]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return f"{__version__}+g{sha}"
    except (OSError, subprocess.SubprocessError):
        return __version__


@dataclass(frozen=True)
class JobContext:
    """What the worker needs, read once from the database (plain values, no ORM objects)."""

    job_id: int
    token: str
    task_type: str
    labels: list[str]
    base_name: str
    base_sha256: str
    base_files: list[dict[str, Any]]
    splits: dict[str, dict[str, Any]]
    parent_files: list[dict[str, Any]] | None
    method: str
    method_config: dict[str, Any]
    hyperparameters: dict[str, Any]


class LeaseLost(Exception):
    pass


class JobLogHandler(logging.Handler):
    """Copies the training core's log lines for this job into the job row's log tail."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self._buf_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._buf_lock:
            self.lines.append(record.getMessage()[:500])

    def drain(self) -> list[str]:
        with self._buf_lock:
            out, self.lines = self.lines, []
        return out

    def put_back(self, lines: list[str]) -> None:
        """Lines a failed write drained: first in line for the next one."""
        with self._buf_lock:
            self.lines[:0] = lines


def _claim(settings: Settings, job_id: int) -> JobContext | str:
    token = uuid.uuid4().hex
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with session_scope(settings) as session:
        job = jobs_repo.get(session, job_id, for_update=True)
        if job is None:
            return "missing"
        if job.state != JobState.queued.value:
            # Terminal, or running under another worker's lease (a redelivered twin): nothing to do.
            return f"skipped ({job.state})"
        if job.attempts >= job.max_attempts:
            job.state = JobState.failed.value
            job.error_code = "too_many_attempts"
            job.error_message = f"gave up after {job.attempts} attempts"
            job.finished_at = _now()
            return "failed"
        if not jobs_repo.claim(session, job_id, token=token, worker=worker, now=_now()):
            return "skipped (claimed elsewhere)"
        session.refresh(job)
        append_log(job, f"attempt {job.attempts} started on {worker}")
        parent: AdapterVersion | None = job.parent_version
        return JobContext(
            job_id=job.id, token=token, task_type=job.task.type, labels=list(job.task.labels),
            base_name=job.base_model.name, base_sha256=job.base_model.weights_sha256,
            base_files=list(job.base_model.files), splits=dict(job.dataset.splits),
            parent_files=list(parent.files) if parent else None, method=job.method,
            method_config=dict(job.method_config), hyperparameters=dict(job.hyperparameters),
        )


def _fetch(store: ArtifactStore, files: list[dict[str, Any]], dest: Path) -> None:
    """Download files by content address, verifying each sha256 (atomic rename into place)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = dest / f["name"]
        if target.exists() and target.stat().st_size == f["size"]:
            continue
        tmp = dest / f".{f['name']}.part-{uuid.uuid4().hex[:8]}"
        try:
            store.get_file(blob_key(f["sha256"]), tmp)
            if sha256_file(tmp) != f["sha256"]:
                raise IntegrityFailure(f"stored file {f['name']} does not match its sha256")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def _base_dir(settings: Settings, store: ArtifactStore, ctx: JobContext) -> Path:
    assert settings.work_dir is not None
    cache = settings.work_dir / "base-models" / ctx.base_sha256
    if not (cache / ".complete").exists():
        _fetch(store, ctx.base_files, cache)
        (cache / ".complete").write_text(ctx.base_name)
    return cache


class Monitor:
    """Heartbeats on a thread; tells the training loop to stop on cancel or a lost lease."""

    def __init__(self, settings: Settings, ctx: JobContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.stop_event = threading.Event()
        self.cancelled = False
        self.lease_lost = False
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{ctx.job_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stop_event.wait(self.settings.heartbeat_interval_s):
            try:
                self.beat()
            except Exception:  # a database blip must not kill training; the next beat retries
                log.exception("job %d: heartbeat failed", self.ctx.job_id)

    def beat(self) -> None:
        with session_scope(self.settings) as session:
            if not jobs_repo.heartbeat(session, self.ctx.job_id, token=self.ctx.token, now=_now()):
                self.lease_lost = True
                return
            job = session.get(Job, self.ctx.job_id)
            if job is not None and job.cancel_requested:
                self.cancelled = True

    def should_stop(self) -> bool:
        return self.cancelled or self.lease_lost


class ProgressWriter:
    def __init__(self, settings: Settings, ctx: JobContext, logs: JobLogHandler) -> None:
        self.settings = settings
        self.ctx = ctx
        self.logs = logs
        self.last_write = 0.0
        self.history: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self.latest: dict[str, Any] = {}

    def __call__(self, p: Any) -> None:
        point = {"step": p.step, "loss": round(float(p.loss), 5) if p.loss is not None else None,
                 "lr": p.lr, "epoch": round(float(p.epoch), 4)}
        if p.loss is not None:
            self.history.append(point)
            if len(self.history) > HISTORY_MAX:  # keep the curve's shape, halve the density
                self.history = self.history[::2]
        if p.eval:
            self.evals.append({"step": p.step, **p.eval})
        self.latest = {"step": p.step, "total_steps": p.total_steps, "epoch": p.epoch, "loss": point["loss"]}
        now = time.monotonic()
        if p.eval or now - self.last_write >= PROGRESS_EVERY_S or p.step == p.total_steps:
            self.flush()

    def flush(self) -> None:
        """Best effort, like the heartbeat: a database error (a blip, or the server ending this
        worker's transaction after it sat frozen) must not fail the training; the next write retries."""
        self.last_write = time.monotonic()
        progress = {**self.latest, "history": self.history, "eval": self.evals}
        new_lines = self.logs.drain()
        try:
            with session_scope(self.settings) as session:
                job = session.get(Job, self.ctx.job_id)
                if job is None or job.lease_token != self.ctx.token:
                    return
                job.progress = progress
                for line in new_lines:
                    append_log(job, line)
        except Exception:
            log.exception("job %d: writing progress failed", self.ctx.job_id)
            self.logs.put_back(new_lines)


def _finish(settings: Settings, ctx: JobContext, state: JobState, *, code: str | None = None,
            message: str | None = None) -> bool:
    """Record the end of the attempt; False if the lease was already lost (nothing written)."""
    with session_scope(settings) as session:
        values: dict[str, Any] = {"state": state.value, "finished_at": _now(), "lease_token": None}
        if code:
            values.update(error_code=code, error_message=(message or "")[:4000])
        # Only while we still hold the lease: the reaper may already have handed the job on.
        res = session.execute(update(Job).where(Job.id == ctx.job_id, Job.lease_token == ctx.token).values(**values))
        if not res.rowcount:  # type: ignore[attr-defined]
            return False
        job = session.get(Job, ctx.job_id)
        if job is not None:
            session.refresh(job)
            append_log(job, f"{state.value}" + (f": {message}" if message else ""))
        return True


def _describe_error(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk_full", f"the worker ran out of disk space: {exc}"
    if isinstance(exc, OSError):
        return "io_error", f"a file operation failed: {exc}"
    if isinstance(exc, StorageError):
        return "storage_unavailable", f"the artifact store failed: {exc.detail}"
    if isinstance(exc, IntegrityFailure):
        return "integrity", exc.detail
    if isinstance(exc, MemoryError):
        return "out_of_memory", "the worker ran out of memory"
    name = type(exc).__name__
    if "OutOfMemory" in name:
        return "out_of_memory", f"the device ran out of memory: {exc}"
    return "training_error", f"{name}: {exc}"


def execute_job(job_id: int, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    settings.ensure_dirs()
    claimed = _claim(settings, job_id)
    if isinstance(claimed, str):
        log.info("job %d: %s", job_id, claimed)
        return claimed
    ctx = claimed
    store = get_store(settings)
    assert settings.work_dir is not None
    scratch = Path(tempfile.mkdtemp(dir=settings.work_dir, prefix=f"job-{job_id}-"))
    logs = JobLogHandler()
    training_log = logging.getLogger("workers.training")
    training_log.addHandler(logs)
    monitor = Monitor(settings, ctx)
    progress = ProgressWriter(settings, ctx, logs)
    monitor.start()
    try:
        from workers.training import TrainingCancelled, TrainSpec, run_training

        base_dir = _base_dir(settings, store, ctx)
        data_dir = scratch / "data"
        _fetch(store, [{"name": f"{k}.jsonl", **v} for k, v in ctx.splits.items()], data_dir)
        parent_dir = None
        if ctx.parent_files is not None:
            parent_dir = scratch / "parent"
            _fetch(store, ctx.parent_files, parent_dir)
        spec = TrainSpec(
            base_dir=base_dir, base_sha256=ctx.base_sha256, base_name=ctx.base_name, task_type=ctx.task_type,
            labels=ctx.labels, train_path=data_dir / "train.jsonl",
            dev_path=(data_dir / "dev.jsonl") if "dev" in ctx.splits else None, method=ctx.method,
            method_config=ctx.method_config, hyperparameters=ctx.hyperparameters, out_dir=scratch / "out",
            parent_adapter_dir=parent_dir,
        )
        log.info("job %d: training %s on %s", job_id, ctx.method, ctx.base_name)
        try:
            result = run_training(spec, on_progress=progress, should_stop=monitor.should_stop)
        except TrainingCancelled:
            if monitor.lease_lost:
                log.warning("job %d: lease lost during training; stopping without registering", job_id)
                return "lease_lost"
            _finish(settings, ctx, JobState.cancelled, message="cancelled while training; nothing registered")
            return "cancelled"
        progress.flush()
        # 1. Files first, create-only and verified, under their content address.
        records = []
        for path in result.files:
            digest = sha256_file(path)
            store.put_file(blob_key(digest), path, sha256=digest)
            records.append({"name": path.name, "size": path.stat().st_size, "sha256": digest})
        # 2. The version row last, in one transaction that re-checks the lease.
        with session_scope(settings) as session:
            job = session.get(Job, job_id)
            assert job is not None
            version = versions.register(
                session, task=job.task, base_model=job.base_model, method=job.method,
                method_config=dict(job.method_config), files=records, metrics=result.metrics,
                trainable_params=result.trainable_params, total_params=result.total_params,
                code_version=code_version(), origin="trained", job=job, lease_token=ctx.token,
                dataset=job.dataset, parent=job.parent_version, hyperparameters=dict(job.hyperparameters),
                actor=job.submitted_by,
            )
            append_log(job, f"registered {job.task.name} v{version.number}")
            number = version.number
        # 3. The orphan reaper may have removed an old unreferenced blob with the same content
        #    between our (no-op) put and the commit: put back anything that is missing.
        try:
            for path, rec in zip(result.files, records, strict=True):
                digest = str(rec["sha256"])
                if not store.exists(blob_key(digest)):
                    log.warning("job %d: blob %s vanished before the commit; storing it again", job_id, digest)
                    store.put_file(blob_key(digest), path, sha256=digest)
        except Exception:  # the version is committed; a pull will report a missing blob loudly
            log.exception("job %d: checking the registered blobs failed", job_id)
        log.info("job %d: registered version %d", job_id, number)
        return f"succeeded (v{number})"
    except Conflict as exc:
        log.warning("job %d: not registered: %s", job_id, exc.detail)
        if monitor.cancelled:
            _finish(settings, ctx, JobState.cancelled, message="cancelled; nothing registered")
            return "cancelled"
        return "lease_lost"
    except Exception as exc:
        code, message = _describe_error(exc)
        if not _finish(settings, ctx, JobState.failed, code=code, message=message):
            # The reaper took the job away meanwhile (e.g. PostgreSQL ended this worker's transaction
            # after it sat frozen past the heartbeat timeout): the error is ours, the job is not.
            log.warning("job %d: lease lost; not registered (%s)", job_id, message, exc_info=True)
            return "lease_lost"
        log.exception("job %d failed: %s", job_id, message)
        return "failed"
    finally:
        monitor.close()
        training_log.removeHandler(logs)
        shutil.rmtree(scratch, ignore_errors=True)
