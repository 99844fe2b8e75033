"""The Files API: uploads that predictions can take as inputs (``urls.get`` goes into ``input``).

Accepts the three multipart shapes the clients send: replicate-python's ``content`` file part plus
``metadata`` as a plain form field holding JSON; replicate-javascript's ``metadata`` as a file part
(``blob``, ``application/json``); and the documented optional ``filename`` and ``type`` fields.
"""

from __future__ import annotations

import hashlib
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from fluxserve.api.deps import Call, CallDep
from fluxserve.api.problems import AUTH_ERRORS, problem_responses
from fluxserve.api.render import json_response
from fluxserve.errors import InvalidRequest, NotFound, PayloadTooLarge
from fluxserve.schema import Timestamp, utcnow
from fluxserve.service import new_prediction_id
from fluxserve.store.rows import FileRow

router = APIRouter(tags=["files"])
_ERRORS = problem_responses({**AUTH_ERRORS, 404: "No such file (or it expired)"})
PAGE_SIZE = 100
_COPY_CHUNK = 1024 * 1024


class FileUrls(BaseModel):
    """Links of a file; ``get`` is what goes into a prediction's input."""

    get: str


class FileObject(BaseModel):
    """A file as Replicate's Files API returns it."""

    id: str
    name: str
    content_type: str
    size: int
    etag: str
    checksums: dict[str, str]
    metadata: dict[str, Any]
    created_at: Timestamp
    expires_at: Timestamp
    urls: FileUrls


class FilePage(BaseModel):
    """A page of files, newest first."""

    next: str | None
    previous: str | None
    results: list[FileObject]


def _render(row: FileRow, c: Call) -> FileObject:
    return FileObject(
        id=row.id,
        name=row.name,
        content_type=row.content_type,
        size=row.size,
        etag=row.md5,
        checksums={"sha256": row.sha256, "md5": row.md5},
        metadata=row.metadata,
        created_at=row.created_at,
        expires_at=row.expires_at,
        urls=FileUrls(get=f"{c.links.api}/files/{row.id}"),
    )


