"""Hardware, collections and search: what the official clients' ``hardware``, ``collections`` and
``search`` calls read."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from fluxserve.api.deps import CallDep
from fluxserve.api.models import render_model
from fluxserve.api.problems import AUTH_ERRORS, problem_responses
from fluxserve.api.render import JSON_TYPE, json_response
from fluxserve.catalog.registry import Collection
from fluxserve.schema import Model
from fluxserve.service import directory

router = APIRouter(tags=["models"])
_ERRORS = problem_responses(AUTH_ERRORS)
_NOT_FOUND = problem_responses({**AUTH_ERRORS, 404: "No such collection"})


class Hardware(BaseModel):
    """A kind of hardware the workers run on."""

    sku: str = Field(description='e.g. "cpu" or "gpu-h100"')
    name: str


class CollectionSummary(BaseModel):
    """A collection as listed."""

    name: str
    slug: str
    description: str


class CollectionPage(BaseModel):
    """Every collection (one page)."""

    next: str | None
    previous: str | None
    results: list[CollectionSummary]


class CollectionDetail(CollectionSummary):
    """A collection with its models."""

    full_description: str | None = None
    models: list[Model]


class SearchMetadata(BaseModel):
    """Why a model matched."""

    generated_description: str | None = None
    tags: list[str] = Field(default_factory=list)
    score: float = Field(description="Share of the query's words found in the model's name and description")


class SearchModel(BaseModel):
    """A matching model and its metadata."""

    model: Model
    metadata: SearchMetadata


class SearchCollection(CollectionSummary):
    """A matching collection."""

    models: list[str]


class SearchPage(BaseModel):
    """Models and collections that match a query (this server has no documentation pages to match)."""

    query: str
    models: list[SearchModel]
    collections: list[SearchCollection]
    pages: list[dict[str, str]] = Field(default_factory=list)


def _summary(c: Collection) -> CollectionSummary:
    return CollectionSummary(name=c.name, slug=c.slug, description=c.description)


@router.get("/hardware", response_model=list[Hardware], responses=_ERRORS, summary="List hardware")
async def list_hardware(c: CallDep) -> Response:
    """The kinds of hardware live workers run on (a bare array, as on Replicate)."""
    kinds = [Hardware(**h).model_dump() for h in await directory.hardware(c.svc)]
    return Response(orjson.dumps(kinds), media_type=JSON_TYPE)


@router.get("/collections", response_model=CollectionPage, responses=_ERRORS, summary="List collections")
async def list_collections(c: CallDep) -> Response:
    """The built-in ``flux`` collection and those of the models file."""
    results = [_summary(col) for col in c.svc.registry.collections.values()]
    return json_response(CollectionPage(next=None, previous=None, results=results))


@router.get(
    "/collections/{collection_slug}", response_model=CollectionDetail, responses=_NOT_FOUND, summary="Get a collection"
)
async def get_collection(collection_slug: str, c: CallDep) -> Response:
    """A collection and its models."""
    col = directory.collection(c.svc, collection_slug)
    models = [await render_model(spec, c) for ref in col.models if (spec := c.svc.registry.get(ref)) is not None]
    return json_response(
        CollectionDetail(**_summary(col).model_dump(), full_description=col.description, models=models)
    )


@router.get("/search", response_model=SearchPage, responses=_ERRORS, summary="Search models and collections")
async def search(
    c: CallDep,
    query: Annotated[str, Query(description="Words to look for in model names and descriptions", max_length=500)],
    limit: Annotated[int, Query(ge=1, le=50, description="Most models (and collections) returned")] = 20,
) -> Response:
    """Served models and collections whose names or descriptions contain the query's words, best first."""
    hits, collections = directory.search(c.svc, query, limit)
    models = [
        SearchModel(
            model=await render_model(hit.spec, c),
            metadata=SearchMetadata(generated_description=hit.spec.description, score=round(hit.score, 3)),
        )
        for hit in hits
    ]
    found = [SearchCollection(**_summary(col).model_dump(), models=list(col.models)) for col in collections]
    return json_response(SearchPage(query=query, models=models, collections=found))
