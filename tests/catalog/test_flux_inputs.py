"""The flux-dev and flux-kontext-dev input catalogs, the uri_array field type and the registry entries."""

from __future__ import annotations

from fluxserve.catalog.fields import validate_input
from fluxserve.catalog.flux import FLUX_DEV_INPUTS, FLUX_KONTEXT_DEV_INPUTS, kontext_input_errors
from fluxserve.catalog.openapi import cog_input_schema
from fluxserve.catalog.registry import BUILTIN_MODELS, FLUX_DEV, FLUX_KONTEXT_DEV
from fluxserve.catalog.sizes import KONTEXT_ASPECT_RATIOS, PREFERRED_KONTEXT_RESOLUTIONS
from fluxserve.config import Settings
from fluxserve.gateway.served import build_registry


def _order(fields: tuple) -> list[str]:  # type: ignore[type-arg]
    properties = cog_input_schema(fields)["Input"]["properties"]
    return sorted(properties, key=lambda name: properties[name]["x-order"])


def test_dev_inputs_in_replicates_order_with_defaults() -> None:
    assert _order(FLUX_DEV_INPUTS) == [
        "prompt", "aspect_ratio", "image", "prompt_strength", "num_outputs", "num_inference_steps", "guidance",
        "seed", "output_format", "output_quality", "disable_safety_checker", "go_fast", "megapixels",
    ]  # fmt: skip
    values = validate_input(FLUX_DEV_INPUTS, {"prompt": "p"}).values
    assert (values["num_inference_steps"], values["guidance"], values["prompt_strength"], values["image"]) == (
        28, 3, 0.8, None,
    )  # fmt: skip
    properties = cog_input_schema(FLUX_DEV_INPUTS)["Input"]["properties"]
    assert properties["image"] == {
        "title": "Image", "x-order": 2, "type": "string", "format": "uri",
        "description": "Input image for image to image mode. The aspect ratio of your output will match this image",
    }  # fmt: skip
    assert (properties["guidance"]["minimum"], properties["guidance"]["maximum"]) == (0, 10)
    assert (properties["num_inference_steps"]["minimum"], properties["num_inference_steps"]["maximum"]) == (1, 50)
    errors = validate_input(FLUX_DEV_INPUTS, {"prompt": "p", "prompt_strength": 1.5, "guidance": -1}).errors
    assert {e.field for e in errors} == {"input.prompt_strength", "input.guidance"}


def test_kontext_inputs_and_schema() -> None:
    assert _order(FLUX_KONTEXT_DEV_INPUTS) == [
        "prompt", "input_image", "aspect_ratio", "num_inference_steps", "guidance", "seed",
        "output_format", "output_quality", "disable_safety_checker", "go_fast", "input_images",
    ]  # fmt: skip
    schemas = cog_input_schema(FLUX_KONTEXT_DEV_INPUTS)
    assert schemas["Input"]["required"] == ["prompt"]
    assert schemas["aspect_ratio"]["enum"] == [*KONTEXT_ASPECT_RATIOS, "match_input_image"]
    images = schemas["Input"]["properties"]["input_images"]
    assert (images["type"], images["items"]) == ("array", {"type": "string", "format": "uri"})
    values = validate_input(FLUX_KONTEXT_DEV_INPUTS, {"prompt": "p", "input_image": "https://x/y.png"}).values
    assert (values["aspect_ratio"], values["guidance"], values["num_inference_steps"]) == ("match_input_image", 2.5, 28)
    assert "num_outputs" not in values and "megapixels" not in values
    too_few = validate_input(FLUX_KONTEXT_DEV_INPUTS, {"prompt": "p", "num_inference_steps": 3}).errors
    assert [e.field for e in too_few] == ["input.num_inference_steps"]


def test_uri_array_validation() -> None:
    def errors(value: object) -> list[tuple[str, str]]:
        result = validate_input(FLUX_KONTEXT_DEV_INPUTS, {"prompt": "p", "input_images": value})
        return [(e.type, e.description) for e in result.errors]

    assert errors(["https://a/1.png", "data:image/png;base64,AAAA"]) == []
    assert errors("https://a/1.png") == [("invalid_type", "input_images must be a list of URI strings")]
    assert errors(["https://a/1.png", 3]) == [("invalid_type", "input_images must be a list of URI strings")]
    assert errors([]) == [("too_short", "input_images must contain at least one URI")]
    assert errors(["u"] * 5) == [("too_long", "input_images must contain at most 4 URIs (got 5)")]


def test_kontext_input_errors() -> None:
    assert kontext_input_errors({"input_image": "u", "input_images": None}) == []
    assert kontext_input_errors({"input_images": ["u"]}) == []
    (neither,) = kontext_input_errors({"input_image": None, "input_images": None})
    assert (neither.type, neither.field) == ("required", "input.input_image")
    (both,) = kontext_input_errors({"input_image": "u", "input_images": ["v"]})
    assert both.field == "input.input_images"
    for error in (neither, both):
        assert "input_image " in error.description and "input_images" in error.description


def test_kontext_tables() -> None:
    assert len(PREFERRED_KONTEXT_RESOLUTIONS) == 17
    assert all(w % 16 == 0 and h % 16 == 0 for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
    assert set(KONTEXT_ASPECT_RATIOS.values()) <= set(PREFERRED_KONTEXT_RESOLUTIONS)


def test_registry_serves_the_flux_family() -> None:
    assert [spec.ref for spec in BUILTIN_MODELS] == [
        "black-forest-labs/flux-schnell", "black-forest-labs/flux-dev", "black-forest-labs/flux-kontext-dev",
        "black-forest-labs/flux-krea-dev", "black-forest-labs/flux-2-klein-4b", "black-forest-labs/flux-2-klein-9b",
        "black-forest-labs/flux-2-dev", "black-forest-labs/flux-dev-lora", "black-forest-labs/flux-schnell-lora",
    ]  # fmt: skip
    assert len({spec.version_id for spec in BUILTIN_MODELS}) == 9
    dev_output = FLUX_DEV.openapi_schema["components"]["schemas"]["Output"]
    assert dev_output == {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}
    kontext_output = FLUX_KONTEXT_DEV.openapi_schema["components"]["schemas"]["Output"]
    assert kontext_output == {"type": "string", "format": "uri", "title": "Output"}
    assert build_registry(Settings(demo=True)).get("black-forest-labs/flux-kontext-dev") is FLUX_KONTEXT_DEV


def test_weights_settings() -> None:
    fields = Settings.model_fields
    assert fields["flux_dev_weights"].default == "black-forest-labs/FLUX.1-dev"
    assert fields["flux_kontext_dev_weights"].default == "black-forest-labs/FLUX.1-Kontext-dev"


def test_predictor_modules_import_without_torch() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    import fluxserve

    code = (
        "import sys\n"
        "import fluxserve.predictors.flux_dev, fluxserve.predictors.flux_kontext, fluxserve.predictors.images\n"
        "import fluxserve.predictors.flux_base, fluxserve.predictors.loading, fluxserve.predictors.go_fast.steps\n"
        "import fluxserve.catalog.registry, fluxserve.cli.main\n"
        "from fluxserve.predictors.images import sniff_image\n"
        "assert sniff_image(b'\\x89PNG\\r\\n\\x1a\\n0000') == 'png'\n"
        "loaded = {'torch', 'diffusers', 'PIL'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    src = str(Path(fluxserve.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)
