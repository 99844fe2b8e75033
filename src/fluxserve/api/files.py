"""The Files API: uploads that predictions can take as inputs (``urls.get`` goes into ``input``).

Accepts the three multipart shapes the clients send: replicate-python's ``content`` file part plus
``metadata`` as a plain form field holding JSON; replicate-javascript's ``metadata`` as a file part
(``blob``, ``application/json``); and the documented optional ``filename`` and ``type`` fields.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from fluxserve.api.deps import Call, CallDep, call
from fluxserve.api.problems import AUTH_ERRORS, problem_responses
from fluxserve.api.render import json_response
from fluxserve.errors import InvalidField, InvalidRequest
from fluxserve.schema import Timestamp
from fluxserve.service.files import FileService, signed_download_url
from fluxserve.store.rows import FileRow

router = APIRouter(tags=["files"])
_ERRORS = problem_responses({**AUTH_ERRORS, 404: "No such file (or it expired)"})
PAGE_SIZE = 100
_COPY_CHUNK = 1024 * 1024


class FileUrls(BaseModel):
    """Links of a file; ``get`` is what goes into a prediction's input."""

    get: str
    download: str = Field(description="Signed: downloads the content without an API key until the file expires")


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
        urls=FileUrls(get=f"{c.links.api}/files/{row.id}", download=signed_download_url(c.key, row, c.links.api)),
    )


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
            invalid_fields=[InvalidField("json_invalid", "metadata", "not JSON")],
        ) from exc
    if not isinstance(parsed, dict):
        raise InvalidRequest(
            "metadata must be a JSON object",
            invalid_fields=[InvalidField("invalid_type", "metadata", "not an object")],
        )
    return parsed


_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")


def _download_headers(name: str) -> dict[str, str]:
    return {
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
    }


def _upload_type(value: str) -> str:
    """The declared type of an upload, checked: a bare media type (parameters dropped), else 422 naming it."""
    base = value.split(";", 1)[0].strip()
    if not _MEDIA_TYPE.match(base):
        raise InvalidRequest(
            f"type must be a media type such as image/png, got {value[:100]!r}",
            invalid_fields=[InvalidField("format", "type", "must be a media type such as image/png")],
        )
    return base.lower()


def _upload_name(value: str) -> str:
    """A filename without control characters or path parts, at most 255 characters."""
    name = "".join(c for c in value.replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable())
    return name[:255] or "file"


def _bracketed_metadata(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """``metadata[key]=value`` form fields as one object: how replicate-python 2.x (Stainless) encodes a
    ``metadata`` dict in a multipart body. Form values carry no type, so they stay strings."""
    return {
        name[len("metadata[") : -1]: str(value)
        for name, value in items
        if name.startswith("metadata[") and name.endswith("]") and not isinstance(value, UploadFile)
    }


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
    files: FileService = request.app.state.api.files
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        files.check_declared_size(int(declared))
    try:
        form = await request.form(max_files=2, max_fields=64)
    except Exception as exc:
        raise InvalidRequest(
            f"expected a multipart/form-data body with a 'content' file part: {exc}",
            invalid_fields=[InvalidField("invalid", "content", "multipart body required")],
        ) from exc
    try:
        content = form.get("content")
        if not isinstance(content, UploadFile):
            raise InvalidRequest(
                "the 'content' file part is required",
                invalid_fields=[InvalidField("required", "content", "a file part is required")],
            )
        row = await files.upload(
            c.key,
            content.file,
            name=_upload_name(str(form.get("filename") or content.filename or "file")),
            content_type=_upload_type(str(form.get("type") or content.content_type or "application/octet-stream")),
            metadata=await _metadata(form.get("metadata")) or _bracketed_metadata(form.multi_items()),
        )
    finally:
        await form.close()
    return json_response(_render(row, c), 201)


@router.get("/files", response_model=FilePage, responses=_ERRORS, summary="List files")
async def list_files(request: Request, c: CallDep, cursor: str | None = Query(default=None)) -> Response:
    """The key's unexpired files, newest first."""
    rows, next_cursor = await request.app.state.api.files.page(c.key, cursor)
    next_url = f"{c.links.api}/files?cursor={next_cursor}" if next_cursor else None
    return json_response(FilePage(next=next_url, previous=None, results=[_render(r, c) for r in rows]))


@router.get("/files/{file_id}", response_model=FileObject, responses=_ERRORS, summary="Get a file")
async def get_file(file_id: str, request: Request, c: CallDep) -> Response:
    """One of the key's files."""
    return json_response(_render(await request.app.state.api.files.get(c.key, file_id), c))


@router.get(
    "/files/{file_id}/download",
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes"}, **_ERRORS},
    summary="Download a file's content",
)
async def download_file(
    file_id: str,
    request: Request,
    owner: Annotated[str | None, Query(description="Signed URL: the file owner's username")] = None,
    expiry: Annotated[str | None, Query(description="Signed URL: Unix time it expires")] = None,
    signature: Annotated[
        str | None, Query(description="Signed URL: base64 HMAC-SHA256 of '{owner} {id} {expiry}'")
    ] = None,
) -> Response:
    """The file's bytes, with the Content-Type it was uploaded with: with an API key, or without one through
    a signed URL (``urls.download`` of the file object)."""
    files: FileService = request.app.state.api.files
    if signature is not None or owner is not None or expiry is not None:
        row, data = await files.read_signed(file_id, owner or "", expiry or "", signature or "")
    else:
        row, data = await files.read((await call(request)).key, file_id)
    # Always octet-stream, as Replicate's document has it: an uploaded text/html page never renders on this
    # origin (the file object's content_type still says what was uploaded).
    return Response(data, media_type="application/octet-stream", headers=_download_headers(row.name))


@router.delete("/files/{file_id}", status_code=204, responses=_ERRORS, summary="Delete a file")
async def delete_file(file_id: str, request: Request, c: CallDep) -> Response:
    """Delete the file and its content."""
    await request.app.state.api.files.delete(c.key, file_id)
    return Response(status_code=204, media_type="text/plain")
