"""Prediction endpoints: create (model route and version route), get, list, cancel."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response

from fluxserve.api.body import json_body_schema, parse_json_body
from fluxserve.api.deps import Call, CallDep
from fluxserve.api.problems import AUTH_ERRORS, problem_responses
from fluxserve.api.render import json_response, render_prediction
from fluxserve.catalog.registry import ModelSpec
from fluxserve.errors import InvalidField, InvalidRequest
from fluxserve.lifecycle import Status
from fluxserve.schema import Prediction, PredictionPage, PredictionRequest

router = APIRouter(tags=["predictions"])

PreferHeader = Annotated[
    str | None,
    Header(description="`wait` or `wait=N` (1..60): hold the request until the prediction finishes or N s pass"),
]

CancelAfterHeader = Annotated[
    str | None,
    Header(
        alias="Cancel-After",
        description="Seconds (90) or a duration of h/m/s parts (30s, 5m, 1h30m), at least 5s: a prediction not "
        "finished by then ends canceled",
    ),
]

_WAIT = re.compile(r"^wait(?:\s*=\s*(\d+))?$")
MAX_WAIT_SECONDS = 60
_ERRORS = problem_responses({**AUTH_ERRORS, 404: "No such model or prediction", 422: "Invalid request or input"})


#: What every create route (model, version, deployment) declares: 201, or 202 under an unmet ``Prefer: wait``.
CREATE_ROUTE: dict[str, Any] = {
    "status_code": 201,
    "response_model": Prediction,
    "responses": {202: {"model": Prediction, "description": "Created; not finished within Prefer: wait"}, **_ERRORS},
    "openapi_extra": json_body_schema(PredictionRequest),
}


def parse_prefer_wait(header: str | None) -> tuple[int, str] | None:
    """``Prefer: wait`` / ``wait=N`` → (seconds clamped to 1..60, the preference as applied)."""
    if not header:
        return None
    for part in header.split(","):
        match = _WAIT.match(part.strip().lower())
        if match:
            if match.group(1) is None:
                return MAX_WAIT_SECONDS, "wait"
            seconds = min(max(int(match.group(1)), 1), MAX_WAIT_SECONDS)
            return seconds, f"wait={seconds}"
    return None


async def create_and_answer(
    c: Call,
    spec: ModelSpec,
    version: str,
    body: PredictionRequest,
    prefer: str | None,
    cancel_after: str | None,
    deployment: str | None = None,
) -> Response:
    """Create the prediction and answer as Replicate does: 201, or under ``Prefer: wait`` 201 when it
    finished in time and 202 (reading ``starting``) when it did not."""
    lk = c.links
    wait = parse_prefer_wait(prefer)
    seconds, applied = wait if wait is not None else (None, "")
    row = await c.svc.create(
        c.key, spec, version, body, wait=seconds, api_base=lk.api, cancel_after=cancel_after, deployment=deployment
    )
    if wait is None:
        return json_response(render_prediction(row, lk), 201)
    headers = {"Preference-Applied": applied}
    if row.status.is_terminal:
        return json_response(render_prediction(row, lk), 201, headers)
    # Not finished in time: the official clients read anything but "starting" as done, so say
    # "starting" (they then poll urls.get) even when the prediction is already processing.
    headers["Location"] = lk.prediction(row.id)
    return json_response(render_prediction(row, lk, status=Status.STARTING), 202, headers)


@router.post(
    "/models/{owner}/{name}/predictions",
    **CREATE_ROUTE,
    summary="Create a prediction of a model (official-model route)",
)
async def create_model_prediction(
    owner: str,
    name: str,
    request: Request,
    c: CallDep,
    prefer: PreferHeader = None,
    cancel_after: CancelAfterHeader = None,
) -> Response:
    """Create a prediction of ``owner/name``; its ``version`` reads ``"hidden"``."""
    spec = c.svc.model(owner, name)
    body = await parse_json_body(request, PredictionRequest)
    return await create_and_answer(c, spec, "hidden", body, prefer, cancel_after)


@router.post(
    "/predictions",
    **CREATE_ROUTE,
    summary="Create a prediction of a version",
)
async def create_prediction(
    request: Request, c: CallDep, prefer: PreferHeader = None, cancel_after: CancelAfterHeader = None
) -> Response:
    """Create a prediction; ``version`` is a version id, ``owner/name`` or ``owner/name:version_id``."""
    body = await parse_json_body(request, PredictionRequest)
    ref = body.version or body.model
    if not ref:
        raise InvalidRequest(
            "version is required: a version id, owner/name or owner/name:version_id",
            invalid_fields=[InvalidField("required", "version", "version is required")],
        )
    spec, version = c.svc.resolve_version(ref)
    return await create_and_answer(c, spec, version, body, prefer, cancel_after)


@router.get("/predictions/{prediction_id}", response_model=Prediction, responses=_ERRORS, summary="Get a prediction")
async def get_prediction(prediction_id: str, c: CallDep) -> Response:
    """One of the key's predictions."""
    return json_response(render_prediction(await c.svc.get(c.key, prediction_id), c.links))


def parse_time(name: str, value: str | None) -> datetime | None:
    """An ISO-8601 query parameter as an aware datetime (UTC when no offset is given); 422 when malformed."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        # Converted here: an offset that pushes it past year 1 or 9999 overflows, and must be a 422, not a 500.
        parsed = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(
            f"{name} must be an ISO-8601 timestamp such as 2026-01-31T12:00:00Z, got {value!r}",
            invalid_fields=[InvalidField("format", name, "must be an ISO-8601 timestamp")],
        ) from exc
    return parsed


@router.get("/predictions", response_model=PredictionPage, responses=_ERRORS, summary="List predictions")
async def list_predictions(
    c: CallDep,
    cursor: Annotated[str | None, Query(description="Opaque; follow `next`/`previous` as given")] = None,
    created_after: Annotated[str | None, Query(description="ISO-8601; only predictions created after")] = None,
    created_before: Annotated[str | None, Query(description="ISO-8601; only predictions created before")] = None,
    source: Annotated[Literal["api", "web"] | None, Query(description="Only predictions created through it")] = None,
) -> Response:
    """The key's predictions, newest first, 100 a page."""
    lk = c.links
    page = await c.svc.list(
        c.key,
        cursor=cursor,
        created_after=parse_time("created_after", created_after),
        created_before=parse_time("created_before", created_before),
        source=source,
    )
    given = (("created_after", created_after), ("created_before", created_before), ("source", source))
    filters = {k: v for k, v in given if v}

    def page_url(c: str | None) -> str | None:
        return f"{lk.api}/predictions?{urlencode({**filters, 'cursor': c})}" if c else None

    return json_response(
        PredictionPage(
            next=page_url(page.next_cursor),
            previous=page_url(page.previous_cursor),
            results=[render_prediction(r, lk) for r in page.results],
        )
    )


@router.post(
    "/predictions/{prediction_id}/cancel",
    response_model=Prediction,
    responses=_ERRORS,
    summary="Cancel a prediction",
)
async def cancel_prediction(prediction_id: str, c: CallDep) -> Response:
    """Cancel; the body is ignored (clients send none, or an empty JSON object)."""
    return json_response(render_prediction(await c.svc.cancel(c.key, prediction_id), c.links))
