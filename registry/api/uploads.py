"""Spooling uploaded files to the work directory (streamed, with a size cap) for the services."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import UploadFile

from registry.errors import InvalidInput, PayloadTooLarge

CHUNK = 1024 * 1024


@contextmanager
def spooled(uploads: dict[str, UploadFile], work_dir: Path, *, max_bytes: int) -> Iterator[dict[str, Path]]:
    """Copy each upload to a private temp dir; yields {field_or_name: path}; always cleans up."""
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=work_dir, prefix="upload-"))
    try:
        out: dict[str, Path] = {}
        total = 0
        for i, (key, upload) in enumerate(uploads.items()):
            dest = tmp / f"{i:04d}"
            with open(dest, "wb") as f:
                while chunk := upload.file.read(CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise PayloadTooLarge(f"upload exceeds {max_bytes} bytes", field=key)
                    f.write(chunk)
            out[key] = dest
        yield out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def plain_filename(upload: UploadFile, *, field: str) -> str:
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    if not name or name in (".", "..") or any(ord(c) < 32 for c in name) or len(name) > 255:
        raise InvalidInput("uploaded file needs a plain file name", field=field)
    return name
