"""Output files: stable capability URLs, no auth needed (a Bearer header is tolerated)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from fluxserve.api.problems import problem_responses
from fluxserve.errors import NotFound

router = APIRouter(tags=["outputs"])


_OUTPUT_RESPONSES = {
    200: {"description": "The file's bytes", "content": {"image/*": {}, "application/octet-stream": {}}},
    **problem_responses({404: "No such output file", 422: "Invalid request"}),
}


# One route per method: a GET+HEAD ``api_route`` gives both operations the same operationId (FastAPI
# warns, and which one the document names first changes from run to run).
@router.get("/outputs/{prediction_id}/{filename}", responses=_OUTPUT_RESPONSES, summary="Download an output file")
@router.head("/outputs/{prediction_id}/{filename}", responses=_OUTPUT_RESPONSES, summary="Headers of an output file")
async def get_output(prediction_id: str, filename: str, request: Request) -> Response:
    """The bytes of an output file, with its image Content-Type (from a directory or S3)."""
    blobs = request.app.state.api.blobs
    # Opening may be a network call (S3): keep it off the event loop.
    blob = await run_in_threadpool(blobs.open, f"{prediction_id}/{filename}")
    if blob is None:
        raise NotFound(f"Output {prediction_id}/{filename} not found.")
    headers = {"Cache-Control": "public, max-age=31536000, immutable"}
    if blob.path is not None:
        return FileResponse(blob.path, media_type=blob.content_type, headers=headers)
    assert blob.chunks is not None
    if blob.size is not None:
        headers["Content-Length"] = str(blob.size)
    return StreamingResponse(blob.chunks, media_type=blob.content_type, headers=headers)
