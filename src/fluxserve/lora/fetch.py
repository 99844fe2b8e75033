"""LoRA weights by reference (URL, Replicate training tar, Hugging Face repo) to a checked local ``.safetensors``
file, through an on-disk cache with a size budget.

Settings (read by the caller, handed to :class:`LoraCache`; ``fluxserve.config`` names them):

- ``FLUXSERVE_MAX_LORA_BYTES`` → ``max_bytes``: largest LoRA file (or tar) fetched; default 2 GB.
- ``FLUXSERVE_LORA_CACHE_BYTES`` → ``budget_bytes``: the cache's size; least recently used files beyond it
  are removed, except those a running prediction holds. Suggested default 20 GB.
- ``FLUXSERVE_LORA_FETCH_TIMEOUT_SECONDS`` → ``time_limit``: wall-clock cap on one download.
- ``FLUXSERVE_ALLOW_LOOPBACK_URLS`` → the policy of the ``guarded_client`` that ``client_factory`` builds.
- the directory: suggested ``lora-cache/`` in the data dir (see :mod:`fluxserve.lora.index` for its layout).

URLs are downloaded through :func:`fluxserve.net.fetch.open_capped` with an SSRF-guarded client, streamed
to tmp/ and renamed into place once whole and checked. A URL fetched before is revalidated with
``If-None-Match``/``If-Modified-Since`` (a 304 is a hit, and an unreachable server then leaves the cached copy
in use); a server that sends neither ETag nor Last-Modified is trusted for as long as the entry lives.
Concurrent gets of one reference share one download in a process, and wait on a lock file across processes.
Hugging Face repos go through ``huggingface_hub`` and its own cache (:mod:`fluxserve.lora.hub`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

import fluxserve.lora.hub as hub
from fluxserve.lora.download import Fetched, Unreachable, download
from fluxserve.lora.files import (
    Checked,
    check_lora,
    extract_lora,
    is_tar,
    looks_like_safetensors,
    lora_rank,
    megabytes,
)
from fluxserve.lora.index import Index, lock_file
from fluxserve.lora.refs import HubRef, LoraError, LoraRef, UrlRef, parse_lora_ref

DEFAULT_MAX_BYTES = 2_000_000_000
DEFAULT_BUDGET_BYTES = 20_000_000_000
DEFAULT_TIME_LIMIT = 600.0


def _ignore(_line: str) -> None:
    pass


@dataclass(eq=False)
class LoraFile:
    """A checked LoRA file on disk. While it is not released (:meth:`release`, or leaving ``with``), the cache
    keeps it: use the path only until then."""

    path: Path
    size: int
    sha256: str
    rank: int | None  #: largest first dimension of its lora_A/lora_down matrices
    from_cache: bool
    source: str  #: the URL (or Hugging Face file URL) it came from, for messages
    _lease: IO[bytes] | None = field(default=None, repr=False)

    def release(self) -> None:
        """Let the cache evict the file again."""
        if self._lease is not None:
            self._lease.close()
            self._lease = None

    def __enter__(self) -> LoraFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class _Resolved:
    checked: Checked
    downloaded: bool
    seconds: float
    owned: bool  # in our blobs/ (leased), not in the Hugging Face cache
    source: str
    notes: tuple[str, ...] = ()


@dataclass
class _Flight:
    task: asyncio.Task[_Resolved]
    waiters: int = 0


class LoraCache:
    """Fetches LoRA references into ``directory``; see the module doc. ``client_factory`` returns a new
    client (normally :func:`~fluxserve.net.guard.guarded_client`, following redirects) that the cache closes."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        time_limit: float = DEFAULT_TIME_LIMIT,
        client_factory: Callable[[], httpx.AsyncClient],
    ) -> None:
        self.index = Index(directory)
        self.max_bytes = max_bytes
        self.budget_bytes = budget_bytes
        self.time_limit = time_limit
        self.client_factory = client_factory
        self._flights: dict[str, _Flight] = {}
        self.index.clean_tmp(older_than=max(2 * time_limit, 3600.0))

    async def get(
        self, ref: LoraRef | str, field: str = "lora_weights", log: Callable[[str], None] = _ignore
    ) -> LoraFile:
        """The local file behind ``ref`` (text is parsed first); :class:`LoraError` naming ``field`` on failure.
        Release the result when the prediction is done with it."""
        if isinstance(ref, str):
            ref = parse_lora_ref(ref, field)
        log(f"Downloading LoRA {ref.display} …")
        for _attempt in range(3):
            resolved, led = await self._join(ref, field)
            checked = resolved.checked
            lease = self.index.lease(checked.sha256) if resolved.owned else None
            if checked.path.is_file():
                break
            if lease is not None:  # evicted by another process between its download and our lease
                lease.close()
        else:
            raise LoraError(field, f"{ref.display} kept leaving the LoRA cache while being fetched; try again")
        for note in resolved.notes:
            log(note)
        downloaded = led and resolved.downloaded
        if downloaded:
            log(f"Downloaded LoRA {megabytes(checked.size)} in {resolved.seconds:.1f} s")
        else:
            log(f"LoRA from cache ({megabytes(checked.size)})")
        return LoraFile(
            checked.path, checked.size, checked.sha256, checked.rank, not downloaded, resolved.source, lease
        )

    @contextlib.asynccontextmanager
    async def use(
        self, ref: LoraRef | str, field: str = "lora_weights", log: Callable[[str], None] = _ignore
    ) -> AsyncIterator[LoraFile]:
        """:meth:`get`, released when the block ends."""
        with await self.get(ref, field, log) as lora:
            yield lora

    async def _join(self, ref: LoraRef, field: str) -> tuple[_Resolved, bool]:
        """Resolve ``ref`` once however many ask at the same time; (result, whether this caller started it)."""
        flight = self._flights.get(ref.key)
        led = flight is None
        if flight is None:
            flight = _Flight(asyncio.create_task(self._resolve(ref, field)))
            self._flights[ref.key] = flight
            flight.task.add_done_callback(functools.partial(self._land, ref.key, flight))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), led
        except asyncio.CancelledError:
            if flight.waiters == 1 and not flight.task.done():
                flight.task.cancel()  # nobody else wants it
            raise
        finally:
            flight.waiters -= 1

    def _land(self, key: str, flight: _Flight, _task: object) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    async def _resolve(self, ref: LoraRef, field: str) -> _Resolved:
        if isinstance(ref, HubRef):
            return await self._resolve_hub(ref, field)
        return await self._resolve_url(ref, field)

    # -- URLs -------------------------------------------------------------------------------------------------

    async def _resolve_url(self, ref: UrlRef, field: str) -> _Resolved:
        started = time.time()
        async with self._key_lock(ref, field):
            data = await asyncio.to_thread(self.index.read)
            entry: dict[str, Any] | None = data["urls"].get(ref.url)
            info = data["blobs"].get(entry["sha256"]) if entry else None
            fetched: Fetched | None = None
            revalidated = False
            if entry is not None and info is not None:
                cached = Checked(
                    self.index.blob_path(entry["sha256"]), int(info["size"]), entry["sha256"], info.get("rank")
                )
                with self.index.lease(cached.sha256):
                    if cached.path.is_file():
                        if float(entry.get("checked", 0)) >= started or not (entry["etag"] or entry["last_modified"]):
                            # Just fetched by another process, or a server without validators: trusted.
                            return await self._hit(ref, cached, revalidated=False)
                        headers = {"If-None-Match": entry["etag"], "If-Modified-Since": entry["last_modified"]}
                        try:
                            fetched = await self._download(ref, field, {k: v for k, v in headers.items() if v})
                        except Unreachable as exc:
                            note = f"Could not revalidate the cached LoRA ({exc.message}); using the cached copy"
                            return dataclasses.replace(await self._hit(ref, cached, revalidated=False), notes=(note,))
                        if fetched is None:  # 304 Not Modified
                            return await self._hit(ref, cached, revalidated=True)
                        revalidated = True
            if not revalidated:
                fetched = await self._download(ref, field, {})
            if fetched is None:
                raise LoraError(field, f"{ref.url} answered HTTP 304 to a request that was not conditional")
            finish = asyncio.to_thread(self._finish, fetched, ref, field)
            # Shielded: once the bytes are here, a cancelled prediction still leaves them checked and cached.
            checked, lease = await asyncio.shield(finish)
            lease.close()
            return _Resolved(checked, downloaded=True, seconds=fetched.seconds, owned=True, source=ref.url)

    async def _download(self, ref: UrlRef, field: str, headers: dict[str, str]) -> Fetched | None:
        return await download(
            self.client_factory,
            ref.url,
            self.index.tmp,
            field=field,
            max_bytes=self.max_bytes,
            time_limit=self.time_limit,
            headers=headers,
        )

    async def _hit(self, ref: UrlRef, cached: Checked, *, revalidated: bool) -> _Resolved:
        def touch() -> None:
            now = time.time()
            with self.index.edit() as data:
                if cached.sha256 in data["blobs"]:
                    data["blobs"][cached.sha256]["used"] = now
                if revalidated and ref.url in data["urls"]:
                    data["urls"][ref.url]["checked"] = now

        await asyncio.to_thread(touch)
        return _Resolved(cached, downloaded=False, seconds=0.0, owned=True, source=ref.url)

    @contextlib.asynccontextmanager
    async def _key_lock(self, ref: LoraRef, field: str) -> AsyncIterator[None]:
        """The cross-process lock of one reference: the first process fetches, the others wait for it."""
        path = self.index.locks / f"{hashlib.sha256(ref.key.encode()).hexdigest()[:40]}.lock"
        deadline = time.monotonic() + self.time_limit + 60
        while (held := lock_file(path, blocking=False)) is None:
            if time.monotonic() > deadline:
                raise LoraError(field, f"timed out waiting for another process to download {ref.display}")
            await asyncio.sleep(0.1)
        try:
            yield
        finally:
            held.close()

    def _finish(self, fetched: Fetched, ref: UrlRef, field: str) -> tuple[Checked, IO[bytes]]:
        """Check the download (extracting a tar), store it under its hash, record it, evict: in a thread.
        The result comes leased, so that the eviction that follows cannot take it."""
        extracted = self.index.tmp / f"{uuid.uuid4().hex}.part"
        try:
            if looks_like_safetensors(fetched.tmp):
                checked = check_lora(fetched.tmp, fetched.sha256, field, ref.url)
            elif is_tar(fetched.tmp):
                _path, sha = extract_lora(fetched.tmp, extracted, field=field, source=ref.url, max_bytes=self.max_bytes)
                checked = check_lora(extracted, sha, field, f"the .safetensors file in the tar at {ref.url}")
            else:
                lora_rank(fetched.tmp, field, ref.url)  # raises: not a safetensors file
                raise AssertionError("unreachable")
            with open(checked.path, "rb") as fh:
                os.fsync(fh.fileno())
            lease = self.index.lease(checked.sha256)
            try:
                target = self.index.blob_path(checked.sha256)
                if target.is_file():
                    checked.path.unlink()  # the same bytes came from elsewhere before
                else:
                    os.replace(checked.path, target)
                now = time.time()
                with self.index.edit() as data:
                    data["blobs"][checked.sha256] = {"size": checked.size, "rank": checked.rank, "used": now}
                    data["urls"][ref.url] = {
                        "sha256": checked.sha256,
                        "etag": fetched.etag,
                        "last_modified": fetched.last_modified,
                        "checked": now,
                    }
                    self.index.evict(data, self.budget_bytes)
            except BaseException:
                lease.close()
                raise
            return dataclasses.replace(checked, path=target), lease
        finally:
            for leftover in (fetched.tmp, extracted):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    async def _resolve_hub(self, ref: HubRef, field: str) -> _Resolved:
        got = await hub.fetch(ref, field, index=self.index, max_bytes=self.max_bytes, time_limit=self.time_limit)
        return _Resolved(got.checked, downloaded=got.downloaded, seconds=got.seconds, owned=False, source=got.source)
