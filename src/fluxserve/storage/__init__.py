"""Blob storage for output files, and the reference format stored in a prediction's output.

Outputs are stored in the database as ``fluxserve-blob:<key>`` strings; the API turns them into
absolute URLs on the host and prefix each request used, so one stored prediction serves correct
links through ``/v1``, ``/replicate/v1`` and any proxy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

BLOB_PREFIX = "fluxserve-blob:"


def blob_ref(key: str) -> str:
    """The string stored in ``output`` for the blob ``key``."""
    return BLOB_PREFIX + key


def map_blob_refs(value: Any, to_url: Callable[[str], str]) -> Any:
    """Return ``value`` with every blob reference replaced by ``to_url(key)`` (recursively)."""
    if isinstance(value, str):
        return to_url(value[len(BLOB_PREFIX) :]) if value.startswith(BLOB_PREFIX) else value
    if isinstance(value, list):
        return [map_blob_refs(v, to_url) for v in value]
    if isinstance(value, dict):
        return {k: map_blob_refs(v, to_url) for k, v in value.items()}
    return value


def blob_keys(value: Any) -> list[str]:
    """Every blob key referenced in ``value`` (recursively)."""
    if isinstance(value, str):
        return [value[len(BLOB_PREFIX) :]] if value.startswith(BLOB_PREFIX) else []
    if isinstance(value, list):
        return [k for v in value for k in blob_keys(v)]
    if isinstance(value, dict):
        return [k for v in value.values() for k in blob_keys(v)]
    return []


def count_blob_refs(value: Any) -> int:
    """How many blob references ``value`` holds (the prediction's ``image_count``)."""
    if isinstance(value, str):
        return int(value.startswith(BLOB_PREFIX))
    if isinstance(value, list):
        return sum(count_blob_refs(v) for v in value)
    if isinstance(value, dict):
        return sum(count_blob_refs(v) for v in value.values())
    return 0


@dataclass(frozen=True)
class Blob:
    """A stored file, as a local path (served directly) or a stream of chunks (from object storage)."""

    content_type: str
    path: Path | None = None
    chunks: Iterator[bytes] | None = None
    size: int | None = None


class BlobStore(Protocol):
    """Where output files live; every API replica must be able to read what any worker wrote."""

    def put(self, key: str, source: Path) -> None:
        """Store ``source`` as ``key`` (blocking; the worker calls it off the event loop)."""
        ...

    def open(self, key: str) -> Blob | None:
        """The blob ``key``, or None if there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob ``key`` if it exists."""
        ...


def read_blob(store: BlobStore, key: str, limit: int) -> bytes | None:
    """The bytes of ``key`` (None if missing); raises ValueError past ``limit`` bytes."""
    blob = store.open(key)
    if blob is None:
        return None
    if blob.path is not None:
        if blob.path.stat().st_size > limit:
            raise ValueError(f"larger than {limit} bytes")
        return blob.path.read_bytes()
    assert blob.chunks is not None
    parts: list[bytes] = []
    size = 0
    for chunk in blob.chunks:
        size += len(chunk)
        if size > limit:
            raise ValueError(f"larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
