"""Hostile connections against a real ``fluxserve serve``: slow request heads, silent sockets and stalled bodies
are closed at their deadlines, while a normal client keeps getting answers."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import make_server
from tests.support import Server

DEADLINE = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[Server]:
    env = {
        "FLUXSERVE_HEADER_TIMEOUT_SECONDS": str(DEADLINE),
        "FLUXSERVE_BODY_IDLE_TIMEOUT_SECONDS": str(DEADLINE),
        "FLUXSERVE_WORKER": "false",
    }
    srv = make_server(tmp_path_factory.mktemp("connections"), tiny_weights, None, extra_env=env).start()
    yield srv
    srv.stop()


def _connect(server: Server) -> socket.socket:
    parts = urlsplit(server.base)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.settimeout(0)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server ended the connection: reading gives end-of-file (or a reset), not "nothing yet"."""
    try:
        sock.recv(65536)  # b"" at end-of-file; an answer's bytes (none is sent here) would come before it
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def test_slow_silent_and_stalled_connections_are_closed_while_others_are_served(server: Server) -> None:
    silent = [_connect(server) for _ in range(150)]
    slow_heads = [_connect(server) for _ in range(150)]
    for sock in slow_heads:
        sock.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    stalled = [_connect(server) for _ in range(50)]
    for sock in stalled:
        sock.send(b'POST /v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"input"')
    latencies = []
    started = time.monotonic()
    while time.monotonic() - started < DEADLINE * 2.5:
        # A slowloris client keeps its head coming: one more header line now and then.
        for sock in slow_heads[:50]:
            with contextlib.suppress(OSError):
                sock.send(b"X-Slow: 1\r\n")
        t0 = time.monotonic()
        assert httpx.get(f"{server.base}/health", timeout=5).status_code == 200
        latencies.append(time.monotonic() - t0)
        time.sleep(0.25)
    still_open = [s for s in silent + slow_heads + stalled if not _closed_by_server(s)]
    for sock in silent + slow_heads + stalled:
        sock.close()
    assert not still_open, f"{len(still_open)} of 350 hostile connections still open after {DEADLINE * 2.5} s"
    assert max(latencies) < 1.0, latencies


def test_a_slow_but_moving_body_is_not_cut_off(server: Server) -> None:
    body = b'{"input": {"prompt": "' + b"x" * 40 + b'"}}'
    sock = _connect(server)
    sock.settimeout(10)
    head = (
        f"POST /v1/models/fluxserve-fixtures/noop/predictions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.key}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode())
    for i in range(0, len(body), 10):  # the whole body takes longer than the deadline, each piece well within it
        sock.sendall(body[i : i + 10])
        time.sleep(DEADLINE / 3)
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
