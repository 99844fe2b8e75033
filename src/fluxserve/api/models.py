"""Model and version endpoints, and the account."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from fluxserve.api.deps import Call, CallDep
from fluxserve.api.links import Links
from fluxserve.api.predictions import parse_time
from fluxserve.api.problems import AUTH_ERRORS, problem_responses
from fluxserve.api.render import json_response
from fluxserve.catalog.registry import COG_VERSION, VERSION_CREATED_AT, ModelSpec
from fluxserve.errors import NotFound
from fluxserve.schema import Account, Model, ModelAction, ModelPage, ModelWorker, Usage, Version, VersionPage
from fluxserve.service.predictions import PredictionService

router = APIRouter(tags=["models"])

_ERRORS = problem_responses({**AUTH_ERRORS, 404: "No such model or version"})
_ACCOUNT_ERRORS = problem_responses({**AUTH_ERRORS, 422: "created_after or created_before is not an ISO-8601 time"})


def _version(spec: ModelSpec) -> Version:
    return Version(
        id=spec.version_id,
        created_at=VERSION_CREATED_AT,
        cog_version=COG_VERSION,
        openapi_schema=spec.openapi_schema,
    )


async def _model(spec: ModelSpec, svc: PredictionService, lk: Links) -> Model:
    available = await svc.availability(spec.ref)
    queued, run_count = await svc.model_counts(spec.ref)
    return Model(
        live_workers=available.live_workers,
        state=available.state,
        workers=[ModelWorker.model_validate(entry) for entry in available.workers],
        error=available.error,
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
    results = [await _model(spec, c.svc, c.links) for spec in c.svc.registry]
    return json_response(ModelPage(next=None, previous=None, results=results))


@router.get("/models/{owner}/{name}", response_model=Model, responses=_ERRORS, summary="Get a model")
async def get_model(owner: str, name: str, c: CallDep) -> Response:
    """A model with its ``latest_version`` (Cog-style ``openapi_schema``)."""
    return json_response(await _model(c.svc.model(owner, name), c.svc, c.links))


@router.get("/models/{owner}/{name}/versions", response_model=VersionPage, responses=_ERRORS, summary="List versions")
async def list_versions(owner: str, name: str, c: CallDep) -> Response:
    """A model's versions (one: the schema this deployment serves)."""
    return json_response(VersionPage(next=None, previous=None, results=[_version(c.svc.model(owner, name))]))


@router.get(
    "/models/{owner}/{name}/versions/{version_id}",
    response_model=Version,
    responses=_ERRORS,
    summary="Get a version",
)
async def get_version(owner: str, name: str, version_id: str, c: CallDep) -> Response:
    """One version of a model."""
    spec = c.svc.model(owner, name)
    if version_id != spec.version_id:
        raise NotFound(f"Version {version_id} of {spec.ref} not found; the current version is {spec.version_id}.")
    return json_response(_version(spec))


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
