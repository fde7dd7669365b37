from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from registry.api.deps import ReaderDep, SettingsDep, StoreDep
from registry.errors import InvalidInput, NotFound
from registry.storage.keys import blob_key

router = APIRouter(tags=["files"])

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _integrity_headers(sha256: str) -> dict[str, str]:
    b64 = base64.b64encode(bytes.fromhex(sha256)).decode()
    return {"ETag": f'"{sha256}"', "X-Checksum-Sha256": sha256, "Repr-Digest": f"sha-256=:{b64}:",
            "Accept-Ranges": "bytes", "Cache-Control": "public, max-age=31536000, immutable"}


@router.api_route("/api/blobs/{sha256}", methods=["GET", "HEAD"], response_model=None)
def download_blob(
    store: StoreDep, settings: SettingsDep, _: ReaderDep, sha256: str,
    range_: Annotated[str | None, Header(alias="Range")] = None,
    redirect: Annotated[bool, Query()] = True,
) -> Response:
    """Download a stored file by sha256: a short-lived presigned redirect on S3, streamed otherwise."""
    if not SHA_RE.fullmatch(sha256):
        raise InvalidInput("sha256 must be 64 lowercase hex characters", field="sha256")
    key = blob_key(sha256)
    # Content addresses are unguessable; a blob that is not stored is simply not found.
    if not store.exists(key):
        raise NotFound(f"no stored file has sha256 {sha256}", field="sha256")
    if redirect:
        url = store.presigned_url(key, settings.presign_expires_s)
        if url is not None:
            return RedirectResponse(url, status_code=307, headers=_integrity_headers(sha256))
    size = store.size(key)
    headers = _integrity_headers(sha256)
    start, end = 0, size - 1
    status = 200
    if range_:
        m = RANGE_RE.fullmatch(range_.strip())
        if not m or (m.group(1) == "" and m.group(2) == ""):
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        if m.group(1) == "":
            start = max(0, size - int(m.group(2)))
        else:
            start = int(m.group(1))
            end = min(size - 1, int(m.group(2))) if m.group(2) else size - 1
        if start > end or start >= size:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)

    def body() -> Iterator[bytes]:
        with store.open_range(key, start, end + 1) as f:
            remaining = end - start + 1
            while remaining > 0:
                chunk = f.read(min(1024 * 1024, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    return StreamingResponse(body(), status_code=status, headers=headers, media_type="application/octet-stream")
