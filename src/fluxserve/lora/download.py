"""One LoRA download: GET through :func:`~fluxserve.net.fetch.open_capped` (SSRF check, byte cap) within a
wall-clock cap, streamed to a file in the cache's tmp/ while hashed; failures worded for the client."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from fluxserve.lora.files import human_size
from fluxserve.lora.refs import LoraError
from fluxserve.net.fetch import SUCCESS, ResponseTooLarge, open_capped
from fluxserve.net.guard import UnsafeURL

_REVALIDATE = {*SUCCESS, 304}
_WRITE_BATCH = 4 * 1024 * 1024


@dataclass(frozen=True)
class Fetched:
    """A whole body in ``tmp``, its hash and size, the validators the server sent, and how long it took."""

    tmp: Path
    sha256: str
    size: int
    etag: str | None
    last_modified: str | None
    seconds: float


class Unreachable(LoraError):
    """The server could not be reached or did not answer in time (a cached copy may stand in)."""


async def download(
    client_factory: Callable[[], httpx.AsyncClient],
    url: str,
    tmp_dir: Path,
    *,
    field: str,
    max_bytes: int,
    time_limit: float,
    headers: dict[str, str],
) -> Fetched | None:
    """GET ``url`` into a new file of ``tmp_dir``; None for a 304 when ``headers`` make the request conditional.

    Nothing is left in ``tmp_dir`` on failure: :class:`LoraError` (:class:`Unreachable` for transport failures
    and timeouts) naming ``field``.
    """
    tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
    responses: list[httpx.Response] = []

    async def capture(response: httpx.Response) -> None:
        responses.append(response)  # open_capped yields only the body: its status and headers come from here

    started = time.monotonic()
    try:
        async with asyncio.timeout(time_limit), client_factory() as client:
            client.headers.update(headers)
            hooks = client.event_hooks
            hooks["response"] = [*hooks.get("response", []), capture]
            client.event_hooks = hooks
            accept = _REVALIDATE if headers else SUCCESS
            async with open_capped(client, url, limit=max_bytes, accept=accept) as chunks:
                final = responses[-1] if responses else None
                if final is not None and final.status_code == 304:
                    return None
                digest, size = hashlib.sha256(), 0
                fh = await asyncio.to_thread(open, tmp, "wb")
                try:
                    buffer = bytearray()
                    async for chunk in chunks:
                        digest.update(chunk)
                        size += len(chunk)
                        buffer += chunk
                        if len(buffer) >= _WRITE_BATCH:
                            await asyncio.to_thread(fh.write, bytes(buffer))
                            buffer.clear()
                    await asyncio.to_thread(fh.write, bytes(buffer))
                finally:
                    fh.close()
        etag = final.headers.get("etag") if final is not None else None
        last_modified = final.headers.get("last-modified") if final is not None else None
        return Fetched(tmp, digest.hexdigest(), size, etag, last_modified, time.monotonic() - started)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, Exception):
            raise download_error(exc, url, field, max_bytes, time_limit) from exc
        raise


def download_error(exc: Exception, url: str, field: str, max_bytes: int, time_limit: float) -> LoraError:
    """A download failure worded for the client (re-raises what is not a download failure)."""
    if isinstance(exc, LoraError):
        return exc
    if isinstance(exc, UnsafeURL):
        return LoraError(field, f"{url} is not allowed ({exc})")
    if isinstance(exc, ResponseTooLarge):
        return LoraError(field, f"{url} is larger than the {human_size(max_bytes)} limit (FLUXSERVE_MAX_LORA_BYTES)")
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        meanings = {401: "unauthorized", 403: "forbidden", 404: "not found", 410: "gone"}
        hint = f" ({meanings[status]})" if status in meanings else ""
        if status in (401, 403):
            hint = f" ({meanings[status]}: the URL must be public, or signed)"
        if status >= 500:  # the server's trouble, likely passing: a cached copy may stand in
            return Unreachable(field, f"downloading {url} answered HTTP {status}")
        return LoraError(field, f"downloading {url} answered HTTP {status}{hint}")
    if isinstance(exc, httpx.TooManyRedirects):
        return LoraError(field, f"{url} redirects too many times")
    if isinstance(exc, TimeoutError):
        return Unreachable(field, f"downloading {url} took longer than {time_limit:g} s")
    if isinstance(exc, httpx.TimeoutException):
        return Unreachable(field, f"{url} did not answer in time ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):
        return Unreachable(field, f"cannot connect to {url} ({exc or type(exc).__name__})")
    if isinstance(exc, httpx.HTTPError):
        return Unreachable(field, f"downloading {url} failed ({type(exc).__name__}: {exc})")
    if isinstance(exc, OSError):
        return LoraError(field, f"cannot store {url} in the LoRA cache ({exc})")
    raise exc
