"""The model registry: which models this deployment serves, their schemas and how to build predictors.

Defined once and shared by the API (schemas, validation) and the worker (predictors). Building a
predictor imports its module lazily, so the API process never imports torch.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, get_args

import orjson

from fluxserve.catalog import flux2, lora
from fluxserve.catalog.fields import InputField
from fluxserve.catalog.flux import (
    FLUX_DEV_INPUTS,
    FLUX_KONTEXT_DEV_INPUTS,
    FLUX_SCHNELL_INPUTS,
    URI_LIST_OUTPUT,
    URI_OUTPUT,
    kontext_input_errors,
)
from fluxserve.catalog.openapi import cog_input_schema
from fluxserve.errors import InvalidField
from fluxserve.schema import WebhookEvent

if TYPE_CHECKING:
    from fluxserve.config import Settings
    from fluxserve.predictors.base import Predictor
    from fluxserve.predictors.tiny import TinyKind

PredictorFactory = Callable[["Settings"], "Predictor"]

COG_VERSION = "0.16.0"
# A fixed publication date: versions are content-addressed, so their date must not move between runs.
VERSION_CREATED_AT = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ModelSpec:
    """One served model: ``owner/name``, its input fields, its output schema and its predictor."""

    owner: str
    name: str
    description: str
    inputs: tuple[InputField, ...]
    output_schema: dict[str, Any]
    predictor_factory: PredictorFactory = field(compare=False, repr=False)
    #: Checks across fields (e.g. "exactly one of input_image / input_images"), run at create time.
    input_check: Callable[[dict[str, Any]], list[InvalidField]] | None = field(default=None, compare=False, repr=False)
    #: The OpenAPI document to publish as is (a forwarded model publishes its upstream's); default: built from inputs.
    published_schema: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    #: Predictions of this model a worker runs at once, beside (not instead of) its GPU work. None: the model
    #: shares the worker's ``worker_concurrency`` slots. Forwarded models set it: they wait on the network.
    max_concurrency: int | None = None
    #: Why the model cannot take predictions right now (e.g. its upstream schema could not be fetched); create
    #: answers 503 with this text.
    unavailable: str | None = None
    #: For a forwarded model, the provider's name (shown in the model listing; None for local models).
    provider: str | None = None
    #: Replicate's published version ids of this model, accepted as aliases of ours so that code pinning
    #: ``owner/name:<replicate id>`` (or the bare id) runs here unchanged.
    replicate_versions: tuple[str, ...] = ()
    #: The weights' license, shown as the model's ``license_url``.
    license_url: str | None = None
    #: The license's name when it allows non-commercial use only; such models are served only when the operator
    #: accepts it (``FLUXSERVE_ACCEPT_NONCOMMERCIAL_LICENSES``). None: commercial use allowed.
    noncommercial_license: str | None = None
    #: Why this deployment refuses predictions of the model (its license is not accepted): create answers 403
    #: with this text and no worker loads it.
    refused: str | None = None

    @property
    def version_ids(self) -> tuple[str, ...]:
        """Every version id this model answers to: ours first, then Replicate's aliases."""
        return (self.version_id, *self.replicate_versions)

    @property
    def ref(self) -> str:
        """``owner/name``."""
        return f"{self.owner}/{self.name}"

    @property
    def openapi_schema(self) -> dict[str, Any]:
        """The Cog-style OpenAPI document published as ``latest_version.openapi_schema``."""
        if self.published_schema is not None:
            return self.published_schema
        return _cog_openapi(self)

    @property
    def version_id(self) -> str:
        """64-hex id derived from the schema, so it changes exactly when the schema does."""
        canonical = orjson.dumps({"ref": self.ref, "schema": self.openapi_schema}, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()


def _cog_openapi(spec: ModelSpec) -> dict[str, Any]:
    schemas: dict[str, Any] = cog_input_schema(spec.inputs)
    schemas["Output"] = spec.output_schema
    schemas["Status"] = {
        "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
        "type": "string",
        "title": "Status",
        "description": "An enumeration.",
    }
    schemas["WebhookEvent"] = {
        "enum": list(get_args(WebhookEvent)),
        "type": "string",
        "title": "WebhookEvent",
        "description": "An enumeration.",
    }
    schemas["PredictionRequest"] = {
        "type": "object",
        "title": "PredictionRequest",
        "properties": {
            "id": {"type": "string", "title": "Id"},
            "input": {"$ref": "#/components/schemas/Input"},
            "webhook": {"type": "string", "title": "Webhook", "format": "uri"},
            "created_at": {"type": "string", "title": "Created At", "format": "date-time"},
            "output_file_prefix": {"type": "string", "title": "Output File Prefix"},
            "webhook_events_filter": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/WebhookEvent"},
                "default": list(get_args(WebhookEvent)),
            },
        },
    }
    schemas["PredictionResponse"] = {
        "type": "object",
        "title": "PredictionResponse",
        "properties": {
            "id": {"type": "string", "title": "Id"},
            "logs": {"type": "string", "title": "Logs", "default": ""},
            "error": {"type": "string", "title": "Error"},
            "input": {"$ref": "#/components/schemas/Input"},
            "output": {"$ref": "#/components/schemas/Output"},
            "status": {"$ref": "#/components/schemas/Status"},
            "metrics": {"type": "object", "title": "Metrics"},
            "version": {"type": "string", "title": "Version"},
            "created_at": {"type": "string", "title": "Created At", "format": "date-time"},
            "started_at": {"type": "string", "title": "Started At", "format": "date-time"},
            "completed_at": {"type": "string", "title": "Completed At", "format": "date-time"},
        },
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {
            "/predictions": {
                "post": {
                    "summary": "Predict",
                    "operationId": "predict_predictions_post",
                    "requestBody": {
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictionRequest"}}}
                    },
                    "responses": {
                        "200": {
                            "description": "Successful Response",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/PredictionResponse"}}
                            },
                        }
                    },
                }
            }
        },
        "components": {"schemas": schemas},
    }


