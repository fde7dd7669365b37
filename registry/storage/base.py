"""The ``ArtifactStore`` protocol and the logic every backend shares, written once.

Backends subclass :class:`BaseStore` and implement a few primitives; the base class owns

* argument checks (key shape, sha256 shape, a blob key must address the sha256 it is given),
* create-only semantics (absent -> create; same sha256 -> no-op; different -> ``ObjectExists``),
  including the race where another writer created the key between the check and the write,
* sha256 verification of every byte written (:class:`HashingReader`, hashed while streaming)
  and of every blob read through :meth:`BaseStore.open` / :meth:`BaseStore.get_file`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from registry.hashing import sha256_bytes, sha256_file, sha256_stream
from registry.storage.errors import IntegrityFailure, ObjectExists
from registry.storage.keys import check_key, check_sha256, sha256_of_key

__all__ = [
    "CHUNK_SIZE",
    "ArtifactStore",
    "BaseStore",
    "HashingReader",
    "KeyTaken",
    "sha256_bytes",
    "sha256_file",
    "sha256_stream",
]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024


@runtime_checkable
class ArtifactStore(Protocol):
    """The storage contract (docs/architecture.md). Keys come from ``keys.blob_key`` only."""

    def put_file(self, key: str, path: Path, *, sha256: str) -> None: ...  # create-only; verifies sha256
    def put_bytes(self, key: str, data: bytes, *, sha256: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def open(self, key: str) -> BinaryIO: ...  # streaming read
    def open_range(self, key: str, start: int, end: int | None) -> BinaryIO: ...
    def get_file(self, key: str, dest: Path) -> None: ...
    def delete(self, key: str) -> None: ...  # only the orphan reaper calls this
    def list_keys(self, prefix: str) -> Iterator[tuple[str, int, datetime]]: ...  # key, size, mtime
    def presigned_url(self, key: str, expires_s: int) -> str | None: ...  # None: not supported (local)


# --------------------------------------------------------------------------- hashing helpers
# sha256_bytes / sha256_file / sha256_stream are registry.hashing's, re-exported here.


class HashingReader(io.RawIOBase):
    """Wraps a source stream; hashes and counts every byte read through it.

    Backends read the bytes to store through this and call :meth:`verify` before the object
    becomes visible. ``BaseStore`` checks that they did.
    """

    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self._source = source
        self._hash = hashlib.sha256()
        self.bytes_read = 0
        self.verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._source.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._hash.update(data)
        self.bytes_read += n
        return n

    def read_chunk(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer only at end of stream)."""
        parts: list[bytes] = []
        remaining = size
        while remaining > 0:
            data = self._source.read(remaining)
            if not data:
                break
            self._hash.update(data)
            self.bytes_read += len(data)
            parts.append(data)
            remaining -= len(data)
        return b"".join(parts)

    def drain(self) -> None:
        while self.read_chunk(CHUNK_SIZE):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def digest(self) -> bytes:
        return self._hash.digest()

    def verify(self, expected_sha256: str) -> None:
        """Raise ``IntegrityFailure`` unless the bytes read so far hash to ``expected_sha256``."""
        actual = self.hexdigest()
        if actual != expected_sha256:
            raise IntegrityFailure(
                f"content sha256 {actual} ({self.bytes_read} bytes) does not match the declared "
                f"sha256 {expected_sha256}; nothing was stored",
                expected=expected_sha256,
                actual=actual,
            )
        self.verified = True


class _VerifyingRaw(io.RawIOBase):
    """Read-through wrapper that raises ``IntegrityFailure`` at end of stream on a mismatch."""

    def __init__(self, source: BinaryIO, expected_sha256: str, what: str) -> None:
        super().__init__()
        self._source = source
        self._expected = expected_sha256
        self._what = what
        self._hash = hashlib.sha256()
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._source.read(len(buffer))
        n = len(data)
        if n:
            buffer[:n] = data
            self._hash.update(data)
        elif not self._checked:
            self._checked = True
            actual = self._hash.hexdigest()
            if actual != self._expected:
                raise IntegrityFailure(
                    f"stored object {self._what} has sha256 {actual}, expected {self._expected}",
                    expected=self._expected,
                    actual=actual,
                )
        return n

    def close(self) -> None:
        try:
            self._source.close()
        finally:
            super().close()


