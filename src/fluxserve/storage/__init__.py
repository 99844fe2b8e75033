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

from fluxserve.tree import leaves, map_leaves

BLOB_PREFIX = "fluxserve-blob:"


def blob_ref(key: str) -> str:
    """The string stored in ``output`` for the blob ``key``."""
    return BLOB_PREFIX + key


def _is_ref(leaf: Any) -> bool:
    return isinstance(leaf, str) and leaf.startswith(BLOB_PREFIX)


def map_blob_refs(value: Any, to_url: Callable[[str], str]) -> Any:
    """Return ``value`` with every blob reference replaced by ``to_url(key)`` (recursively)."""
    return map_leaves(value, lambda leaf: to_url(leaf[len(BLOB_PREFIX) :]) if _is_ref(leaf) else leaf)


def blob_keys(value: Any) -> list[str]:
    """Every blob key referenced in ``value`` (recursively)."""
    return [leaf[len(BLOB_PREFIX) :] for leaf in leaves(value) if _is_ref(leaf)]


def count_blob_refs(value: Any) -> int:
    """How many blob references ``value`` holds (the prediction's ``image_count``)."""
    return len(blob_keys(value))


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
