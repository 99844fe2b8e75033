"""The input catalog: validation and the Cog-style schema derived from one definition."""

from __future__ import annotations

from fluxserve.catalog.fields import validate_input
from fluxserve.catalog.flux import FLUX_SCHNELL_INPUTS
from fluxserve.catalog.openapi import cog_input_schema
from fluxserve.catalog.sizes import ASPECT_RATIOS, image_size


def test_defaults_are_filled_and_input_is_not_modified() -> None:
    raw = {"prompt": "p"}
    result = validate_input(FLUX_SCHNELL_INPUTS, raw)
    assert not result.errors
    assert result.values == {
        "prompt": "p", "aspect_ratio": "1:1", "num_outputs": 1, "num_inference_steps": 4, "seed": None,
        "output_format": "webp", "output_quality": 80, "disable_safety_checker": False, "go_fast": True,
        "megapixels": "1",
    }  # fmt: skip
    assert raw == {"prompt": "p"}


def test_lax_coercion_like_cog() -> None:
    result = validate_input(FLUX_SCHNELL_INPUTS, {"prompt": "p", "num_outputs": "2", "seed": 5.0, "megapixels": 1})
    assert not result.errors
    assert (result.values["num_outputs"], result.values["seed"], result.values["megapixels"]) == (2, 5, "1")


def test_every_problem_is_reported_with_its_field() -> None:
    result = validate_input(
        FLUX_SCHNELL_INPUTS,
        {"num_outputs": 0, "output_quality": 101, "go_fast": "yes", "output_format": "gif", "seed": "abc", "x": 1},
        strict=True,
    )
    by_field = {e.field: e.type for e in result.errors}
    assert by_field == {
        "input.prompt": "required",
        "input.num_outputs": "greater_than_or_equal",
        "input.output_quality": "less_than_or_equal",
        "input.go_fast": "invalid_type",
        "input.output_format": "enum",
        "input.seed": "invalid_type",
        "input.x": "additional_property_not_allowed",
    }
    assert validate_input(FLUX_SCHNELL_INPUTS, ["not", "an", "object"]).errors[0].field == "input"


def test_unknown_keys_are_set_aside_unless_strict() -> None:
    raw = {"prompt": "p", "negative_prompt": "blur", "size": "1024x1024"}
    result = validate_input(FLUX_SCHNELL_INPUTS, raw)
    assert not result.errors
    assert result.ignored == ["negative_prompt", "size"]
    assert "negative_prompt" not in result.values
    strict = validate_input(FLUX_SCHNELL_INPUTS, raw, strict=True)
    assert [e.field for e in strict.errors] == ["input.negative_prompt", "input.size"]
    assert strict.ignored == []


def test_booleans_are_not_integers() -> None:
    assert validate_input(FLUX_SCHNELL_INPUTS, {"prompt": "p", "num_outputs": True}).errors[0].type == "invalid_type"


def test_cog_schema_shape() -> None:
    schemas = cog_input_schema(FLUX_SCHNELL_INPUTS)
    inputs = schemas["Input"]
    assert inputs["required"] == ["prompt"]
    assert [name for name, _ in sorted(inputs["properties"].items(), key=lambda kv: kv[1]["x-order"])][:3] == [
        "prompt", "aspect_ratio", "num_outputs",
    ]  # fmt: skip
    assert inputs["properties"]["aspect_ratio"]["allOf"] == [{"$ref": "#/components/schemas/aspect_ratio"}]
    assert schemas["aspect_ratio"]["enum"] == list(ASPECT_RATIOS)
    assert inputs["properties"]["go_fast"]["default"] is True


def test_size_table() -> None:
    assert image_size("1:1") == (1024, 1024)
    assert image_size("21:9", "0.25") == (768, 320)
    assert all(w % 16 == 0 and h % 16 == 0 for w, h in ASPECT_RATIOS.values())
