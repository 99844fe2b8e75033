"""Blob storage in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, …) through boto3.

The API streams objects back through its own URL (clients are never redirected: the official
replicate clients do not follow redirects), so the bucket can stay private.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from fluxserve.formats import content_type_for
from fluxserve.storage import Blob
from fluxserve.storage.local import SAFE_KEY

CHUNK_BYTES = 256 * 1024


class S3BlobStore:
    """Keys live under ``prefix`` in ``bucket``; credentials come from the usual AWS environment/config."""

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None, region: str | None = None):
        import boto3  # optional dependency: only deployments that use S3 need it

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client: Any = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def _object_key(self, key: str) -> str:
        if not SAFE_KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"unsafe blob key {key!r}")
        return self.prefix + key

    def put(self, key: str, source: Path) -> None:
        """Upload ``source`` as ``key`` and remove the local file."""
        self._client.upload_file(
            str(source), self.bucket, self._object_key(key), ExtraArgs={"ContentType": content_type_for(key)}
        )
        source.unlink(missing_ok=True)

    def open(self, key: str) -> Blob | None:
        """Stream the object ``key``; None if it does not exist."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._object_key(key))
        except ValueError:
            return None
        except self._client.exceptions.NoSuchKey:
            return None
        body = response["Body"]
        return Blob(
            response.get("ContentType") or content_type_for(key),
            chunks=body.iter_chunks(CHUNK_BYTES),
            size=response.get("ContentLength"),
        )

    def delete(self, key: str) -> None:
        """Remove the object ``key`` (no error if it is missing)."""
        with contextlib.suppress(ValueError):
            self._client.delete_object(Bucket=self.bucket, Key=self._object_key(key))
