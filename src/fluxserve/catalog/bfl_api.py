"""Replicate's published schemas of Black Forest Labs' API-only models, shipped with fluxserve.

These models have no open weights: fluxserve can only forward them (the gateway, :mod:`fluxserve.gateway`).
Replicate publishes each one's OpenAPI schema at ``GET /v1/models/{owner}/{name}``, but other providers that
forward them (CometAPI) have no models route, so a forwarded model would have no schema until its operator wrote
one. With the schemas shipped here, a models-file line naming the model and its provider is enough: the gateway
starts the model with the shipped schema and replaces it with the provider's when the provider publishes one.

The documents are built as Cog builds them (:func:`fluxserve.catalog.openapi.cog_input_schema` inside the same
document :class:`~fluxserve.catalog.registry.ModelSpec` publishes), from the fields in
:mod:`fluxserve.catalog.bfl_api_fields`, where each fact's source is named. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fluxserve.catalog import bfl_api_fields as f
from fluxserve.catalog.fields import InputField
from fluxserve.catalog.registry import ModelSpec

#: Every model here returns one image, as Replicate publishes it.
URI_OUTPUT: dict[str, Any] = {"type": "string", "format": "uri", "title": "Output"}

OWNER = "black-forest-labs"


@dataclass(frozen=True, eq=False)
class PublishedModel:
    """One model as Replicate publishes it: its OpenAPI document, description and latest version id."""

    ref: str
    #: The Cog-style OpenAPI document (``latest_version.openapi_schema``).
    doc: dict[str, Any]
    description: str
    #: Replicate's version id of ``doc`` (accepted here as an alias, so code pinning it runs unchanged).
    version_id: str
    #: The fields ``doc`` is built from (they carry facts a schema does not state, such as ``max_items``).
    inputs: tuple[InputField, ...]

    def item_limits(self) -> dict[str, int]:
        """Most URIs each list-of-files input takes, by field name."""
        return {field.name: field.item_limit for field in self.inputs if field.type == "uri_array"}


def _not_local(settings: Any) -> Any:
    raise RuntimeError("black-forest-labs' API models have no open weights: they can only be forwarded")


def _published(
    name: str,
    description: str,
    version_id: str,
    inputs: tuple[InputField, ...],
    nullable: Iterable[str] = (),
) -> PublishedModel:
    """Build the document as :class:`ModelSpec` publishes a local model's, marking ``nullable`` properties."""
    spec = ModelSpec(OWNER, name, description, inputs, URI_OUTPUT, predictor_factory=_not_local)
    doc = spec.openapi_schema
    properties = doc["components"]["schemas"]["Input"]["properties"]
    for field_name in nullable:
        properties[field_name]["nullable"] = True
    return PublishedModel(spec.ref, doc, description, version_id, inputs)


_MODELS = (
    # all-the-public-replicate-models 1.352.0 (description, latest_version.id, latest_version.openapi_schema).
    _published(
        "flux-1.1-pro",
        "Faster, better FLUX Pro. Text-to-image model with excellent image quality, prompt adherence, and output "
        "diversity.",
        "badb73d13c01c716f59b538fae81023a6c0a4f3aaedd00d477602c204c9e1232",
        f.FLUX_11_PRO_INPUTS,
    ),
    _published(
        "flux-1.1-pro-ultra",
        "FLUX1.1 [pro] in ultra and raw modes. Images are up to 4 megapixels. Use raw mode for realism.",
        "352185dbc99e9dd708b78b4e6870e3ca49d00dc6451a32fc6dd57968194fae5a",
        f.FLUX_11_PRO_ULTRA_INPUTS,
    ),
    _published(
        "flux-pro",
        "State-of-the-art image generation with top of the line prompt following, visual quality, image detail and "
        "output diversity.",
        "a57823497a8beebcd222c20dd78af15a90c0415c36a5bfc88ee763c67155310e",
        f.FLUX_PRO_INPUTS,
    ),
    # Descriptions: Replicate's model pages for LLMs (replicate.com/black-forest-labs/<name>/api/learn-more).
    # Version ids: the version pages named in bfl_api_fields (pro, max); flex's from public code pinning it
    # (black-forest-labs/flux-2-flex:51d0412f…), no version page found, so not confirmed as the latest.
    _published(
        "flux-2-pro",
        "High-quality image generation and editing with support for eight reference images",
        "285631b5656a1839331cd9af0d82da820e2075db12046d1d061c681b2f206bc6",
        f.FLUX2_PRO_INPUTS,
        f.FLUX2_NULLABLE,
    ),
    _published(
        "flux-2-flex",
        "Max-quality image generation and editing with support for ten reference images",
        "51d0412f4874be5ad0fc559a9174a33b24927cb12729d4e3abf5a4f98ba1a4bc",
        f.FLUX2_FLEX_INPUTS,
        f.FLUX2_NULLABLE,
    ),
    _published(
        "flux-2-max",
        "The highest fidelity image model from Black Forest Labs",
        "9c23b0aaa98765a9676dbdda58b9c9915627751300747bad54cb1c11b135d3ca",
        f.FLUX2_MAX_INPUTS,
        f.FLUX2_NULLABLE,
    ),
    # kontext-pro: description from Replicate's model page for LLMs; version from its version page (569705b3…).
    # kontext-max: the description is not confirmed (Replicate's wording was not found; this is the readme's
    # summary of the model); the version id is the one most often pinned in public code (0b9c317b…).
    _published(
        "flux-kontext-pro",
        "A state-of-the-art text-based image editing model that delivers high-quality outputs with excellent prompt "
        "following and consistent results for transforming images through natural language",
        "569705b35f79b1160d51de1d0e3955626af86c77a034a16e89010dbdde5ad312",
        f.KONTEXT_PRO_INPUTS,
        f.KONTEXT_NULLABLE,
    ),
    _published(
        "flux-kontext-max",
        "A premium text-based image editing model that delivers maximum performance and improved typography "
        "generation for transforming images through natural language prompts",
        "0b9c317b23e79a9a0d8b9602ff4d04030d433055927fb7c4b91c44234a6818c4",
        f.KONTEXT_MAX_INPUTS,
        f.KONTEXT_NULLABLE,
    ),
)

#: The shipped schemas by ``owner/name``.
PUBLISHED_SCHEMAS: dict[str, PublishedModel] = {model.ref: model for model in _MODELS}
