"""Output files: stable capability URLs, no auth needed (a Bearer header is tolerated)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from fluxserve.errors import NotFound
from fluxserve.storage.local import content_type_for

router = APIRouter(tags=["outputs"])


@router.api_route("/outputs/{prediction_id}/{filename}", methods=["GET", "HEAD"], summary="Download an output file")
async def get_output(prediction_id: str, filename: str, request: Request) -> FileResponse:
    """The bytes of an output file, with its image Content-Type."""
    path = request.app.state.runtime.blobs.open_path(f"{prediction_id}/{filename}")
    if path is None:
        raise NotFound(f"Output {prediction_id}/{filename} not found.")
    return FileResponse(
        path,
        media_type=content_type_for(filename),
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )
