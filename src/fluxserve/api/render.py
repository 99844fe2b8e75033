"""JSON responses of wire objects (rows are rendered by :mod:`fluxserve.wire`)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel

from fluxserve.wire import render_prediction

__all__ = ["JSON_TYPE", "json_response", "render_prediction"]

JSON_TYPE = "application/json; charset=utf-8"


def json_response(model: BaseModel, status_code: int = 200, headers: dict[str, Any] | None = None) -> Response:
    """Serialise a wire model with pydantic-core (fast) into a JSON response."""
    return Response(model.model_dump_json(), status_code=status_code, media_type=JSON_TYPE, headers=headers)
