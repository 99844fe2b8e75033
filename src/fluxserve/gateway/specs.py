"""Forwarded models as :class:`~fluxserve.catalog.registry.ModelSpec` s, built from their provider's schema.

The provider's own OpenAPI document is published unchanged (so the playground and clients see the inputs the
provider documents), and converted into :class:`InputField` s so fluxserve validates input before anything is
forwarded: a bad request is a 422 here, not a failed prediction (and a provider charge) later.

Black Forest Labs' API-only models have Replicate's published schemas shipped with fluxserve
(:data:`~fluxserve.catalog.bfl_api.PUBLISHED_SCHEMAS`): such a model starts ready with it (:func:`initial_spec`)
instead of pending, until the provider's own schema replaces it.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from fluxserve.catalog.bfl_api import PUBLISHED_SCHEMAS, PublishedModel
from fluxserve.catalog.fields import InputField
from fluxserve.catalog.registry import ModelSpec
from fluxserve.gateway.routes import UpstreamRoute

_ANY_OUTPUT: dict[str, Any] = {"title": "Output"}


class SchemaUnavailable(Exception):
    """A forwarded model's schema could not be fetched or read; the message says from where and why."""


def fields_from_openapi(doc: dict[str, Any]) -> tuple[InputField, ...]:
    """The input fields of a Cog/Replicate OpenAPI document's ``Input`` schema, in ``x-order``.

    Enums published as ``allOf: [{$ref}]`` (Cog's style) or inline ``enum`` become choices; ``format: uri``
    strings and arrays of them become file inputs (``maxItems`` bounding how many); types the catalog lacks become
    ``json`` (passed unchecked).
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
        max_items = resolved.get("maxItems")
        if isinstance(max_items, int) and not isinstance(max_items, bool) and max_items > 0:
            kwargs["max_items"] = max_items
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


def published_model(route: UpstreamRoute) -> PublishedModel | None:
    """The schema fluxserve ships for the model ``route`` forwards (by its upstream name, else its own), if any.

    None when the route pins a version other than the shipped one: that version's schema may differ.
    """
    published = PUBLISHED_SCHEMAS.get(route.upstream_model) or PUBLISHED_SCHEMAS.get(route.ref)
    if published is None or (route.version is not None and route.version != published.version_id):
        return None
    return published


def shipped_spec(route: UpstreamRoute) -> ModelSpec | None:
    """``route``'s model, ready with the schema fluxserve ships for it; None when none ships."""
    published = published_model(route)
    if published is None:
        return None
    return ready_spec(route, copy.deepcopy(published.doc), published.description)


def initial_spec(route: UpstreamRoute) -> ModelSpec:
    """A forwarded model as it starts: ready with its shipped schema, unless the operator names a schema file (read
    at start) or none ships; pending then."""
    shipped = shipped_spec(route) if route.input_schema is None else None
    return shipped if shipped is not None else pending_spec(route)


def ready_spec(route: UpstreamRoute, doc: dict[str, Any], description: str | None = None) -> ModelSpec:
    """A forwarded model with its provider's schema: validated here, published as the provider publishes it.

    For a model whose schema ships with fluxserve, the shipped facts a schema does not state (how many files a
    list input takes) complete ``doc``'s fields, and Replicate's version id of the shipped schema is an alias.
    """
    owner, name = route.ref.split("/", 1)
    output = doc.get("components", {}).get("schemas", {}).get("Output", _ANY_OUTPUT)
    inputs = fields_from_openapi(doc)
    published = published_model(route)
    if published is not None:
        limits = published.item_limits()
        inputs = tuple(
            replace(field, max_items=limits[field.name])
            if field.type == "uri_array" and field.max_items is None and field.name in limits
            else field
            for field in inputs
        )
    return ModelSpec(
        owner=owner,
        name=name,
        description=route.description
        or description
        or (published.description if published else None)
        or f"Forwarded to {route.provider.name}",
        inputs=inputs,
        output_schema=output if isinstance(output, dict) else _ANY_OUTPUT,
        predictor_factory=_factory(route),
        published_schema=doc,
        max_concurrency=route.provider.concurrency,
        provider=route.provider.name,
        replicate_versions=(published.version_id,) if published else (),
    )


def _factory(route: UpstreamRoute) -> Any:
    def factory(settings: Any) -> Any:
        from fluxserve.gateway.predictor import UpstreamPredictor

        return UpstreamPredictor(route, settings)

    return factory
