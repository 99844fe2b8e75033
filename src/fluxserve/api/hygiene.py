"""What every request must satisfy before a route sees it: a URL without NUL characters (PostgreSQL text cannot
hold them, and no id, cursor or name here contains one) and a body within the size cap, enforced while it
streams in rather than after buffering it whole. Uploads (``POST …/files``) keep their own, larger limit."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import orjson

from fluxserve.api.problems import PROBLEM_TYPE
from fluxserve.metrics.middleware import ASGIApp, Message, Receive, Scope, Send


async def _problem(send: Send, status: int, title: str, detail: str, field: str, kind: str) -> None:
    body = orjson.dumps(
        {
            "title": title,
            "detail": detail,
            "status": status,
            "invalid_fields": [{"type": kind, "field": field, "description": detail}],
        }
    )
    headers = [(b"content-type", PROBLEM_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestHygiene:
    """Pure ASGI middleware: 422 for a NUL in the URL, 413 for a body over ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        query: bytes = scope.get("query_string", b"")
        if "\x00" in path or b"\x00" in unquote_to_bytes(query):
            await _problem(send, 422, "Invalid request", "The URL holds a NUL character.", "url", "invalid")
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS") or path.endswith("/files"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _problem(send, 413, "Payload too large", self._too_large(), "body", "too_large")
            return
        # Read the body here, stopping at the cap, then replay it: a route never buffers more than the cap.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; the route sees the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _problem(send, 413, "Payload too large", self._too_large(), "body", "too_large")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return (
            f"The request body is over {self.max_body_bytes} bytes (FLUXSERVE_MAX_BODY_BYTES); send large images "
            "through POST /v1/files and pass its URL instead"
        )
