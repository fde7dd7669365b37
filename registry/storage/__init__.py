"""Artifact storage: the ``ArtifactStore`` protocol, content-addressed keys, two backends.

``get_store(settings)`` returns the configured backend; keys come only from
``registry.storage.keys.blob_key``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from registry.storage.base import ArtifactStore, BaseStore, sha256_bytes, sha256_file
from registry.storage.errors import (
    IntegrityFailure,
    InvalidRange,
    ObjectExists,
    ObjectNotFound,
    StorageError,
)
from registry.storage.keys import blob_key, sha256_of_key
from registry.storage.local import LocalStore

if TYPE_CHECKING:
    from registry.storage.s3 import S3Store

__all__ = [
    "ArtifactStore",
    "BaseStore",
    "IntegrityFailure",
    "InvalidRange",
    "LocalStore",
    "ObjectExists",
    "ObjectNotFound",
    "S3Store",
    "StorageError",
    "StoreSettings",
    "blob_key",
    "get_store",
    "sha256_bytes",
    "sha256_file",
    "sha256_of_key",
]


class StoreSettings(Protocol):
    """What ``get_store`` reads from ``registry.settings.Settings`` (any object with these)."""

    @property
    def store_backend(self) -> str: ...
    @property
    def artifact_dir(self) -> Path | None: ...
    @property
    def s3_endpoint_url(self) -> str | None: ...
    @property
    def s3_bucket(self) -> str: ...
    @property
    def s3_access_key(self) -> str | None: ...
    @property
    def s3_secret_key(self) -> str | None: ...
    @property
    def s3_region(self) -> str: ...


def get_store(settings: StoreSettings) -> ArtifactStore:
    """The configured backend: ``"local"`` (``artifact_dir``) or ``"s3"`` (boto3, ``endpoint_url``).

    Builds a new client each call: callers keep the instance (one per process). The S3 bucket
    is not created here (``minio-init`` does it in compose; ``S3Store.ensure_bucket()`` exists).
    An optional ``s3_public_endpoint_url`` attribute, if present, is used to sign presigned URLs.
    """
    backend = settings.store_backend
    if backend == "local":
        if settings.artifact_dir is None:
            raise ValueError("store_backend 'local' needs artifact_dir")
        return LocalStore(Path(settings.artifact_dir))
    if backend == "s3":
        from registry.storage.s3 import S3Store  # boto3 only where S3 is used

        return S3Store(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            public_endpoint_url=getattr(settings, "s3_public_endpoint_url", None),
        )
    raise ValueError(f"unknown store_backend {backend!r} (expected 'local' or 's3')")


def __getattr__(name: str) -> object:
    if name == "S3Store":
        from registry.storage.s3 import S3Store

        return S3Store
    raise AttributeError(name)


if TYPE_CHECKING:  # mypy proves both backends satisfy the protocol

    def _conforms(local: LocalStore, s3: S3Store) -> tuple[ArtifactStore, ArtifactStore]:
        return local, s3
