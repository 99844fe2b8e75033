"""Deployments (Replicate's ``/deployments``): named configurations of a model owned by the key's account,
and predictions created through them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from fluxserve.api.body import json_body_schema, parse_json_body
from fluxserve.api.deps import CallDep
from fluxserve.api.predictions import CREATE_ROUTE, CancelAfterHeader, PreferHeader, create_and_answer
from fluxserve.api.problems import AUTH_ERRORS, problem_responses
from fluxserve.api.render import json_response
from fluxserve.schema import PredictionRequest, Timestamp
from fluxserve.service.deployments import DeploymentService
from fluxserve.store.rows import DeploymentRow

router = APIRouter(tags=["deployments"])
_ERRORS = problem_responses({**AUTH_ERRORS, 404: "No such deployment (or not the key's account's)"})
_CREATE_ERRORS = problem_responses({**AUTH_ERRORS, 409: "The account already has a deployment of that name"})

Instances = Annotated[int, Field(ge=0, le=1000)]


class DeploymentCreate(BaseModel):
    """Body of ``POST /deployments`` (every field required, as on Replicate)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=100)
    model: str = Field(description="owner/name of a served model")
    version: str = Field(description="A version id of the model (ours or Replicate's alias)")
    hardware: str = Field(description="A sku from GET /hardware")
    min_instances: Instances
    max_instances: Instances


class DeploymentUpdate(BaseModel):
    """Body of ``PATCH /deployments/{owner}/{name}``: the fields to change."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = None
    hardware: str | None = None
    min_instances: Instances | None = None
    max_instances: Instances | None = None


class Configuration(BaseModel):
    """The hardware and instance bounds of a release."""

    hardware: str
    min_instances: int
    max_instances: int


class Creator(BaseModel):
    """The account that made a release."""

    type: str = "user"
    username: str
    name: str


class Release(BaseModel):
    """A deployment's current release."""

    number: int
    model: str
    version: str
    created_at: Timestamp
    created_by: Creator
    configuration: Configuration


class Deployment(BaseModel):
    """A deployment as Replicate returns it."""

    owner: str
    name: str
    current_release: Release


class DeploymentPage(BaseModel):
    """The account's deployments (one page holds them all)."""

    next: str | None
    previous: str | None
    results: list[Deployment]


def _render(row: DeploymentRow) -> Deployment:
    return Deployment(
        owner=row.owner,
        name=row.name,
        current_release=Release(
            number=row.release_number,
            model=row.model,
            version=row.version,
            created_at=row.release_created_at,
            created_by=Creator(username=row.created_by, name=row.created_by),
            configuration=Configuration(
                hardware=row.hardware, min_instances=row.min_instances, max_instances=row.max_instances
            ),
        ),
    )


@router.get("/deployments", response_model=DeploymentPage, responses=_ERRORS, summary="List deployments")
async def list_deployments(c: CallDep) -> Response:
    """The deployments of the key's account, by name."""
    rows = await DeploymentService(c.svc).list(c.key)
    return json_response(DeploymentPage(next=None, previous=None, results=[_render(r) for r in rows]))


@router.post(
    "/deployments",
    status_code=200,
    response_model=Deployment,
    responses=_CREATE_ERRORS,
    summary="Create a deployment",
    openapi_extra=json_body_schema(DeploymentCreate),
)
async def create_deployment(request: Request, c: CallDep) -> Response:
    """A deployment of a served model, owned by the key's account (the key's name)."""
    body = await parse_json_body(request, DeploymentCreate)
    # 200, not 201: what Replicate's document specifies for this operation.
    return json_response(_render(await DeploymentService(c.svc).create(c.key, body.model_dump())))


@router.get("/deployments/{owner}/{name}", response_model=Deployment, responses=_ERRORS, summary="Get a deployment")
async def get_deployment(owner: str, name: str, c: CallDep) -> Response:
    """One of the account's deployments."""
    return json_response(_render(await DeploymentService(c.svc).get(c.key, owner, name)))


@router.patch(
    "/deployments/{owner}/{name}",
    response_model=Deployment,
    responses=_ERRORS,
    summary="Update a deployment",
    openapi_extra=json_body_schema(DeploymentUpdate),
)
async def update_deployment(owner: str, name: str, request: Request, c: CallDep) -> Response:
    """Change the version, hardware or instance bounds; the release number goes up by one."""
    body = await parse_json_body(request, DeploymentUpdate)
    changes = body.model_dump(exclude_none=True)
    return json_response(_render(await DeploymentService(c.svc).update(c.key, owner, name, changes)))


@router.delete("/deployments/{owner}/{name}", status_code=204, responses=_ERRORS, summary="Delete a deployment")
async def delete_deployment(owner: str, name: str, c: CallDep) -> Response:
    """Delete the deployment; predictions made through it stay."""
    await DeploymentService(c.svc).delete(c.key, owner, name)
    return Response(status_code=204, media_type="text/plain")


@router.post(
    "/deployments/{owner}/{name}/predictions",
    **{**CREATE_ROUTE, "responses": {**CREATE_ROUTE["responses"], **_ERRORS}},
    summary="Create a prediction through a deployment",
)
async def create_deployment_prediction(
    owner: str,
    name: str,
    request: Request,
    c: CallDep,
    prefer: PreferHeader = None,
    cancel_after: CancelAfterHeader = None,
) -> Response:
    """A prediction of the deployment's model and version; its ``deployment`` names the deployment."""
    row, spec, version = await DeploymentService(c.svc).target(c.key, owner, name)
    body = await parse_json_body(request, PredictionRequest)
    return await create_and_answer(c, spec, version, body, prefer, cancel_after, f"{row.owner}/{row.name}")
