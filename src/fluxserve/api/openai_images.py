"""OpenAI's Images API on fluxserve's predictions: ``POST /v1/images/generations``, ``/v1/images/edits`` and
``/v1/images/variations`` (also under ``/openai/v1`` for tools that want a base URL of their own).

Each call becomes one or more ordinary predictions (same keys, listed, on their pages, counted in usage) created
with the model's own inputs (:mod:`fluxserve.service.openai_images`), and waits for them as OpenAI does; after
``FLUXSERVE_OPENAI_TIMEOUT_SECONDS`` it answers 504 with the predictions' ids, which go on running. Errors take
OpenAI's shape (:mod:`fluxserve.api.openai_errors`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from fluxserve.api.deps import Call, CallDep
from fluxserve.api.openai_errors import openai_error
from fluxserve.api.render import json_response
from fluxserve.catalog.registry import ModelSpec
from fluxserve.config import Settings
from fluxserve.lifecycle import Status
from fluxserve.schema import PredictionRequest
from fluxserve.service import openai_images as oi
from fluxserve.service.openai_images import OpenAIParamError, Plan
from fluxserve.storage import BlobStore, blob_keys, read_blob
from fluxserve.store.rows import PredictionRow
from fluxserve.wire import Links

router = APIRouter(tags=["openai images"])


class ImageData(BaseModel):
    """One image: its URL (``response_format`` url) or its bytes in base64 (b64_json)."""

    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = Field(default=None, description="Always null: FLUX does not rewrite prompts")


class ImagesResponse(BaseModel):
    """OpenAI's images response; ``size`` is the size of the images made (the model's nearest to the request)."""

    created: int
    data: list[ImageData]
    background: str | None = None
    output_format: str | None = None
    size: str | None = None


class OpenAIErrorDetail(BaseModel):
    """OpenAI's error object (``prediction_ids`` added where predictions exist: a timeout or a failed one)."""

    model_config = ConfigDict(extra="allow")

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    """OpenAI's error response."""

    error: OpenAIErrorDetail


_ERROR_STATUSES = {
    400: "Invalid parameter (error.param names it), or an input the prediction could not use",
    401: "No or unknown API key",
    403: "The model's license is not accepted on this server",
    404: "No such model",
    413: "An uploaded image is larger than the server's upload limit",
    429: "Over the key's rate limit or the model's queue cap",
    500: "A prediction failed for a reason other than its input",
    503: "The model cannot be loaded, or the database is unreachable",
    504: "Not finished within FLUXSERVE_OPENAI_TIMEOUT_SECONDS; error.prediction_ids go on running",
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorBody, "description": text} for status, text in _ERROR_STATUSES.items()
}
_COMMON_PROPERTIES: dict[str, Any] = {
    "prompt": {"type": "string", "description": "What to make (or how to edit the image)"},
    "model": {"type": "string", "description": "A served model: owner/name, its bare name, or an alias"},
    "n": {"type": "integer", "minimum": 1, "maximum": 10, "description": "1 to 4 images, or the model's most"},
    "size": {"type": "string", "description": "WIDTHxHEIGHT or auto: mapped to the model's nearest size"},
    "response_format": {"type": "string", "enum": ["url", "b64_json"]},
    "output_format": {"type": "string", "enum": ["png", "jpeg", "webp"]},
    "output_compression": {"type": "integer", "minimum": 0, "maximum": 100},
    "quality": {"type": "string", "description": "Accepted; FLUX has no equivalent"},
    "style": {"type": "string", "description": "Accepted; FLUX has no equivalent"},
    "background": {"type": "string", "enum": ["auto", "opaque", "transparent"]},
    "moderation": {"type": "string"},
    "user": {"type": "string", "description": "Written to the predictions' logs"},
}
_GENERATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "required": ["prompt"], "properties": _COMMON_PROPERTIES}}
        },
    }
}
_EDIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "prompt"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "mask": {"type": "string", "format": "binary"},
                        **_COMMON_PROPERTIES,
                    },
                }
            }
        },
    }
}

#: Where the router is mounted: OpenAI's base URL is ``…/v1``; ``/openai/v1`` is the same API on its own base.
OPENAI_PREFIXES = ("/v1", "/openai/v1")
#: Largest image read back for ``b64_json``.
MAX_B64_BYTES = 64 * 1024 * 1024


def _error(exc: OpenAIParamError) -> Response:
    return openai_error(exc.status, exc.message, param=exc.param, code=exc.code)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.api.settings
    return settings


