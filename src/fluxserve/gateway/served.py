"""What this deployment serves: the built-in models, or those the models file lists, plus extra models.

It sits above both the catalog (the built-in specs and the :class:`~fluxserve.catalog.registry.Registry`)
and the gateway (the models file and forwarded models' specs), so neither has to import the other: the
models file decides what is served, and the gateway owns the models file.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from fluxserve.catalog.registry import (
    BUILTIN_MODELS,
    Collection,
    ModelSpec,
    PipelineFactory,
    Registry,
    apply_license_gate,
)
from fluxserve.gateway.routes import UpstreamRoute, load_routes
from fluxserve.gateway.specs import initial_spec

if TYPE_CHECKING:
    from fluxserve.config import Settings


class ServedRegistry(Registry):
    """The registry of a deployment, with the routes of the models it forwards upstream."""

    def __init__(
        self,
        specs: Iterable[ModelSpec],
        routes: Iterable[UpstreamRoute] = (),
        collections: Iterable[Collection] = (),
        readmes: dict[str, str] | None = None,
    ) -> None:
        super().__init__(specs, collections, readmes)
        #: The forwarded models' routes from the models file, by ``owner/name``.
        self.routes: dict[str, UpstreamRoute] = {route.ref: route for route in routes}


def _load_extra(path: str) -> list[ModelSpec]:
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"extra model {path!r} must look like 'module:attribute'")
    value = getattr(importlib.import_module(module_name), attr)
    specs = list(value) if isinstance(value, list | tuple) else [value]
    for spec in specs:
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"{path} must name a ModelSpec or a list of them, not {type(spec).__name__}")
    return specs


def build_registry(settings: Settings) -> ServedRegistry:
    """The served models: the built-in FLUX models, or those the models file lists (local ones and
    forwarded ones), plus any ``extra_models`` the settings name.

    Models under a non-commercial license are listed but refused (see
    :func:`~fluxserve.catalog.registry.apply_license_gate`) unless ``settings.noncommercial_accepted``.
    Forwarded models start *pending* (``unavailable`` set) until :func:`fluxserve.gateway.models.load_schemas`
    has fetched their schemas from the provider, except those whose schema ships with fluxserve
    (:data:`~fluxserve.catalog.bfl_api.PUBLISHED_SCHEMAS`): they start ready with it.
    """
    specs: list[ModelSpec] = list(BUILTIN_MODELS)
    upstream: list[UpstreamRoute] = []
    collections: tuple[Collection, ...] = ()
    readmes: dict[str, str] = {}
    if settings.models_file is not None:
        builtin = {spec.ref: spec for spec in BUILTIN_MODELS}
        routes = load_routes(settings.models_file, set(builtin))
        specs = []
        for local in routes.local:
            spec = builtin[local.ref]
            if local.weights:
                assert isinstance(spec.predictor_factory, PipelineFactory)
                factory = replace(spec.predictor_factory, weights_override=local.weights)
                spec = replace(spec, predictor_factory=factory)
            specs.append(spec)
        upstream = list(routes.upstream)
        collections, readmes = routes.collections, routes.readmes
        specs.extend(initial_spec(route) for route in upstream)
    for path in settings.extra_models:
        specs.extend(_load_extra(path))
    specs = apply_license_gate(specs, settings.noncommercial_accepted)
    return ServedRegistry(specs, upstream, collections, readmes)