@dataclass(frozen=True)
class Collection:
    """A named group of served models (``GET /v1/collections``)."""

    slug: str
    name: str
    description: str
    models: tuple[str, ...]


FLUX_COLLECTION = ("flux", "FLUX", "Black Forest Labs' FLUX image models served here")


class Registry:
    """The models one deployment serves, looked up by ``owner/name`` or version id, with their collections
    (a built-in ``flux`` one, plus the models file's) and operator-written readmes."""

    def __init__(
        self,
        specs: Iterable[ModelSpec],
        collections: Iterable[Collection] = (),
        readmes: dict[str, str] | None = None,
    ) -> None:
        self._by_ref: dict[str, ModelSpec] = {}
        self._by_version: dict[str, ModelSpec] = {}
        for spec in specs:
            self._index(spec)
        self.readmes: dict[str, str] = dict(readmes or {})
        flux = tuple(ref for ref in self._by_ref if ref.split("/", 1)[1].startswith("flux"))
        self.collections: dict[str, Collection] = (
            {FLUX_COLLECTION[0]: Collection(*FLUX_COLLECTION, flux)} if flux else {}
        )
        self.collections.update({c.slug: c for c in collections})

    def _index(self, spec: ModelSpec) -> None:
        self._by_ref[spec.ref] = spec
        for version in spec.version_ids:
            self._by_version[version] = spec

    def __iter__(self) -> Any:
        return iter(self._by_ref.values())

    def __len__(self) -> int:
        return len(self._by_ref)

    def get(self, ref: str) -> ModelSpec | None:
        """The model named ``owner/name``, or None."""
        return self._by_ref.get(ref)

    def by_version(self, version_id: str) -> ModelSpec | None:
        """The model whose current version id (or a Replicate alias of it) is ``version_id``, or None."""
        return self._by_version.get(version_id)

    def replace(self, spec: ModelSpec) -> None:
        """Swap in a new definition of an already served model (e.g. once its upstream schema arrives)."""
        old = self._by_ref.get(spec.ref)
        if old is not None:
            for version in old.version_ids:
                self._by_version.pop(version, None)
        self._index(spec)


@dataclass(frozen=True)
class PipelineFactory:
    """Builds a diffusers predictor: real weights from a setting (or ``weights_override``, from the models
    file), or with ``--demo`` a tiny random pipeline of ``tiny_kind`` built once into the data dir (imports
    happen only when called)."""

    module: str
    class_name: str
    weights_setting: str
    tiny_kind: TinyKind
    weights_override: str | None = None

    def __call__(self, settings: Settings) -> Predictor:
        """Import the predictor class and build it for ``settings`` (weights, device and go_fast options)."""
        # Imported here, not at module level: the API process imports this module and must not load predictors.
        from fluxserve.predictors.go_fast.options import FastOptions

        predictor_class = getattr(importlib.import_module(f"fluxserve.predictors.{self.module}"), self.class_name)
        weights = self.weights_override or str(getattr(settings, self.weights_setting))
        if settings.demo:
            from fluxserve.predictors.tiny import build_tiny_pipeline

            tiny_dir = settings.demo_weights_dir / f"flux-{self.tiny_kind}"
            weights = str(build_tiny_pipeline(tiny_dir, kind=self.tiny_kind))
        predictor: Predictor = predictor_class(
            weights=weights, device=settings.device, fast=FastOptions.from_settings(settings)
        )
        apply_settings = getattr(predictor, "apply_settings", None)
        if apply_settings is not None:  # predictors with settings of their own (LoRA residency)
            apply_settings(settings)
        return predictor


FLUX_SCHNELL = ModelSpec(
    owner="black-forest-labs",
    name="flux-schnell",
    description="The fastest image generation model tailored for local development and personal use",
    inputs=FLUX_SCHNELL_INPUTS,
    output_schema=URI_LIST_OUTPUT,
    predictor_factory=PipelineFactory("flux_schnell", "FluxSchnellPredictor", "flux_schnell_weights", "schnell"),
    # all-the-public-replicate-models 1.352.0, latest_version.id
    replicate_versions=("53d5d1586a229bd033e060941789bfb0c177cefd5ef638f34b3099658343a897",),
    license_url=flux2.APACHE_2,
)


FLUX_DEV = ModelSpec(
    owner="black-forest-labs",
    name="flux-dev",
    description="A 12 billion parameter rectified flow transformer capable of generating images from text descriptions",
    inputs=FLUX_DEV_INPUTS,
    output_schema=URI_LIST_OUTPUT,
    predictor_factory=PipelineFactory("flux_dev", "FluxDevPredictor", "flux_dev_weights", "dev"),
    replicate_versions=("7863d1ba11a1bb115732a12488486eb8bb3d54ae62cff189f1677a31dbcdfd2e",),
    license_url=flux2.FLUX1_DEV_LICENSE,
    noncommercial_license="FLUX.1 [dev] Non-Commercial License",
)


FLUX_KONTEXT_DEV = ModelSpec(
    owner="black-forest-labs",
    name="flux-kontext-dev",
    description="Open-weight version of FLUX.1 Kontext",
    inputs=FLUX_KONTEXT_DEV_INPUTS,
    output_schema=URI_OUTPUT,
    predictor_factory=PipelineFactory("flux_kontext", "FluxKontextPredictor", "flux_kontext_dev_weights", "kontext"),
    input_check=kontext_input_errors,
    license_url=flux2.FLUX1_KONTEXT_DEV_LICENSE,
    noncommercial_license="FLUX.1 [dev] Non-Commercial License",
)

FLUX_KREA_DEV = ModelSpec(
    owner="black-forest-labs",
    name="flux-krea-dev",
    description="An opinionated text-to-image model from Black Forest Labs in collaboration with Krea that excels "
    "in photorealism. Creates images that avoid the oversaturated 'AI look'.",
    inputs=flux2.FLUX_KREA_DEV_INPUTS,
    output_schema=URI_LIST_OUTPUT,
    # FLUX.1 Krea [dev] is FLUX.1 [dev]'s architecture: the same predictor, other weights.
    predictor_factory=PipelineFactory("flux_dev", "FluxKreaDevPredictor", "flux_krea_dev_weights", "dev"),
    license_url=flux2.FLUX1_KREA_DEV_LICENSE,
    noncommercial_license="FLUX.1 [dev] Non-Commercial License",
)

FLUX2_DEV = ModelSpec(
    owner="black-forest-labs",
    name="flux-2-dev",
    description="Quality image generation and editing with support for reference images",
    inputs=flux2.FLUX2_DEV_INPUTS,
    output_schema=URI_OUTPUT,
    predictor_factory=PipelineFactory("flux2", "Flux2DevPredictor", "flux2_dev_weights", "flux2-dev"),
    # replicate.com/black-forest-labs/flux-2-dev/versions/7bba46bd…/api
    replicate_versions=("7bba46bdde863cfd7aaee87649a5aa49f39f368495dbea500998d1fcbb262050",),
    license_url=flux2.FLUX2_DEV_LICENSE,
    noncommercial_license="FLUX [dev] Non-Commercial License",
)