def _spool(upload: UploadFile, target: Path, limit: int) -> tuple[int, str, str]:
    """Copy the upload to ``target`` while hashing it; raise :class:`PayloadTooLarge` past ``limit``."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    upload.file.seek(0)
    with target.open("wb") as out:
        while chunk := upload.file.read(_COPY_CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The file is larger than the {limit}-byte limit of this server.")
            sha256.update(chunk)
            md5.update(chunk)
            out.write(chunk)
    return size, sha256.hexdigest(), md5.hexdigest()


async def _metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    raw = await value.read() if isinstance(value, UploadFile) else str(value).encode()
    if not raw.strip():
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"metadata must be a JSON object: {exc}",
            invalid_fields=[{"type": "json_invalid", "field": "metadata", "description": "not JSON"}],
        ) from exc
    if not isinstance(parsed, dict):
        raise InvalidRequest(
            "metadata must be a JSON object",
            invalid_fields=[{"type": "invalid_type", "field": "metadata", "description": "not an object"}],
        )
    return parsed


@router.post(
    "/files",
    status_code=201,
    response_model=FileObject,
    responses=problem_responses({**AUTH_ERRORS, 413: "The file is larger than the server's upload limit"}),
    summary="Upload a file",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["content"],
                        "properties": {
                            "content": {"type": "string", "format": "binary"},
                            "metadata": {"type": "string", "description": "JSON object"},
                            "filename": {"type": "string", "maxLength": 255},
                            "type": {"type": "string", "description": "Content-Type of the file"},
                        },
                    }
                }
            },
        }
    },
)
async def create_file(request: Request, c: CallDep) -> Response:
    """Upload ``content`` (multipart); returns the file with ``urls.get`` to use as an input."""
    rt = request.app.state.api
    limit: int = rt.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise PayloadTooLarge(f"The file is larger than the {limit}-byte limit of this server.")
    try:
        form = await request.form(max_files=2, max_fields=10)
    except Exception as exc:
        raise InvalidRequest(
            f"expected a multipart/form-data body with a 'content' file part: {exc}",
            invalid_fields=[{"type": "invalid", "field": "content", "description": "multipart body required"}],
        ) from exc
    try:
        content = form.get("content")
        if not isinstance(content, UploadFile):
            raise InvalidRequest(
                "the 'content' file part is required",
                invalid_fields=[{"type": "required", "field": "content", "description": "a file part is required"}],
            )
        metadata = await _metadata(form.get("metadata"))
        name = str(form.get("filename") or content.filename or "file")[:255]
        content_type = str(form.get("type") or content.content_type or "application/octet-stream")
        file_id = new_prediction_id()
        scratch = rt.settings.scratch_dir
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            target = Path(tmp) / "content"
            size, sha256, md5 = await run_in_threadpool(_spool, content, target, limit)
            now = utcnow()
            row = FileRow(
                id=file_id,
                key_id=c.key.id,
                name=name,
                content_type=content_type,
                size=size,
                sha256=sha256,
                md5=md5,
                metadata=metadata,
                created_at=now,
                expires_at=now + timedelta(seconds=rt.settings.file_ttl_seconds),
            )
            await run_in_threadpool(rt.blobs.put, row.blob_key, target)
    finally:
        await form.close()
    await c.svc.store.insert_file(row)
    return json_response(_render(row, c), 201)


@router.get("/files", response_model=FilePage, responses=_ERRORS, summary="List files")
async def list_files(c: CallDep, cursor: str | None = Query(default=None)) -> Response:
    """The key's unexpired files, newest first."""
    before = None
    if cursor:
        row = await c.svc.store.get_file(cursor, c.key.id, now=utcnow())
        if row is None:
            raise InvalidRequest(
                "cursor is not valid", invalid_fields=[{"type": "invalid", "field": "cursor", "description": "bad"}]
            )
        before = (row.created_at, row.id)
    rows = await c.svc.store.list_files(c.key.id, now=utcnow(), limit=PAGE_SIZE + 1, before=before)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    next_url = f"{c.links.api}/files?cursor={rows[-1].id}" if more else None
    return json_response(FilePage(next=next_url, previous=None, results=[_render(r, c) for r in rows]))


async def _owned(c: Call, file_id: str) -> FileRow:
    row = await c.svc.store.get_file(file_id, c.key.id, now=utcnow())
    if row is None:
        raise NotFound(f"File {file_id} not found (or expired).")
    return row


@router.get("/files/{file_id}", response_model=FileObject, responses=_ERRORS, summary="Get a file")
async def get_file(file_id: str, c: CallDep) -> Response:
    """One of the key's files."""
    return json_response(_render(await _owned(c, file_id), c))


@router.get(
    "/files/{file_id}/download",
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes"}, **_ERRORS},
    summary="Download a file's content",
)
async def download_file(file_id: str, request: Request, c: CallDep) -> Response:
    """The file's bytes, with the Content-Type it was uploaded with."""
    row = await _owned(c, file_id)
    blob = await run_in_threadpool(request.app.state.api.blobs.open, row.blob_key)
    if blob is None:
        raise NotFound(f"File {file_id} has no content any more.")
    if blob.path is not None:
        data = await run_in_threadpool(blob.path.read_bytes)
    else:
        assert blob.chunks is not None
        data = await run_in_threadpool(lambda: b"".join(blob.chunks or ()))
    return Response(data, media_type=row.content_type)


@router.delete("/files/{file_id}", status_code=204, responses=_ERRORS, summary="Delete a file")
async def delete_file(file_id: str, request: Request, c: CallDep) -> Response:
    """Delete the file and its content."""
    row = await _owned(c, file_id)
    await c.svc.store.delete_file(row.id, c.key.id)
    await run_in_threadpool(request.app.state.api.blobs.delete, row.blob_key)
    return Response(status_code=204, media_type="text/plain")
