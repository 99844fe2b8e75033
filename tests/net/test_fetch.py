"""The capped downloader shared by input files and forwarded outputs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from fluxserve.net.fetch import ResponseTooLarge, fetch_capped, open_capped
from fluxserve.net.guard import UnsafeURL


def _client(response: Callable[[], httpx.Response], seen: list[httpx.Request] | None = None) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return response()

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def _chunks(n: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield b"x" * size


async def test_the_body_within_the_cap_comes_back_whole() -> None:
    async with _client(lambda: httpx.Response(200, content=b"hello")) as client:
        assert await fetch_capped(client, "https://example.com/a.png", limit=5) == b"hello"


async def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    async with _client(lambda: httpx.Response(200, content=b"x" * 11)) as client:
        with pytest.raises(ResponseTooLarge) as caught:
            await fetch_capped(client, "https://example.com/a.png", limit=10)
    assert caught.value.limit == 10


async def test_an_undeclared_body_is_cut_off_at_the_cap() -> None:
    # A chunked body (no Content-Length): the count of received bytes is what stops it.
    async with _client(lambda: httpx.Response(200, content=_chunks(4, 4))) as client:
        with pytest.raises(ResponseTooLarge):
            await fetch_capped(client, "https://example.com/a.png", limit=10)


async def test_a_refused_status_is_an_http_status_error() -> None:
    async with _client(lambda: httpx.Response(404, content=b"gone")) as client:
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await fetch_capped(client, "https://example.com/a.png", limit=10)
    assert caught.value.response.status_code == 404


async def test_accept_narrows_the_statuses_taken() -> None:
    async with _client(lambda: httpx.Response(203, content=b"ok")) as client:
        assert await fetch_capped(client, "https://example.com/a", limit=10) == b"ok"
        with pytest.raises(httpx.HTTPStatusError):
            async with open_capped(client, "https://example.com/a", limit=10, accept=(200,)):
                pass


async def test_an_unsafe_url_is_refused_before_any_request() -> None:
    seen: list[httpx.Request] = []
    async with _client(lambda: httpx.Response(200), seen) as client:
        with pytest.raises(UnsafeURL):
            open_capped(client, "file:///etc/passwd", limit=10)
        with pytest.raises(UnsafeURL):
            await fetch_capped(client, "ftp://example.com/x", limit=10)
    assert seen == []


async def test_the_whole_download_has_a_time_limit() -> None:
    async def slow() -> AsyncIterator[bytes]:
        yield b"a"
        await asyncio.sleep(5)
        yield b"b"

    async with _client(lambda: httpx.Response(200, content=slow())) as client:
        with pytest.raises(TimeoutError):
            await fetch_capped(client, "https://example.com/a", limit=10, time_limit=0.1)
