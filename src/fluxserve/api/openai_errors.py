"""OpenAI's error shape for the Images API routes: ``{"error": {"message", "type", "param", "code"}}``.

The ``openai`` clients read ``error.message`` into their exception and pick the exception class by status:
400 ``BadRequestError``, 401 ``AuthenticationError``, 403 ``PermissionDeniedError``, 404 ``NotFoundError``,
429 ``RateLimitError``, 5xx ``InternalServerError``. They retry 408, 409, 429 and 5xx on their own unless the
response says ``x-should-retry: false``: every error here that a retry would only repeat (or that would create
the predictions again) says so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from fluxserve.errors import InvalidField

_OPENAI_PATH = re.compile(r"(^|/)openai/v1/|(^|/)v1/images(/|$)")

#: OpenAI's ``type`` by status (it answers bad requests with 400, where the Replicate routes answer 422).
_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "rate_limit_error"}
_CODES = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded", 504: "timeout"}


def is_openai_path(request: Request) -> bool:
    """Whether ``request`` came in on an OpenAI-compatible route (its errors take OpenAI's shape)."""
    return bool(_OPENAI_PATH.search(str(request.scope.get("path", ""))))


def openai_status(status: int) -> int:
    """The status OpenAI answers where we would answer ``status`` (422 → 400)."""
    return 400 if status == 422 else status


def openai_error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """An OpenAI-shaped error response; ``extra`` adds keys to the error object (e.g. prediction ids)."""
    status = openai_status(status)
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    error: dict[str, Any] = {"message": message, "type": kind, "param": param, "code": code or _CODES.get(status)}
    error.update(extra or {})
    all_headers = dict(headers or {})
    if status != 429:  # a rate limit is worth retrying after Retry-After; nothing else is
        all_headers.setdefault("x-should-retry", "false")
    return Response(
        orjson.dumps({"error": error}), status_code=status, media_type="application/json", headers=all_headers
    )


def from_problem(
    status: int, detail: str, invalid_fields: Sequence[InvalidField] | None, headers: dict[str, str] | None
) -> Response:
    """A problem (what the Replicate routes answer) in OpenAI's shape: ``param`` is the first field named."""
    param = None
    code = None
    message = detail.strip()
    if invalid_fields:
        first = invalid_fields[0]
        param = first.field.removeprefix("input.").removeprefix("body.")
        code = first.type
        message = "; ".join(_plain(f) for f in invalid_fields)
    return openai_error(status, message, param=param, code=code, headers=headers)


def _plain(field: InvalidField) -> str:
    """``field: description`` once (descriptions that already start with the field name are kept as they are)."""
    name = field.field.removeprefix("input.").removeprefix("body.")
    text = field.description
    return text if text.startswith((name, field.field)) else f"{name}: {text}"
