"""ASGI middleware: request body limits enforced while streaming.

(TCP_NODELAY needs no code: asyncio sets it on every TCP transport uvicorn serves.)

Starlette has no body-size limit of its own. A declared Content-Length over the limit is refused
with 413 before any byte of the body is read; a chunked body is counted as it streams in and cut
off with 413 the moment it passes the limit, so nothing large is ever buffered.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_LIMIT = 1024 * 1024
DATASET_PATH = re.compile(r"^/api/tasks/[^/]+/datasets/?$")
MULTIPART_SLACK = 64 * 1024  # form fields and part headers around the files


def _problem(limit: int) -> bytes:
    return json.dumps({
        "type": "/problems/payload-too-large", "title": "Payload too large", "status": 413,
        "detail": f"the request body exceeds {limit} bytes",
    }).encode()


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, upload_limit: int, json_limit: int = JSON_LIMIT) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.json_limit = json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        ctype = headers.get("content-type", "")
        limit = self.upload_limit if ctype.startswith("multipart/") else self.json_limit
        if ctype.startswith("multipart/") and DATASET_PATH.match(scope.get("path", "")):
            # Dataset uploads have their own, smaller cap: refuse them here too, not after the
            # multipart parser has spooled them to disk.
            settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
            limit = min(limit, getattr(settings, "max_dataset_bytes", limit) + MULTIPART_SLACK)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        seen = 0
        started = False
        rejected = False

        async def limited_receive() -> Message:
            # Past the limit we answer 413 ourselves at once and tell the app the client left, so
            # no parser (FastAPI turns parser exceptions into 400) gets to buffer or mislabel it.
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    rejected = True
                    if not started:
                        await self._reject(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return  # the 413 is already on its way; drop what the app says after the disconnect
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            if not rejected:
                raise

    @staticmethod
    async def _reject(send: Send, limit: int) -> None:
        body = _problem(limit)
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
