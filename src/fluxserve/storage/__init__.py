"""Blob storage for output files, and the reference format stored in a prediction's output.

Outputs are stored in the database as ``fluxserve-blob:<key>`` strings; the API turns them into
absolute URLs on the host and prefix each request used, so one stored prediction serves correct
links through ``/v1``, ``/replicate/v1`` and any proxy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def count_blob_refs(value: Any) -> int:
    """How many blob references ``value`` holds (the prediction's ``image_count``)."""
    if isinstance(value, str):
        return int(value.startswith(BLOB_PREFIX))
    if isinstance(value, list):
        return sum(count_blob_refs(v) for v in value)
    if isinstance(value, dict):
        return sum(count_blob_refs(v) for v in value.values())
    return 0
