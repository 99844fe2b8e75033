"""JSON request bodies parsed whatever the Content-Type (curl -d sends form encoding by default)."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from fluxserve.api.problems import invalid_request, pydantic_invalid_fields
from fluxserve.errors import InvalidField, InvalidRequest

M = TypeVar("M", bound=BaseModel)


async def parse_json_body(request: Request, model: type[M]) -> M:
    """Parse and validate the body as ``model``; errors are 422 problems naming the field."""
    raw = await request.body()
    try:
        data = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc}",
            invalid_fields=[InvalidField("json_invalid", "body", str(exc))],
        ) from exc
    if data is None:
        raise InvalidRequest(
            'The request body is empty; send a JSON object such as {"input": {"prompt": "..."}}',
            invalid_fields=[InvalidField("required", "body", "a JSON object is required")],
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(pydantic_invalid_fields(exc.errors())) from exc


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body that the handler parses itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
