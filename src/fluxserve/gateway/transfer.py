"""Files across the gateway: input files sent upstream, output files brought home.

File inputs arrive as bytes (the worker resolved them) and travel upstream as data URIs or as uploads to
the provider's ``/files``, as the provider's ``input_files`` setting says. Every output file is downloaded
(through the one capped downloader, :mod:`fluxserve.net.fetch`) so that it is stored and served by us:
provider URLs expire within the hour, ours live as long as our retention says.
"""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from fluxserve.formats import IMAGE_FORMATS, OCTET_STREAM, extension_for_mime
from fluxserve.gateway.upstream import Upstream, UpstreamError
from fluxserve.net.fetch import ResponseTooLarge, open_capped
from fluxserve.net.guard import UnsafeURL
from fluxserve.predictors.images import sniff_image
from fluxserve.tree import amap_leaves

#: Files up to this size travel upstream as data URIs in ``auto`` mode (Replicate's guidance for data URIs).
DATA_URI_MAX_BYTES = 256 * 1024
#: Tries per output file; transport errors and 5xx answers are retried, with a doubling pause from 0.5 s.
DOWNLOAD_ATTEMPTS = 4
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

# --- inputs ----------------------------------------------------------------------------------------------


async def input_value(upstream: Upstream, field: str, value: Any) -> Any:
    """File inputs arrive as bytes (the worker resolved them); turn each into something the provider reads."""
    if isinstance(value, bytes):
        return await _file_ref(upstream, field, value)
    if isinstance(value, list) and value and all(isinstance(v, bytes) for v in value):
        return [await _file_ref(upstream, f"{field}[{i}]", v) for i, v in enumerate(value)]
    return value


async def _file_ref(upstream: Upstream, field: str, data: bytes) -> str:
    fmt = sniff_image(data)
    mime = IMAGE_FORMATS[fmt].mime if fmt in IMAGE_FORMATS else OCTET_STREAM
    mode = upstream.provider.input_files
    if mode == "data_uri" or (mode == "auto" and len(data) <= DATA_URI_MAX_BYTES):
        return _data_uri(mime, data)
    filename = f"{field.replace('[', '-').rstrip(']')}{extension_for_mime(mime) or '.bin'}"
    try:
        response = await upstream.api.post(
            f"{upstream.provider.base_url}/files",
            files={"content": (filename, data, mime)},
            data={"type": mime},
        )
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{upstream.name} could not be reached to upload {field}: {type(exc).__name__}") from exc
    if response.status_code in (404, 405, 501) and mode == "auto":
        # A provider without a files route (CometAPI documents none): inline the file after all.
        return _data_uri(mime, data)
    if response.status_code not in (200, 201):
        raise UpstreamError(upstream.describe(response, f"uploading {field}"))
    url = (response.json().get("urls") or {}).get("get")
    if not isinstance(url, str):
        raise UpstreamError(f"{upstream.name} answered the upload of {field} without urls.get")
    return url


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# --- outputs ---------------------------------------------------------------------------------------------


async def rehost_outputs(upstream: Upstream, output: Any, out_dir: Path, limit: int) -> Any:
    """Download every file URL (and decode every data URI) in ``output`` into ``out_dir``; keep the JSON shape.

    Each file may be at most ``limit`` bytes.
    """
    names: set[str] = set()

    async def rehost(leaf: Any) -> Any:
        if isinstance(leaf, str) and leaf.startswith(("https://", "http://", "data:")):
            return await _download(upstream, leaf, out_dir, names, limit)
        return leaf

    return await amap_leaves(output, rehost)


async def _download(upstream: Upstream, url: str, out_dir: Path, names: set[str], limit: int) -> Path:
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        mime = header[5:].split(";")[0]
        data = base64.b64decode(payload) if ";base64" in header else unquote(payload).encode()
        path = out_dir / _unique_name(f"output{extension_for_mime(mime) or '.bin'}", names)
        path.write_bytes(data)
        return path
    name = _unique_name(_SAFE_NAME.sub("_", unquote(urlsplit(url).path.rsplit("/", 1)[-1])) or "output", names)
    path = out_dir / name
    client = upstream.client_for(url)
    delay = 0.5
    for attempt in range(DOWNLOAD_ATTEMPTS):
        try:
            await _fetch_to(upstream, client, url, path, limit)
            return path
        except UpstreamError:
            raise
        except (httpx.HTTPError, OSError) as exc:
            if attempt == DOWNLOAD_ATTEMPTS - 1:
                raise UpstreamError(
                    f"Could not download output {name} from {upstream.provider.name}: {type(exc).__name__}"
                ) from exc
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


async def _fetch_to(upstream: Upstream, client: httpx.AsyncClient, url: str, path: Path, limit: int) -> None:
    """Download ``url`` into ``path``; a 5xx or transport error propagates (to be retried), the rest is final."""
    provider = upstream.provider.name
    try:
        download = open_capped(client, url, limit=limit, accept=(200,))
    except UnsafeURL as exc:
        raise UpstreamError(f"{provider} returned an output URL that may not be fetched: {exc}") from exc
    try:
        async with download as chunks:
            with path.open("wb") as out:
                async for chunk in chunks:
                    out.write(chunk)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code >= 500:
            raise
        raise UpstreamError(
            f"Downloading output {path.name} from {provider} answered HTTP {exc.response.status_code}"
        ) from exc
    except ResponseTooLarge as exc:
        raise UpstreamError(f"Output {path.name} from {provider} is larger than {limit} bytes") from exc


def _unique_name(name: str, names: set[str]) -> str:
    candidate, i = name, 1
    while candidate in names:
        stem, dot, ext = name.rpartition(".")
        candidate = f"{stem}-{i}.{ext}" if dot else f"{name}-{i}"
        i += 1
    names.add(candidate)
    return candidate