class KeyTaken(Exception):  # noqa: N818 - internal signal, never leaves BaseStore
    """Raised by ``BaseStore._create`` when a create-only write found the key already taken."""


# --------------------------------------------------------------------------- base class


class BaseStore(ABC):
    """Shared implementation of :class:`ArtifactStore`; see the module docstring."""

    # ---- primitives a backend implements

    @abstractmethod
    def _existing_sha256(self, key: str) -> str | None:
        """sha256 of the object at ``key`` (hashing it if nothing recorded), ``None`` if absent."""

    @abstractmethod
    def _create(self, key: str, reader: HashingReader, *, sha256: str, size: int) -> None:
        """Store everything read from ``reader`` at ``key``, create-only.

        Must call ``reader.verify(sha256)`` after consuming the stream and before the object
        becomes visible, must leave nothing behind on any error, and must raise ``KeyTaken``
        (and leave the existing object untouched) if the key exists.
        """

    @abstractmethod
    def _open(self, key: str) -> tuple[BinaryIO, str | None]:
        """A stream of the whole object and its recorded sha256 (``None`` if none recorded)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def open_range(self, key: str, start: int, end: int | None) -> BinaryIO:
        """Bytes ``[start, end)`` -- *end exclusive*, like a Python slice; ``end=None``: to the end.

        (An HTTP ``Range: bytes=a-b`` header is ``open_range(key, a, b + 1)``.) ``end`` past the
        end of the object is clipped; ``start`` at or past the end raises ``InvalidRange``; a
        negative ``start`` or ``end <= start`` raises ``ValueError``.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error (the reaper may race itself)."""

    @abstractmethod
    def list_keys(self, prefix: str) -> Iterator[tuple[str, int, datetime]]: ...

    @abstractmethod
    def presigned_url(self, key: str, expires_s: int) -> str | None: ...

    # ---- shared logic

    def put_file(self, key: str, path: Path, *, sha256: str) -> None:
        self._check_put(key, sha256)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._put(key, f, sha256=sha256, size=size)  # type: ignore[arg-type]

    def put_bytes(self, key: str, data: bytes, *, sha256: str) -> None:
        self._check_put(key, sha256)
        self._put(key, io.BytesIO(data), sha256=sha256, size=len(data))

    def open(self, key: str) -> BinaryIO:
        """Stream the object; for blob keys the sha256 is verified at end of stream."""
        check_key(key)
        stream, recorded = self._open(key)
        expected = sha256_of_key(key)
        if expected is not None and recorded is not None and recorded != expected:
            stream.close()
            raise IntegrityFailure(
                f"stored object {key!r} records sha256 {recorded}, its key says {expected}",
                expected=expected,
                actual=recorded,
            )
        expected = expected or recorded
        if expected is None:
            return stream
        return io.BufferedReader(_VerifyingRaw(stream, expected, repr(key)), CHUNK_SIZE)  # type: ignore[return-value]

    def get_file(self, key: str, dest: Path) -> None:
        """Download to ``dest`` atomically (temp file + rename); verified like :meth:`open`."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, self.open(key) as src:
                shutil.copyfileobj(src, out, CHUNK_SIZE)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # ---- internals

    @staticmethod
    def _check_put(key: str, sha256: str) -> None:
        check_key(key)
        check_sha256(sha256)
        addressed = sha256_of_key(key)
        if addressed is not None and addressed != sha256:
            raise ValueError(f"key {key!r} addresses sha256 {addressed}, not {sha256}")

    def _put(self, key: str, source: BinaryIO, *, sha256: str, size: int) -> None:
        reader = HashingReader(source)
        existing = self._existing_sha256(key)
        if existing is None:
            try:
                self._create(key, reader, sha256=sha256, size=size)
            except KeyTaken:
                logger.info("create-only put of %s raced with another writer", key)
                existing = self._existing_sha256(key)
            else:
                if not reader.verified:  # a backend bug, never a user error
                    raise RuntimeError(f"{type(self).__name__}._create did not verify {key!r}")
                logger.info("stored %s (%d bytes)", key, reader.bytes_read)
                return
        # The key is taken. Still verify the caller's bytes so a wrong declaration never passes.
        if not reader.verified:
            reader.drain()
            reader.verify(sha256)
        if existing != sha256:
            raise ObjectExists(key, existing_sha256=existing, new_sha256=sha256)
        logger.debug("put of %s: same content already stored; no-op", key)
