"""Forwarded models' schemas: fetched from the provider at start, cached on disk, turned into input fields.

The provider's own OpenAPI document is published unchanged (so the playground and clients see the inputs the
provider documents), and converted into :class:`InputField` s so fluxserve validates input before anything is
forwarded: a bad request is a 422 here, not a failed prediction (and a provider charge) later.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx

from fluxserve.catalog.fields import InputField
from fluxserve.catalog.registry import ModelSpec, Registry
from fluxserve.gateway.routes import UpstreamRoute

log = logging.getLogger("fluxserve.gateway")

#: How often a process retries fetching schemas that were unavailable at start.
SCHEMA_RETRY_SECONDS = 60.0
_ANY_OUTPUT: dict[str, Any] = {"title": "Output"}


class SchemaUnavailable(Exception):
    """A forwarded model's schema could not be fetched or read; the message says from where and why."""


def fields_from_openapi(doc: dict[str, Any]) -> tuple[InputField, ...]:
    """The input fields of a Cog/Replicate OpenAPI document's ``Input`` schema, in ``x-order``.

    Enums published as ``allOf: [{$ref}]`` (Cog's style) or inline ``enum`` become choices; ``format: uri``
    strings and arrays of them become file inputs; types the catalog lacks become ``json`` (passed unchecked).
    """
    schemas = doc.get("components", {}).get("schemas", {})
    input_schema = schemas.get("Input")
    if not isinstance(input_schema, dict) or not isinstance(input_schema.get("properties"), dict):
        raise SchemaUnavailable("the OpenAPI document has no components.schemas.Input with properties")
    required = set(input_schema.get("required", []))
    props: list[tuple[float, str, dict[str, Any]]] = []
    for i, (name, prop) in enumerate(input_schema["properties"].items()):
        if isinstance(prop, dict):
            order = prop.get("x-order", i)
            props.append((order if isinstance(order, int | float) else i, name, prop))
    fields: list[InputField] = []
    for _, name, prop in sorted(props, key=lambda item: item[0]):
        resolved = _resolve(prop, schemas)
        kwargs: dict[str, Any] = {}
        if "default" in prop:
            kwargs["default"] = prop["default"]
        for bound in ("minimum", "maximum"):
            if isinstance(resolved.get(bound), int | float) and not isinstance(resolved.get(bound), bool):
                kwargs[bound] = resolved[bound]
        if isinstance(resolved.get("enum"), list):
            kwargs["choices"] = tuple(resolved["enum"])
        fields.append(
            InputField(
                name=name,
                type=_field_type(resolved),
                description=str(prop.get("description") or ""),
                required=name in required and "default" not in prop,
                **kwargs,
            )
        )
    return tuple(fields)


def _resolve(prop: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """Merge a property with what its ``allOf``/``$ref`` points at (one level, as Cog publishes enums)."""
    merged = dict(prop)
    refs = list(prop.get("allOf", []))
    if "$ref" in prop:
        refs.append({"$ref": prop["$ref"]})
    for item in refs:
        if isinstance(item, dict) and isinstance(item.get("$ref"), str):
            target = schemas.get(item["$ref"].rsplit("/", 1)[-1])
            if isinstance(target, dict):
                merged = {**target, **{k: v for k, v in merged.items() if k not in ("allOf", "$ref")}}
    return merged


def _field_type(prop: dict[str, Any]) -> Any:
    kind = prop.get("type")
    if kind == "string":
        return "uri" if prop.get("format") == "uri" else "string"
    if kind in ("integer", "number", "boolean"):
        return kind
    if kind == "array":
        items = prop.get("items")
        if isinstance(items, dict) and items.get("type") == "string" and items.get("format") == "uri":
            return "uri_array"
    return "json"


def pending_spec(route: UpstreamRoute, reason: str | None = None) -> ModelSpec:
    """A forwarded model whose schema is not known yet: listed, but create answers 503 with ``reason``."""
    owner, name = route.ref.split("/", 1)
    return ModelSpec(
        owner=owner,
        name=name,
        description=route.description or f"Forwarded to {route.provider.name}",
        inputs=(),
        output_schema=_ANY_OUTPUT,
        predictor_factory=_factory(route),
        max_concurrency=route.provider.concurrency,
        unavailable=reason or f"{route.ref}: the input schema has not been fetched from {route.provider.name} yet.",
        provider=route.provider.name,
    )


def ready_spec(route: UpstreamRoute, doc: dict[str, Any], description: str | None = None) -> ModelSpec:
    """A forwarded model with its provider's schema: validated here, published as the provider publishes it."""
    owner, name = route.ref.split("/", 1)
    output = doc.get("components", {}).get("schemas", {}).get("Output", _ANY_OUTPUT)
    return ModelSpec(
        owner=owner,
        name=name,
        description=route.description or description or f"Forwarded to {route.provider.name}",
        inputs=fields_from_openapi(doc),
        output_schema=output if isinstance(output, dict) else _ANY_OUTPUT,
        predictor_factory=_factory(route),
        published_schema=doc,
        max_concurrency=route.provider.concurrency,
        provider=route.provider.name,
    )


def _factory(route: UpstreamRoute) -> Any:
    def factory(settings: Any) -> Any:
        from fluxserve.gateway.predictor import UpstreamPredictor

        return UpstreamPredictor(route, settings)

    return factory


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
    """The spec of a forwarded model: from its schema file, the provider, or (provider down) the disk cache."""
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
    return ready_spec(route, doc, description)


async def load_schemas(registry: Registry, data_dir: Path, *, only_pending: bool = False) -> int:
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


async def retry_pending_schemas(registry: Registry, data_dir: Path) -> None:
    """Forever: retry the schemas still unavailable, every :data:`SCHEMA_RETRY_SECONDS`."""
    while True:
        await asyncio.sleep(SCHEMA_RETRY_SECONDS)
        if any(spec.unavailable for spec in registry if spec.provider):
            try:
                await load_schemas(registry, data_dir, only_pending=True)
            except Exception:
                log.exception("retrying upstream schemas failed")
