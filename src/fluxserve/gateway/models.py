"""Forwarded models' schemas: fetched from the provider at start, cached on disk, swapped into the registry.

A forwarded model starts *pending* (:func:`~fluxserve.gateway.specs.pending_spec`); once its schema is known
(from its ``input_schema`` file, the provider, or the disk cache when the provider is down) it becomes ready
(:func:`~fluxserve.gateway.specs.ready_spec`). Schemas still missing are retried in the background.

A model whose schema ships with fluxserve (:data:`~fluxserve.catalog.bfl_api.PUBLISHED_SCHEMAS`) starts ready with
it instead, and is never pending: the provider's schema replaces it when the provider answers (it is authoritative
and may be newer), the disk cache when the provider does not, and the shipped one stays when neither is there.
Such a model is not retried in the background: the provider is asked again at the next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx

from fluxserve.catalog.registry import ModelSpec
from fluxserve.gateway.routes import UpstreamRoute
from fluxserve.gateway.served import ServedRegistry
from fluxserve.gateway.specs import (
    SchemaUnavailable,
    fields_from_openapi,
    pending_spec,
    ready_spec,
    shipped_spec,
)

log = logging.getLogger("fluxserve.gateway")

#: How often a process retries fetching schemas that were unavailable at start.
SCHEMA_RETRY_SECONDS = 60.0


def cache_path(data_dir: Path, route: UpstreamRoute) -> Path:
    """Where the last schema fetched for ``route`` is kept (used when the provider is down at start)."""
    return data_dir / "gateway-schemas" / (route.ref.replace("/", "--") + ".json")


async def fetch_schema(route: UpstreamRoute, client: httpx.AsyncClient) -> tuple[dict[str, Any], str | None]:
    """The provider's OpenAPI document for ``route`` (and the model's description), from its models route."""
    provider = route.provider
    path = f"/models/{route.upstream_model}"
    if route.version:
        path += f"/versions/{route.version}"
    where = f"{provider.name} ({provider.base_url}{path})"
    try:
        response = await client.get(
            provider.base_url + path,
            headers={"Authorization": f"Bearer {provider.token()}"},
            timeout=min(provider.timeout, 15.0),
        )
    except httpx.HTTPError as exc:
        raise SchemaUnavailable(f"could not reach {where}: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise SchemaUnavailable(f"{where} answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError as exc:
        raise SchemaUnavailable(f"{where} did not answer JSON") from exc
    holder = body if route.version else (body.get("latest_version") or {})
    doc = holder.get("openapi_schema") if isinstance(holder, dict) else None
    if not isinstance(doc, dict):
        raise SchemaUnavailable(f"{where} published no openapi_schema")
    fields_from_openapi(doc)  # raises SchemaUnavailable when the document has no usable Input
    description = body.get("description") if not route.version else None
    return doc, description if isinstance(description, str) else None


def read_schema_file(path: Path) -> dict[str, Any]:
    """A schema the operator saved: a whole OpenAPI document, or just its ``Input`` object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SchemaUnavailable(f"cannot read input_schema file {path}: {exc}") from exc
    if isinstance(data, dict) and "openapi_schema" in data:
        data = data["openapi_schema"]
    if isinstance(data, dict) and "properties" in data and "components" not in data:
        data = {"components": {"schemas": {"Input": data}}}
    if not isinstance(data, dict):
        raise SchemaUnavailable(f"input_schema file {path} holds no JSON object")
    fields_from_openapi(data)
    return data


async def load_schema(route: UpstreamRoute, data_dir: Path, client: httpx.AsyncClient) -> ModelSpec:
    """The spec of a forwarded model: from its schema file, the provider, or (provider down) the disk cache, or the
    schema shipped with fluxserve (see the module docstring); pending when there is none of them."""
    if route.input_schema is not None:
        try:
            return ready_spec(route, read_schema_file(route.input_schema))
        except SchemaUnavailable as exc:
            return pending_spec(route, f"{route.ref} cannot take predictions: {exc}.")
    cached = cache_path(data_dir, route)
    try:
        doc, description = await fetch_schema(route, client)
    except SchemaUnavailable as exc:
        if cached.exists():
            log.warning("%s: %s; using the schema cached at %s", route.ref, exc, cached)
            try:
                return ready_spec(route, read_schema_file(cached))
            except SchemaUnavailable as cache_exc:
                log.warning("%s: the cached schema is unusable: %s", route.ref, cache_exc)
        shipped = shipped_spec(route)
        if shipped is not None:
            log.warning(
                "%s: %s; using the schema shipped with fluxserve (Replicate's version %s)",
                route.ref,
                exc,
                shipped.replicate_versions[0],
            )
            return shipped
        log.error("%s: the input schema is unavailable: %s", route.ref, exc)
        return pending_spec(
            route,
            f"{route.ref} is forwarded to {route.provider.name}, whose schema for it could not be fetched "
            f"({exc}); retrying every {SCHEMA_RETRY_SECONDS:.0f} s.",
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(cached)
    log.info("%s: using the schema %s publishes", route.ref, route.provider.name)
    return ready_spec(route, doc, description)


async def load_schemas(registry: ServedRegistry, data_dir: Path, *, only_pending: bool = False) -> int:
    """Fetch every forwarded model's schema (concurrently) and swap the results into ``registry``.

    Returns how many forwarded models are still unavailable.
    """
    routes = [
        route
        for route in registry.routes.values()
        if not only_pending or (spec := registry.get(route.ref)) is None or spec.unavailable
    ]
    if not routes:
        return 0
    async with httpx.AsyncClient(follow_redirects=True) as client:
        specs = await asyncio.gather(*(load_schema(route, data_dir, client) for route in routes))
    for spec in specs:
        registry.replace(spec)
    return sum(1 for spec in specs if spec.unavailable)


async def retry_pending_schemas(registry: ServedRegistry, data_dir: Path) -> None:
    """Forever: retry the schemas still unavailable, every :data:`SCHEMA_RETRY_SECONDS`."""
    while True:
        await asyncio.sleep(SCHEMA_RETRY_SECONDS)
        if any(spec.unavailable for spec in registry if spec.provider):
            try:
                await load_schemas(registry, data_dir, only_pending=True)
            except Exception:
                log.exception("retrying upstream schemas failed")
