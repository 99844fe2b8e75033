"""Downloading a URL with a byte cap: the one implementation behind input files and forwarded outputs.

The URL passes :func:`~fluxserve.net.guard.check_url` before any connection is made; where it may then
connect is up to the client the caller hands in (a :func:`~fluxserve.net.guard.guarded_client` for URLs a
user or a provider chose). Failures are exceptions, never messages: each caller words them for its users.

- :class:`~fluxserve.net.guard.UnsafeURL`: refused by the URL check (from :func:`open_capped` itself) or by
  the guarded client when it connects (on entering the context);
- :class:`httpx.HTTPStatusError`: the server answered a status the caller does not accept;
- :class:`ResponseTooLarge`: the body is (or says it is) larger than the cap;
- any other :class:`httpx.HTTPError`: the transport failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Container
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager

import httpx

from fluxserve.net.guard import check_url

#: Statuses a download accepts unless the caller says otherwise: any success.
SUCCESS = range(200, 300)


class ResponseTooLarge(Exception):
    """The body is larger than ``limit`` bytes (declared by Content-Length, or counted as it arrived)."""

    def __init__(self, url: str, limit: int) -> None:
        super().__init__(f"{url} is larger than the {limit}-byte limit")
        self.url = url
        self.limit = limit


def open_capped(
    client: httpx.AsyncClient, url: str, *, limit: int, accept: Container[int] = SUCCESS
) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
    """Check ``url`` now, then (on entering) GET it and yield its body as chunks, stopped past ``limit`` bytes.

    The check runs before the context is entered, so a caller can tell a refused URL from a refused
    connection when it needs to. Entering raises :class:`httpx.HTTPStatusError` for a status not in
    ``accept`` and :class:`ResponseTooLarge` for a declared length over the cap; iterating raises
    :class:`ResponseTooLarge` as soon as the bytes received pass it.
    """
    check_url(url)
    return _open(client, url, limit, accept)


@asynccontextmanager
async def _open(
    client: httpx.AsyncClient, url: str, limit: int, accept: Container[int]
) -> AsyncIterator[AsyncIterator[bytes]]:
    async with client.stream("GET", url) as response:
        if response.status_code not in accept:
            raise httpx.HTTPStatusError(
                f"{url} answered HTTP {response.status_code}", request=response.request, response=response
            )
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ResponseTooLarge(url, limit)
        # Closed here rather than by the garbage collector, while the response it reads is still open.
        async with aclosing(_capped(response, url, limit)) as chunks:
            yield chunks


async def _capped(response: httpx.Response, url: str, limit: int) -> AsyncGenerator[bytes, None]:
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(url, limit)
        yield chunk


async def fetch_capped(client: httpx.AsyncClient, url: str, *, limit: int, time_limit: float | None = None) -> bytes:
    """The body of ``url`` in memory (any 2xx), at most ``limit`` bytes, within ``time_limit`` seconds in all.

    Raises as :func:`open_capped` does, and :class:`TimeoutError` when the whole download (connecting,
    redirects and body) takes longer than ``time_limit``.
    """
    download = open_capped(client, url, limit=limit)
    async with asyncio.timeout(time_limit), download as chunks:
        return b"".join([chunk async for chunk in chunks])
