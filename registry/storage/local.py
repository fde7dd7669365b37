"""``LocalStore``: a directory on a local (POSIX) file system.

Writes are create-only and atomic: bytes go to a temp file (``.tmp-*``) in the target
directory, are fsynced and verified, the file is made read-only (0o444) and then hard-linked to
its final name with ``os.link``, which fails if the name exists, so an object is never
overwritten and never visible half-written. The temp file is removed on every path, including
errors (disk full, ...). Readers never see temp files (``list_keys`` skips dot files and keys
cannot start with a dot).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from registry.storage.base import CHUNK_SIZE, BaseStore, HashingReader, KeyTaken, sha256_file
from registry.storage.errors import InvalidRange, ObjectNotFound, StorageError
from registry.storage.keys import check_key, check_prefix

__all__ = ["LocalStore"]

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"


class _LimitedRaw(io.RawIOBase):
    """At most ``length`` bytes of ``f`` from its current position; closes ``f``."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        super().__init__()
        self._f = f
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        data = self._f.read(min(len(buffer), self._left))
        n = len(data)
        buffer[:n] = data
        self._left -= n
        return n

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(BaseStore):
    """Objects are files under ``root``; the key's ``/`` separated segments are the path."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        check_key(key)  # no "..", no absolute paths, no dot segments: stays under root
        return self.root.joinpath(*key.split("/"))

    def _ensure_dir(self, directory: Path) -> None:
        """Create ``directory`` and missing parents, fsyncing each new entry's parent."""
        if directory.is_dir():
            return
        missing = []
        d = directory
        while not d.is_dir():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue  # a concurrent writer made it
            if self._fsync:
                _fsync_dir(d.parent)

    def remove_stale_temp_files(self, older_than_s: float = 3600.0) -> int:
        """Delete ``.tmp-*`` files left by writers that were killed mid-write; returns the count.

        Live writers finish in far less than ``older_than_s``; the orphan reaper calls this.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.startswith(TEMP_PREFIX):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    continue
        if removed:
            logger.info("removed %d stale temp files under %s", removed, self.root)
        return removed

    # ---- BaseStore primitives

    def _existing_sha256(self, key: str) -> str | None:
        path = self._path(key)
        try:
            return sha256_file(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {key!r}: {exc}") from exc

    def _create(self, key: str, reader: HashingReader, *, sha256: str, size: int) -> None:
        path = self._path(key)
        directory = path.parent
        tmp: str | None = None
        try:
            self._ensure_dir(directory)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(reader, out, CHUNK_SIZE)
                out.flush()
                if self._fsync:
                    os.fsync(out.fileno())
            reader.verify(sha256)  # IntegrityFailure: the finally below removes the temp file
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, path)  # atomic, fails if the name exists: never overwrites
            except FileExistsError:
                raise KeyTaken(key) from None
            if self._fsync:
                _fsync_dir(directory)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise StorageError(f"no space left on device while storing {key!r}") from exc
            raise StorageError(f"cannot store {key!r}: {exc}") from exc
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                except OSError:
                    logger.warning("could not remove temp file %s", tmp, exc_info=True)

    def _open(self, key: str) -> tuple[BinaryIO, str | None]:
        return self._open_file(key), None

    # ---- the rest of ArtifactStore

    def _open_file(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")  # noqa: SIM115 - returned to the caller
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"cannot open {key!r}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not path.is_file():
            raise ObjectNotFound(key)
        return st.st_size

    def open_range(self, key: str, start: int, end: int | None) -> BinaryIO:
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"invalid range {start}-{end}")
        f = self._open_file(key)
        try:
            total = os.fstat(f.fileno()).st_size
            if start >= total:
                raise InvalidRange(f"range start {start} is not below the object size {total}")
            stop = total if end is None else min(end, total)
            f.seek(start)
        except BaseException:
            f.close()
            raise
        return io.BufferedReader(_LimitedRaw(f, stop - start), CHUNK_SIZE)  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r}: {exc}") from exc
        logger.info("deleted %s", key)

    def list_keys(self, prefix: str) -> Iterator[tuple[str, int, datetime]]:
        """Every object whose key starts with ``prefix`` (lexicographic order within a directory)."""
        check_prefix(prefix)
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*base.split("/")) if base else self.root
        yield from self._walk(start, base, prefix)

    def _walk(self, directory: Path, dir_key: str, prefix: str) -> Iterator[tuple[str, int, datetime]]:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith("."):  # temp files; keys never start with a dot
                continue
            key = f"{dir_key}/{entry.name}" if dir_key else entry.name
            if entry.is_dir(follow_symlinks=False):
                sub = key + "/"
                if sub.startswith(prefix) or prefix.startswith(sub):
                    yield from self._walk(Path(entry.path), key, prefix)
            elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # deleted while listing
                    continue
                yield key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        check_key(key)
        return None