FLUX2_KLEIN_4B = ModelSpec(
    owner="black-forest-labs",
    name="flux-2-klein-4b",
    description="FLUX.2 [klein] 4B: image generation and multi-reference editing in 4 distilled steps (Apache-2.0)",
    inputs=flux2.FLUX2_KLEIN_INPUTS,
    output_schema=URI_LIST_OUTPUT,
    predictor_factory=PipelineFactory("flux2", "Flux2KleinPredictor", "flux2_klein_4b_weights", "klein"),
    # replicate.com/black-forest-labs/flux-2-klein-4b/versions/8e9c42d7…/api
    replicate_versions=("8e9c42d77b10a2a41af823ac4500f7545be6ebc4e745830fc3f3de10de200542",),
    license_url=flux2.APACHE_2,
)

FLUX2_KLEIN_9B = ModelSpec(
    owner="black-forest-labs",
    name="flux-2-klein-9b",
    description="FLUX.2 [klein] 9B: image generation and multi-reference editing in 4 distilled steps",
    inputs=flux2.FLUX2_KLEIN_INPUTS,
    output_schema=URI_LIST_OUTPUT,
    predictor_factory=PipelineFactory("flux2", "Flux2Klein9BPredictor", "flux2_klein_9b_weights", "klein"),
    license_url=flux2.FLUX2_KLEIN_9B_LICENSE,
    noncommercial_license="FLUX [dev] Non-Commercial License",
)

FLUX_DEV_LORA = ModelSpec(
    owner="black-forest-labs",
    name="flux-dev-lora",
    description="A version of flux-dev, a text to image model, that supports fast fine-tuned lora inference",
    inputs=lora.FLUX_DEV_LORA_INPUTS,
    output_schema=URI_LIST_OUTPUT,
    predictor_factory=PipelineFactory("flux_lora", "FluxDevLoraPredictor", "flux_dev_weights", "dev"),
    input_check=lora.lora_input_errors,
    replicate_versions=("9dbd61f957fb7f5026588ae306b1db961f2d1d3ba314f05bc92ded2158df0b17",),
    license_url=flux2.FLUX1_DEV_LICENSE,
    noncommercial_license="FLUX.1 [dev] Non-Commercial License",
)

FLUX_SCHNELL_LORA = ModelSpec(
    owner="black-forest-labs",
    name="flux-schnell-lora",
    description="The fastest image generation model tailored for fine-tuned use",
    inputs=lora.FLUX_SCHNELL_LORA_INPUTS,
    output_schema=URI_LIST_OUTPUT,
    predictor_factory=PipelineFactory("flux_lora", "FluxSchnellLoraPredictor", "flux_schnell_weights", "schnell"),
    input_check=lora.lora_input_errors,
    replicate_versions=("19482ef1ede20d3cf897574262c0e5b961e7e4216f7f143d419c39d0636a75ba",),
    license_url=flux2.APACHE_2,
)

BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    FLUX_SCHNELL,
    FLUX_DEV,
    FLUX_KONTEXT_DEV,
    FLUX_KREA_DEV,
    FLUX2_KLEIN_4B,
    FLUX2_KLEIN_9B,
    FLUX2_DEV,
    FLUX_DEV_LORA,
    FLUX_SCHNELL_LORA,
)


def license_refusal(spec: ModelSpec) -> str:
    """What a client is told when ``spec``'s non-commercial license has not been accepted."""
    return (
        f"{spec.ref} is not served here: its weights are under the {spec.noncommercial_license} "
        f"({spec.license_url}), which allows non-commercial use only. The operator of this server can serve it by "
        "setting FLUXSERVE_ACCEPT_NONCOMMERCIAL_LICENSES=true, if their use is allowed by that license."
    )


def apply_license_gate(specs: Iterable[ModelSpec], accepted: bool) -> list[ModelSpec]:
    """``specs`` with every non-commercial model marked :attr:`ModelSpec.refused` unless ``accepted``."""
    if accepted:
        return list(specs)
    return [
        replace(spec, refused=license_refusal(spec)) if spec.noncommercial_license and not spec.refused else spec
        for spec in specs
    ]
