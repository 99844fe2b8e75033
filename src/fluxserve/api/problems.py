"""The one error → HTTP table: every error becomes ``application/problem+json``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fluxserve.api.openai_errors import from_problem, is_openai_path
from fluxserve.errors import FluxserveError, InvalidField, InvalidRequest
from fluxserve.schema import Problem

log = logging.getLogger("fluxserve.api")

PROBLEM_TYPE = "application/problem+json"
# What every authenticated route can answer besides its own errors.
AUTH_ERRORS = {
    401: "No or unknown API key",
    422: "Invalid request (the body names the fields)",
    429: "Over the key's rate limit (or the model's queue cap); see Retry-After",
}


def problem_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries documenting problem+json errors (the body is a :class:`Problem`).

    ``model`` registers the schema (FastAPI files it under ``application/json`` as well); the
    ``application/problem+json`` entry is the Content-Type the handlers below actually send.
    """
    content = {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {code: {"model": Problem, "description": text, "content": content} for code, text in descriptions.items()}


_TITLES = {400: "Bad request", 401: "Unauthenticated", 404: "Not found", 405: "Method not allowed"}


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    invalid_fields: Sequence[InvalidField] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem+json response (title, detail, status[, invalid_fields])."""
    body: dict[str, Any] = {"title": title, "detail": detail, "status": status}
    if invalid_fields is not None:
        body["invalid_fields"] = [f.to_json() for f in invalid_fields]
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_TYPE, headers=headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) if parts else "body"


def pydantic_invalid_fields(errors: Sequence[Any]) -> list[InvalidField]:
    """Pydantic's (or FastAPI's) validation errors as invalid-field records naming each field."""
    fields: list[InvalidField] = []
    for err in errors:
        kind = str(err.get("type", "invalid"))
        field = _field_name(tuple(err.get("loc", ())))
        if kind == "json_invalid":
            message = f"request body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}"
            field = "body"
        elif kind == "missing":
            message = f"{field} is required"
        elif kind == "extra_forbidden":
            # Replicate's name for it (its create bodies have additionalProperties: false).
            kind = "additional_property_not_allowed"
            message = f"Additional property {field} is not allowed"
        else:
            message = f"{field}: {err.get('msg')}"
        fields.append(InvalidField(kind, field, message))
    return fields


def invalid_request(fields: Sequence[InvalidField]) -> InvalidRequest:
    """The 422 for request-level ``fields``; the detail lists each description."""
    return InvalidRequest("".join(f"- {f.description}\n" for f in fields), invalid_fields=fields)


def _respond(
    request: Request,
    status: int,
    title: str,
    detail: str,
    *,
    invalid_fields: Sequence[InvalidField] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem+json response, or OpenAI's error shape on the OpenAI-compatible routes."""
    if is_openai_path(request):
        return from_problem(status, detail, invalid_fields, headers)
    return problem_response(status, title, detail, invalid_fields=invalid_fields, headers=headers)


async def _fluxserve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FluxserveError)
    return _respond(request, exc.status, exc.title, exc.detail, invalid_fields=exc.invalid_fields, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    error = invalid_request(pydantic_invalid_fields(exc.errors()))
    title = "Invalid JSON" if any(f.type == "json_invalid" for f in error.invalid_fields or ()) else error.title
    return _respond(request, 422, title, error.detail, invalid_fields=error.invalid_fields)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    title = _TITLES.get(exc.status_code, "Error")
    detail = exc.detail if isinstance(exc.detail, str) else title
    if exc.status_code == 404 and detail == "Not Found":
        detail = "No such endpoint. The API lives under /v1 (and /replicate/v1)."
    return _respond(request, exc.status_code, title, detail, headers=getattr(exc, "headers", None))


async def _database_error(request: Request, exc: Exception) -> Response:
    log.error("database error: %s", exc)
    return _respond(
        request,
        503,
        "Service unavailable",
        "The database is unreachable; try again shortly.",
        headers={"Retry-After": "1"},
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return _respond(request, 500, "Internal server error", "An unexpected error occurred; it has been logged.")


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(FluxserveError, _fluxserve_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(ConnectionError, _database_error)
    app.add_exception_handler(TimeoutError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
