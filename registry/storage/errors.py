"""Storage errors, all inside the ``registry.errors.RegistryError`` hierarchy.

* ``ObjectNotFound`` is also a ``FileNotFoundError`` (like fsspec), so code written against
  plain files keeps working.
* ``ObjectExists``: a create-only put found *different* content at the key.
* ``StorageError``: the backend failed (disk full, S3 unreachable, timeouts...). The cause is
  chained (``raise ... from exc``).
* Checksum mismatches raise ``registry.errors.IntegrityFailure``.
"""

from __future__ import annotations

import errno

from registry.errors import Conflict, IntegrityFailure, NotFound, RegistryError

__all__ = [
    "IntegrityFailure",
    "InvalidRange",
    "ObjectExists",
    "ObjectNotFound",
    "StorageError",
]


class ObjectNotFound(NotFound, FileNotFoundError):
    """No object at ``key``."""

    type = "/problems/object-not-found"
    title = "Object not found"

    def __init__(self, key: str) -> None:
        NotFound.__init__(self, f"no stored object at {key!r}")
        self.key = key
        self.errno = errno.ENOENT
        self.strerror = self.detail
        self.filename = key

    def __str__(self) -> str:
        return self.detail


class ObjectExists(Conflict):
    """A create-only put found different content already stored at ``key``."""

    type = "/problems/object-exists"
    title = "Object exists"

    def __init__(self, key: str, *, existing_sha256: str | None, new_sha256: str) -> None:
        super().__init__(
            f"{key!r} already holds different content (sha256 {existing_sha256}); "
            f"refusing to overwrite it with sha256 {new_sha256}"
        )
        self.key = key
        self.existing_sha256 = existing_sha256
        self.new_sha256 = new_sha256


class InvalidRange(RegistryError, ValueError):
    """A range read starts at or past the end of the object (HTTP 416)."""

    status = 416
    type = "/problems/invalid-range"
    title = "Range not satisfiable"


class StorageError(RegistryError):
    """The storage backend failed or could not be reached."""

    status = 503
    type = "/problems/storage-unavailable"
    title = "Storage unavailable"
