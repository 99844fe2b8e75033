"""FileService: the Files API's rules. Uploads are spooled, hashed, capped and stored; each key sees its own
unexpired files only. HTTP-free: the handler parses the multipart body and hands over a binary stream."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode

from fluxserve.errors import InvalidField, InvalidRequest, NotFound, PayloadTooLarge
from fluxserve.schema import utcnow
from fluxserve.service.predictions import new_prediction_id
from fluxserve.storage import BlobStore
from fluxserve.store.rows import FileRow, KeyRow
from fluxserve.store.store import Store

PAGE_SIZE = 100
_COPY_CHUNK = 1024 * 1024


def _spool(source: BinaryIO, target: Path, limit: int) -> tuple[int, str, str]:
    """Copy ``source`` to ``target`` while hashing it; raise :class:`PayloadTooLarge` past ``limit``."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    source.seek(0)
    with target.open("wb") as out:
        while chunk := source.read(_COPY_CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The file is larger than the {limit}-byte limit of this server.")
            sha256.update(chunk)
            md5.update(chunk)
            out.write(chunk)
    return size, sha256.hexdigest(), md5.hexdigest()


def file_signature(key: KeyRow, file_id: str, expiry: int) -> bytes:
    """Replicate's download signature: HMAC-SHA256 of ``"{owner} {id} {expiry}"``. The signing secret is the
    key's token hash (the SHA-256 hex of the API token), so a client can sign URLs itself and revoking the
    key invalidates every URL it signed."""
    message = f"{key.name} {file_id} {expiry}".encode()
    return hmac.new(key.token_hash.encode(), message, hashlib.sha256).digest()


def signed_download_url(key: KeyRow, row: FileRow, api_base: str) -> str:
    """A download URL for ``row`` that needs no API key, valid until the file expires."""
    expiry = int(row.expires_at.timestamp())
    signature = base64.b64encode(file_signature(key, row.id, expiry)).decode()
    query = urlencode({"owner": key.name, "expiry": expiry, "signature": signature})
    return f"{api_base}/files/{row.id}/download?{query}"


class FileService:
    """Upload, list, read and delete a key's files (kept ``ttl_seconds``, at most ``max_bytes`` each)."""

    def __init__(self, store: Store, blobs: BlobStore, *, max_bytes: int, ttl_seconds: int, scratch_dir: Path):
        self.store = store
        self.blobs = blobs
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self.scratch_dir = scratch_dir

    def check_declared_size(self, declared: int) -> None:
        """Refuse at once a body whose declared length cannot fit (a multipart envelope adds a little)."""
        if declared > self.max_bytes + 64 * 1024:
            raise PayloadTooLarge(f"The file is larger than the {self.max_bytes}-byte limit of this server.")

    async def upload(
        self, key: KeyRow, source: BinaryIO, *, name: str, content_type: str, metadata: dict[str, Any]
    ) -> FileRow:
        """Store ``source`` as a new file of ``key``."""
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.scratch_dir) as tmp:
            target = Path(tmp) / "content"
            size, sha256, md5 = await asyncio.to_thread(_spool, source, target, self.max_bytes)
            now = utcnow()
            row = FileRow(
                id=new_prediction_id(),
                key_id=key.id,
                name=name[:255],
                content_type=content_type,
                size=size,
                sha256=sha256,
                md5=md5,
                metadata=metadata,
                created_at=now,
                expires_at=now + timedelta(seconds=self.ttl_seconds),
            )
            await asyncio.to_thread(self.blobs.put, row.blob_key, target)
        await self.store.insert_file(row)
        return row

    async def page(self, key: KeyRow, cursor: str | None) -> tuple[list[FileRow], str | None]:
        """A page of the key's unexpired files, newest first, and the cursor of the next page (or None)."""
        before = None
        if cursor:
            row = await self.store.get_file(cursor, key.id, now=utcnow())
            if row is None:
                raise InvalidRequest("cursor is not valid", invalid_fields=[InvalidField("invalid", "cursor", "bad")])
            before = (row.created_at, row.id)
        rows = await self.store.list_files(key.id, now=utcnow(), limit=PAGE_SIZE + 1, before=before)
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return rows, (rows[-1].id if more else None)

    async def get(self, key: KeyRow, file_id: str) -> FileRow:
        """One of the key's unexpired files, or :class:`NotFound`."""
        row = await self.store.get_file(file_id, key.id, now=utcnow())
        if row is None:
            raise NotFound(f"File {file_id} not found (or expired).")
        return row

    async def read(self, key: KeyRow, file_id: str) -> tuple[FileRow, bytes]:
        """The file and its bytes."""
        return await self._content(await self.get(key, file_id))

    async def read_signed(self, file_id: str, owner: str, expiry: str, signature: str) -> tuple[FileRow, bytes]:
        """The file and its bytes for a signed download URL (no API key): :class:`NotFound` unless the
        signature is the owner's, the URL has not expired and neither has the file."""
        now = utcnow()
        row = await self.store.get_file(file_id, None, now=now)
        key = await self.store.key_by_id(row.key_id) if row is not None else None
        try:
            expires = int(expiry)
            given = base64.b64decode(signature.replace("-", "+").replace("_", "/"), validate=True)
        except (ValueError, binascii.Error):
            given = b""
            expires = 0
        if (
            row is None
            or key is None
            or key.name != owner
            or expires < now.timestamp()
            or not hmac.compare_digest(given, file_signature(key, file_id, expires))
        ):
            # One answer for every failure, so a URL reveals nothing about which part is wrong.
            raise NotFound(f"File {file_id} not found, or the download URL is invalid or has expired.")
        return await self._content(row)

    async def _content(self, row: FileRow) -> tuple[FileRow, bytes]:
        file_id = row.id
        blob = await asyncio.to_thread(self.blobs.open, row.blob_key)
        if blob is None:
            raise NotFound(f"File {file_id} has no content any more.")
        if blob.path is not None:
            return row, await asyncio.to_thread(blob.path.read_bytes)
        chunks = blob.chunks or ()
        return row, await asyncio.to_thread(lambda: b"".join(chunks))

    async def delete(self, key: KeyRow, file_id: str) -> None:
        """Delete the file's record and its content."""
        row = await self.get(key, file_id)
        await self.store.delete_file(row.id, key.id)
        await asyncio.to_thread(self.blobs.delete, row.blob_key)
