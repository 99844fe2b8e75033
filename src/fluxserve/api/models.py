"""Model and version endpoints, and the account."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from fluxserve.api.body import json_body_schema, parse_json_body
from fluxserve.api.deps import Call, CallDep
from fluxserve.api.predictions import parse_time
from fluxserve.api.problems import AUTH_ERRORS, problem_responses
from fluxserve.api.render import json_response, render_prediction
from fluxserve.catalog.registry import COG_VERSION, VERSION_CREATED_AT, ModelSpec
from fluxserve.errors import Forbidden, NotFound
from fluxserve.schema import (
    Account,
    Model,
    ModelAction,
    ModelPage,
    ModelWorker,
    Prediction,
    PredictionPage,
    Usage,
    Version,
    VersionPage,
)
from fluxserve.service import directory

router = APIRouter(tags=["models"])

_ERRORS = problem_responses({**AUTH_ERRORS, 404: "No such model or version"})
_ACCOUNT_ERRORS = problem_responses({**AUTH_ERRORS, 422: "created_after or created_before is not an ISO-8601 time"})


def _version(spec: ModelSpec, version_id: str | None = None) -> Version:
    return Version(
        id=version_id or spec.version_id,
        created_at=VERSION_CREATED_AT,
        cog_version=COG_VERSION,
        openapi_schema=spec.openapi_schema,
    )


async def render_model(spec: ModelSpec, c: Call) -> Model:
    """The wire object of a served model, with its live state and its default example."""
    svc, lk = c.svc, c.links
    available = await svc.availability(spec.ref)
    queued, run_count = await svc.model_counts(spec.ref)
    example = await directory.default_example(svc, spec)
    default_example = render_prediction(example, lk) if example is not None else None
    return Model(
        created_at=VERSION_CREATED_AT,
        default_example=default_example,
        cover_image_url=directory.cover_image(default_example.output) if default_example else None,
        live_workers=available.live_workers,
        state=available.state,
        workers=[ModelWorker.model_validate(entry) for entry in available.workers],
        error=spec.refused or available.error,
        license_url=spec.license_url,
        queued_predictions=queued,
        url=f"{lk.origin}/?model={spec.ref}",
        owner=spec.owner,
        name=spec.name,
        description=spec.description,
        run_count=run_count,
        latest_version=_version(spec),
    )


@router.get("/models", response_model=ModelPage, responses=_ERRORS, summary="List models")
async def list_models(c: CallDep) -> Response:
    """Every model this deployment serves."""
    results = [await render_model(spec, c) for spec in c.svc.registry]
    return json_response(ModelPage(next=None, previous=None, results=results))


@router.get("/models/{owner}/{name}", response_model=Model, responses=_ERRORS, summary="Get a model")
async def get_model(owner: str, name: str, c: CallDep) -> Response:
    """A model with its ``latest_version`` (Cog-style ``openapi_schema``)."""
    return json_response(await render_model(c.svc.model(owner, name), c))


@router.get("/models/{owner}/{name}/versions", response_model=VersionPage, responses=_ERRORS, summary="List versions")
async def list_versions(owner: str, name: str, c: CallDep) -> Response:
    """A model's versions: the schema this deployment serves, under its own id first, then under each of
    Replicate's published ids for the model (aliases: the same schema)."""
    spec = c.svc.model(owner, name)
    results = [_version(spec, version) for version in spec.version_ids]
    return json_response(VersionPage(next=None, previous=None, results=results))


@router.get(
    "/models/{owner}/{name}/versions/{version_id}",
    response_model=Version,
    responses=_ERRORS,
    summary="Get a version",
)
async def get_version(owner: str, name: str, version_id: str, c: CallDep) -> Response:
    """One version of a model."""
    spec = c.svc.model(owner, name)
    if version_id not in spec.version_ids:
        raise NotFound(f"Version {version_id} of {spec.ref} not found; the current version is {spec.version_id}.")
    return json_response(_version(spec, version_id))


@router.get(
    "/models/{owner}/{name}/examples", response_model=PredictionPage, responses=_ERRORS, summary="List examples"
)
async def list_examples(owner: str, name: str, c: CallDep) -> Response:
    """The model's example predictions (chosen by an operator), the default example first."""
    rows = await directory.examples(c.svc, c.svc.model(owner, name))
    return json_response(
        PredictionPage(next=None, previous=None, results=[render_prediction(r, c.links) for r in rows])
    )


