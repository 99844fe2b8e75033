"""Resolve a prediction's file inputs to bytes before the predictor runs.

``data:`` URIs are decoded, our own ``/v1/files`` and ``/v1/outputs`` URLs are read from blob
storage (no network hop), and anything else is fetched through the SSRF-guarded client with a
size cap and a time cap. Every failure names the input.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from fluxserve.catalog.registry import ModelSpec
from fluxserve.net.fetch import ResponseTooLarge, fetch_capped
from fluxserve.net.guard import UnsafeURL
from fluxserve.net.uris import InputURIError, OwnFile, OwnOutput, decode_data_uri, own_reference
from fluxserve.schema import utcnow
from fluxserve.storage import BlobStore, read_blob
from fluxserve.store.store import Store

FILE_TYPES = ("uri", "uri_array")


class InputResolver:
    """Turns the URI inputs of validated values into ``bytes`` (lists for ``uri_array``)."""

    def __init__(self, store: Store, blobs: BlobStore, client: httpx.AsyncClient, *, limit: int, timeout: float):
        self.store = store
        self.blobs = blobs
        self.client = client
        self.limit = limit
        self.timeout = timeout

    async def resolve(self, spec: ModelSpec, key_id: str, values: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``values`` with every file input replaced by its bytes."""
        resolved = dict(values)
        for field in spec.inputs:
            value = values.get(field.name)
            if field.type not in FILE_TYPES or value is None:
                continue
            if isinstance(value, list):
                resolved[field.name] = [
                    await self.fetch(f"{field.name}[{i}]", item, key_id) for i, item in enumerate(value)
                ]
            else:
                resolved[field.name] = await self.fetch(field.name, value, key_id)
        return resolved

    async def fetch(self, field: str, uri: str, key_id: str) -> bytes:
        """The bytes behind one URI input."""
        if uri.startswith("data:"):
            return decode_data_uri(uri, field, self.limit)[1]
        own = own_reference(uri)
        if isinstance(own, OwnFile):
            row = await self.store.get_file(own.file_id, key_id, now=utcnow())
            if row is None:
                raise InputURIError(f"{field}: file {own.file_id} does not exist, has expired or is not yours")
            data = await self._read_blob(field, row.blob_key)
            assert data is not None
            return data
        if isinstance(own, OwnOutput):
            data = await self._read_blob(field, own.blob_key, missing_ok=True)
            if data is not None:
                return data
        return await self._download(field, uri)

    async def _read_blob(self, field: str, key: str, *, missing_ok: bool = False) -> bytes | None:
        try:
            data = await asyncio.to_thread(read_blob, self.blobs, key, self.limit)
        except ValueError as exc:
            raise InputURIError(f"{field}: {exc}") from exc
        if data is None and not missing_ok:
            raise InputURIError(f"{field}: the stored file is gone")
        return data

    async def _download(self, field: str, url: str) -> bytes:
        try:
            return await fetch_capped(self.client, url, limit=self.limit, time_limit=self.timeout)
        except UnsafeURL as exc:
            raise InputURIError(f"{field}: {url} is not allowed ({exc})") from exc
        except ResponseTooLarge as exc:
            raise InputURIError(f"{field}: {url} is larger than the {self.limit}-byte limit") from exc
        except httpx.HTTPStatusError as exc:
            raise InputURIError(f"{field}: fetching {url} answered HTTP {exc.response.status_code}") from exc
        except httpx.TooManyRedirects as exc:
            raise InputURIError(f"{field}: {url} redirects too many times") from exc
        except TimeoutError as exc:
            raise InputURIError(f"{field}: fetching {url} took longer than {self.timeout:.0f} s") from exc
        except httpx.HTTPError as exc:
            raise InputURIError(f"{field}: fetching {url} failed ({type(exc).__name__}: {exc})") from exc
