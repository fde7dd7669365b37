"""One settings class for every process (API, worker, CLI, migrations).

The embedded default needs no environment at all: SQLite + a local artifact directory + a
filesystem Celery broker under ``REGISTRY_HOME``. Production sets the database URL, a Redis
broker and S3 storage through ``REGISTRY_*`` variables.
"""

from __future__ import annotations

import functools
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REGISTRY_", env_file=None, extra="ignore")

    mode: Literal["embedded", "production"] = "embedded"
    home: Path = Path(".registry")

    database_url: str = ""  # default: sqlite under home
    sqlite_busy_timeout_ms: int = 30_000

    broker_url: str = ""  # default: kombu filesystem transport under home
    training_queue: str = "gpu"
    # Longer than the longest allowed job, or Redis hands a running job to a second worker
    # (celery#5935). The worker reads it into broker_transport_options.
    max_job_seconds: int = 6 * 3600
    visibility_timeout_s: int = 7 * 3600
    heartbeat_interval_s: float = 5.0
    heartbeat_timeout_s: float = 60.0
    max_attempts: int = 3
    reaper_interval_s: float = 15.0
    # A queued job whose message was sent this long ago (or whose send failed) gets it re-sent.
    queued_resend_s: float = 600.0
    orphan_grace_s: float = 3600.0

    store_backend: Literal["local", "s3"] = "local"
    artifact_dir: Path | None = None  # default: home/artifacts
    s3_endpoint_url: str | None = None
    s3_bucket: str = "adapter-registry"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    # Where clients reach the store when it differs from the API's view (compose: http://localhost:9000).
    s3_public_endpoint_url: str | None = None
    presign_expires_s: int = Field(default=300, ge=10, le=3600)

    admin_token: str | None = None
    public_reads: bool = True
    submit_rate_per_minute: int = 30

    max_upload_bytes: int = 512 * 1024 * 1024
    max_dataset_bytes: int = 256 * 1024 * 1024
    max_line_bytes: int = 1024 * 1024
    max_page_size: int = 200
    # Hot read routes running at once per API process (the rest queue in the event loop); 0 = no cap.
    # A pull is one database round trip, so two threads keep a query in flight while the other
    # holds the GIL; more only contend for it (PostgreSQL, 50 clients: p99 42 ms with 2, 68 with 6).
    hot_read_slots: int = 2
    # PostgreSQL connections per process: every API process, worker and reaper holds up to
    # db_pool_size + db_max_overflow (+ hot_read_slots for reads), and together they must stay under
    # the server's max_connections (100 by default); past that, requests wait up to db_pool_timeout_s.
    db_pool_size: int = 8
    db_max_overflow: int = 8
    db_pool_timeout_s: float = 30.0
    # Move the objects alive after start-up (modules, routes, SQL compilation cache) out of the
    # cyclic GC's reach with gc.freeze(), and once more gc_refreeze_after_s later, after warm-up:
    # otherwise every full collection walks ~150,000 long-lived objects, a 50-140 ms pause of the
    # whole event loop on this 2-core machine, which was most of the pull's p99 at 50 clients.
    gc_freeze: bool = True
    gc_refreeze_after_s: float = Field(default=30.0, ge=0.0)

    cache_dir: Path = Path.home() / ".cache" / "adapter-registry"
    work_dir: Path | None = None  # worker scratch space; default home/work

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.home / 'registry.db').resolve()}"
        if not self.broker_url:
            self.broker_url = "filesystem://"
        if self.artifact_dir is None:
            self.artifact_dir = (self.home / "artifacts").resolve()
        if self.work_dir is None:
            self.work_dir = (self.home / "work").resolve()
        if self.database_url.startswith("postgresql://"):
            self.database_url = "postgresql+psycopg://" + self.database_url[len("postgresql://") :]
        if self.mode == "production":
            if not self.admin_token or len(self.admin_token) < 24:
                raise ValueError("production mode needs REGISTRY_ADMIN_TOKEN (at least 24 characters)")
            if self.database_url.startswith("sqlite"):
                raise ValueError("production mode needs REGISTRY_DATABASE_URL for PostgreSQL")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def broker_folder(self) -> Path:
        return (self.home / "broker").resolve()

    def ensure_dirs(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        assert self.artifact_dir is not None and self.work_dir is not None
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.broker_url.startswith("filesystem"):
            for sub in ("in", "processed", "control"):
                (self.broker_folder / sub).mkdir(parents=True, exist_ok=True)

    def embedded_admin_token(self) -> str:
        """The embedded default generates a token once and keeps it under home (never in production)."""
        if self.admin_token:
            return self.admin_token
        path = self.home / "admin-token"
        if path.exists():
            return path.read_text().strip()
        self.home.mkdir(parents=True, exist_ok=True)
        token = "ar_" + secrets.token_urlsafe(32)
        path.write_text(token + "\n")
        path.chmod(0o600)
        return token


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