@router.get(
    "/models/{owner}/{name}/readme",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "Markdown"}, **_ERRORS},
    summary="Get a model's readme",
)
async def get_readme(owner: str, name: str, c: CallDep) -> Response:
    """The model's readme in Markdown: the operator's (models file), or a card written from its schema."""
    return PlainTextResponse(directory.readme(c.svc, c.svc.model(owner, name)), media_type="text/plain")


_ADMIN_ERRORS = problem_responses({**AUTH_ERRORS, 403: "The key is not an admin key", 404: "No such model"})


async def _operator(owner: str, name: str, c: Call, action: str) -> Response:
    spec = c.svc.model(owner, name)
    workers = await c.svc.request_model_action(c.key, spec, action)
    return json_response(ModelAction(model=spec.ref, action=action, workers=workers), 202)


@router.post(
    "/admin/models/{owner}/{name}/load",
    status_code=202,
    response_model=ModelAction,
    responses=_ADMIN_ERRORS,
    summary="Load a model on its workers (admin; fluxserve extension)",
)
async def load_model(owner: str, name: str, c: CallDep) -> Response:
    """Ask every live worker serving the model to load it now (also retries a failed load). Follow the
    model's ``workers[].state`` to see it happen."""
    return await _operator(owner, name, c, "load")


@router.post(
    "/admin/models/{owner}/{name}/unload",
    status_code=202,
    response_model=ModelAction,
    responses=_ADMIN_ERRORS,
    summary="Unload a model from its workers (admin; fluxserve extension)",
)
async def unload_model(owner: str, name: str, c: CallDep) -> Response:
    """Ask every live worker serving the model to free its memory; it loads again at its next prediction."""
    return await _operator(owner, name, c, "unload")


class ExampleRequest(BaseModel):
    """Body of ``POST /admin/models/{owner}/{name}/examples``."""

    model_config = ConfigDict(extra="forbid")

    prediction: str = Field(description="Id of a succeeded prediction of the model")
    default: bool = Field(False, description="Make it the default example (cover image, model page)")


def _admin(c: Call) -> None:
    if not c.key.admin:
        raise Forbidden("Choosing a model's examples needs an admin key (fluxserve keys create --admin).")


@router.post(
    "/admin/models/{owner}/{name}/examples",
    response_model=Prediction,
    responses=_ADMIN_ERRORS,
    summary="Make a prediction one of the model's examples (admin; fluxserve extension)",
    openapi_extra=json_body_schema(ExampleRequest),
)
async def add_example(owner: str, name: str, request: Request, c: CallDep) -> Response:
    """List a succeeded prediction under ``GET …/examples`` (kept past the retention period); with
    ``default`` it becomes the model's ``default_example`` and gives its ``cover_image_url``."""
    _admin(c)
    body = await parse_json_body(request, ExampleRequest)
    spec = c.svc.model(owner, name)
    row = await directory.set_example(c.svc, spec, body.prediction, "default" if body.default else "example")
    return json_response(render_prediction(row, c.links))


@router.delete(
    "/admin/models/{owner}/{name}/examples/{prediction_id}",
    status_code=204,
    responses=_ADMIN_ERRORS,
    summary="Stop listing a prediction as an example (admin; fluxserve extension)",
)
async def remove_example(owner: str, name: str, prediction_id: str, c: CallDep) -> Response:
    """The prediction becomes an ordinary one again (and its data is removed on the usual schedule)."""
    _admin(c)
    await directory.set_example(c.svc, c.svc.model(owner, name), prediction_id, None)
    return Response(status_code=204, media_type="text/plain")


@router.get("/account", response_model=Account, responses=_ACCOUNT_ERRORS, summary="The account of the key in use")
async def get_account(
    c: CallDep,
    created_after: Annotated[str | None, Query(description="ISO-8601; usage of predictions created after")] = None,
    created_before: Annotated[str | None, Query(description="ISO-8601; usage of predictions created before")] = None,
) -> Response:
    """The key's account (the key's name stands for the user) and its ``usage``: all time, or in a window."""
    after, before = parse_time("created_after", created_after), parse_time("created_before", created_before)
    used = await c.svc.usage(c.key, created_after=after, created_before=before)
    usage = Usage(
        created_after=after,
        created_before=before,
        predictions=used.predictions,
        succeeded=used.succeeded,
        failed=used.failed,
        canceled=used.canceled,
        in_progress=used.in_progress,
        image_count=used.image_count,
        predict_time=round(used.predict_time, 6),
    )
    return json_response(Account(username=c.key.name, name=c.key.name, usage=usage))