async def _json_params(request: Request) -> dict[str, Any]:
    try:
        params = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise OpenAIParamError(None, f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(params, dict):
        raise OpenAIParamError(None, "The request body must be a JSON object")
    return params


@router.post(
    "/images/generations",
    response_model=ImagesResponse,
    responses=_RESPONSES,
    openapi_extra=_GENERATE_BODY,
    summary="Create images (OpenAI Images API)",
)
async def generations(request: Request, c: CallDep) -> Response:
    """OpenAI's ``images.generate``: ``prompt``, ``model``, ``n``, ``size``, ``response_format`` …"""
    try:
        params = await _json_params(request)
        oi.check_types(params)
        settings = _settings(request)
        spec = oi.resolve_model(
            c.svc.registry,
            params.get("model"),
            default=settings.openai_default_model,
            aliases=settings.openai_model_aliases,
        )
        plan = oi.plan(spec, params)
    except OpenAIParamError as exc:
        return _error(exc)
    return await _run(request, c, plan, params)


@router.post(
    "/images/edits",
    response_model=ImagesResponse,
    responses=_RESPONSES,
    openapi_extra=_EDIT_BODY,
    summary="Edit images (OpenAI Images API)",
)
async def edits(request: Request, c: CallDep) -> Response:
    """OpenAI's ``images.edit``: multipart ``image`` (or ``image[]``, several), ``prompt``, ``mask`` …"""
    settings = _settings(request)
    try:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise OpenAIParamError("image", "images.edit takes multipart/form-data with the image file(s) in image")
        form = await request.form(max_files=32, max_fields=200)
        files = [v for k, v in form.multi_items() if k in ("image", "image[]") and isinstance(v, UploadFile)]
        params = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
        if not files:
            raise OpenAIParamError("image", "image is required: one image file, or several as image[]")
        oi.check_types(params)
        mask_file = form.get("mask")
        default = oi.default_edit_model(c.svc.registry, settings.openai_default_edit_model)
        spec = oi.resolve_model(
            c.svc.registry, params.get("model"), default=default, aliases=settings.openai_model_aliases
        )
        oi.plan(spec, params, images=["-"] * len(files), mask="-" if mask_file is not None else None)  # refuse early
        links = _links(c)
        urls = [await _upload(request, c, links, f) for f in files]
        mask = await _upload(request, c, links, mask_file) if isinstance(mask_file, UploadFile) else None
        plan = oi.plan(spec, params, images=urls, mask=mask)
    except OpenAIParamError as exc:
        return _error(exc)
    return await _run(request, c, plan, params)


@router.post(
    "/images/variations",
    status_code=400,
    response_model=OpenAIErrorBody,
    responses={k: v for k, v in _RESPONSES.items() if k in (400, 401, 429)},
    summary="Image variations (not offered: FLUX has no variations model)",
)
async def variations(c: CallDep) -> Response:
    """Always 400: no FLUX model served here makes variations of an image without a prompt."""
    return openai_error(
        400,
        "Image variations are not offered: no served FLUX model makes variations without a prompt. Use "
        "/v1/images/edits with a prompt (for example flux-kontext-dev or flux-2-klein-4b).",
        param="model",
        code="unsupported",
    )


def _links(c: Call) -> Links:
    """Links under ``/v1`` even for a call on ``/openai/v1``: predictions and outputs live there."""
    return Links(origin=c.links.origin, api=c.links.origin + "/v1")


async def _upload(request: Request, c: Call, links: Links, upload: UploadFile) -> str:
    """Store an uploaded image as one of the key's files; its ``urls.get`` goes into the prediction input."""
    files = request.app.state.api.files
    row = await files.upload(
        c.key,
        upload.file,
        name=upload.filename or "image",
        content_type=upload.content_type or "application/octet-stream",
        metadata={"source": "openai images.edit"},
    )
    return f"{links.api}/files/{row.id}"


async def _run(request: Request, c: Call, plan: Plan, params: dict[str, Any]) -> Response:
    """Create the plan's predictions, wait for them, and answer with OpenAI's response (or its error)."""
    links = _links(c)
    user = params.get("user") or params.get("safety_identifier")
    note = "Created through the OpenAI Images API" + (f" (user: {str(user)[:200]})" if user else "") + "\n"
    note += "".join(f"{line}\n" for line in plan.notes)
    rows = [
        await c.svc.create(c.key, plan.spec, "hidden", PredictionRequest(input=inputs), api_base=links.api, note=note)
        for inputs in plan.inputs
    ]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _settings(request).openai_timeout_seconds
    done = [await c.svc.wait_for(row, max(0.0, deadline - loop.time())) for row in rows]
    waiting = [row for row in done if not row.status.is_terminal]
    if waiting:
        ids = [row.id for row in done]
        return openai_error(
            504,
            f"The images are not ready after {_settings(request).openai_timeout_seconds:g} s; they go on: poll "
            + ", ".join(links.prediction(row.id) for row in done),
            code="timeout",
            extra={"prediction_ids": ids},
        )
    unsuccessful = next((row for row in done if row.status != Status.SUCCEEDED), None)
    if unsuccessful is not None:
        return _failed(plan.spec, unsuccessful)
    blobs: BlobStore = request.app.state.api.blobs
    keys = [key for row in done for key in blob_keys(row.output)]
    data: list[ImageData] = []
    size: str | None = None
    for key in keys:
        content: bytes | None = None
        if plan.response_format == "b64_json" or size is None:
            content = await run_in_threadpool(read_blob, blobs, key, MAX_B64_BYTES)
        if content is not None and size is None:
            size = await run_in_threadpool(_image_size, content)
        if plan.response_format == "b64_json":
            data.append(ImageData(b64_json=base64.b64encode(content or b"").decode()))
        else:
            data.append(ImageData(url=links.output(key)))
    body = ImagesResponse(
        created=int(time.time()), data=data, background="opaque", output_format=plan.output_format, size=size
    )
    headers = {"X-Prediction-Ids": ",".join(row.id for row in done)}
    return json_response(body, 200, headers)


def _failed(spec: ModelSpec, row: PredictionRow) -> Response:
    """A failed or canceled prediction: 400 naming the input its error names, else 500 with its error."""
    error = row.error or f"the prediction ended {row.status.value}"
    names = {f.name for f in spec.inputs}
    head = error.split(":", 1)[0].strip()
    extra = {"prediction_ids": [row.id]}
    if row.status == Status.FAILED and head in names:
        param = {"input_image": "image", "input_images": "image", "images": "image"}.get(head, head)
        return openai_error(400, error, param=param, code="invalid_input", extra=extra)
    return openai_error(500, f"Prediction {row.id} {row.status.value}: {error}", code="prediction_failed", extra=extra)


def _image_size(content: bytes) -> str | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(content)) as image:
            return f"{image.width}x{image.height}"
    except Exception:
        return None


__all__ = ["OPENAI_PREFIXES", "router"]
