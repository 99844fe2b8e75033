"""A tiny HTTP listener for processes without the API (``fluxserve worker``): ``/metrics`` and ``/health``.

A worker process has no web framework running, and pulling one in to answer two GET paths would cost
more than the handful of lines below. It speaks just enough HTTP/1.1 for Prometheus and for liveness
probes: one request per connection, GET or HEAD, no body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from fluxserve.metrics.prometheus import CONTENT_TYPE, Metrics

log = logging.getLogger("fluxserve.metrics")

#: A client has this many seconds to send its request line and headers.
REQUEST_TIMEOUT = 5.0
#: Longest request line or header line accepted, and most header lines: scrapers send a few short ones.
MAX_LINE = 8192
MAX_HEADERS = 100

#: Answers ``/health``: (healthy, JSON body).
HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class MetricsListener:
    """Serves ``metrics`` at ``/metrics`` and ``health()`` at ``/health`` on ``host:port`` (0: a free port)."""

    def __init__(self, metrics: Metrics, health: HealthCheck, *, host: str, port: int) -> None:
        self.metrics = metrics
        self.health = health
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Start listening (raises ``OSError`` if the address is taken); ``port`` becomes the bound port."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_LINE)
        self.port = int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """Where the metrics are, for the log."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def close(self) -> None:
        """Stop listening and drop open connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    def respond(self, method: str, path: str) -> tuple[int, str, bytes, dict[str, str]]:
        """(status, content type, body, extra headers) for a request; pure, so it is testable without sockets."""
        if path not in ("/metrics", "/health"):
            return 404, "text/plain; charset=utf-8", b"Not found: try /metrics or /health\n", {}
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"Method not allowed\n", {"Allow": "GET, HEAD"}
        if path == "/metrics":
            # Queue depth is left out: it is shared state, and the API replicas already report it.
            return 200, CONTENT_TYPE, self.metrics.render(None), {}
        healthy, body = self.health()
        return (200 if healthy else 503), "application/json", orjson.dumps(body), {"Cache-Control": "no-store"}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            headers: dict[str, str]
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    method, path = await _read_request(reader)
            except (ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                status, ctype, body, headers = 400, "text/plain; charset=utf-8", b"Bad request\n", {}
                method = "GET"
            else:
                status, ctype, body, headers = self.respond(method, path)
            head = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}", f"Content-Type: {ctype}"]
            head += [f"Content-Length: {len(body)}", "Connection: close"]
            head += [f"{name}: {value}" for name, value in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a client that went away or never spoke: nothing to answer
        except Exception:
            log.exception("metrics listener: request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and path of one request; its headers are read and ignored. ``ValueError`` if malformed."""
    request_line = (await reader.readuntil(b"\n")).decode("latin-1").strip()
    for _ in range(MAX_HEADERS):
        if (await reader.readuntil(b"\n")).strip() == b"":
            break
    else:
        raise ValueError("too many header lines")
    method, target, version = request_line.split(" ")
    if not version.startswith("HTTP/"):
        raise ValueError(f"not an HTTP request line: {request_line!r}")
    return method.upper(), target.split("?", 1)[0]
