"""OpenAI Images API parameters mapped to each model's own inputs (sizes, counts, formats, images), no server."""

from __future__ import annotations

from typing import Any

import pytest

from fluxserve.catalog.registry import (
    BUILTIN_MODELS,
    FLUX2_DEV,
    FLUX2_KLEIN_4B,
    FLUX_DEV,
    FLUX_KONTEXT_DEV,
    FLUX_SCHNELL,
    Registry,
)
from fluxserve.service import openai_images as oi
from fluxserve.service.openai_images import OpenAIParamError

REGISTRY = Registry(BUILTIN_MODELS)


def refused(param: str, call: Any, *args: Any, **kwargs: Any) -> OpenAIParamError:
    with pytest.raises(OpenAIParamError) as info:
        call(*args, **kwargs)
    assert info.value.param == param and param in info.value.message
    return info.value


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("1024x1024", {"aspect_ratio": "1:1", "megapixels": "1"}),
        ("1792x1024", {"aspect_ratio": "16:9", "megapixels": "1"}),  # 1.75: nearer 16:9 (1.78) than 3:2
        ("1024x1792", {"aspect_ratio": "9:16", "megapixels": "1"}),
        ("512x512", {"aspect_ratio": "1:1", "megapixels": "0.25"}),
        ("640x480", {"aspect_ratio": "4:3", "megapixels": "0.25"}),  # 0.31 MP: nearer 0.25 than 1 (as a ratio)
        ("2048x2048", {"aspect_ratio": "1:1", "megapixels": "1"}),  # the most flux-schnell makes
    ],
)
def test_flux1_sizes_become_aspect_ratio_and_megapixels(size: str, expected: dict[str, Any]) -> None:
    assert oi.size_inputs(FLUX_SCHNELL, oi.parse_size(size)) == expected


def test_flux2_dev_takes_sizes_in_range_as_custom_and_others_by_ratio() -> None:
    assert oi.size_inputs(FLUX2_DEV, (800, 600)) == {"aspect_ratio": "custom", "width": 800, "height": 600}
    assert oi.size_inputs(FLUX2_DEV, (2048, 1152)) == {"aspect_ratio": "16:9"}  # past 1440: nearest ratio


def test_klein_picks_output_megapixels() -> None:
    mapped = oi.size_inputs(FLUX2_KLEIN_4B, (1024, 1024))
    assert mapped == {"aspect_ratio": "1:1", "output_megapixels": "1"}
    assert oi.size_inputs(FLUX2_KLEIN_4B, (512, 512))["output_megapixels"] == "0.25"


def test_edits_without_a_size_match_the_input_image() -> None:
    assert oi.size_inputs(FLUX_KONTEXT_DEV, None, editing=True) == {"aspect_ratio": "match_input_image"}
    assert oi.size_inputs(FLUX_DEV, None, editing=True) == {}  # img2img follows its input anyway
    assert oi.size_inputs(FLUX_SCHNELL, None) == {}


@pytest.mark.parametrize("size", ["banana", "1024", "1024x", "10x10", "5000x5000", "-5x5"])
def test_malformed_or_out_of_range_sizes(size: str) -> None:
    refused("size", oi.parse_size, size)


def test_a_ratio_near_none_is_refused_naming_the_ratios() -> None:
    error = refused("size", oi.size_inputs, FLUX_SCHNELL, (4096, 512))
    assert "21:9" in error.message


def test_auto_and_none_are_no_size() -> None:
    assert oi.parse_size("auto") is None and oi.parse_size(None) is None


def test_n_is_split_by_what_one_prediction_makes() -> None:
    assert oi.split_n(FLUX_SCHNELL, 4) == [4]
    assert oi.split_n(FLUX_KONTEXT_DEV, 3) == [1, 1, 1]
    refused("n", oi.split_n, FLUX_SCHNELL, 5)
    refused("n", oi.split_n, FLUX_SCHNELL, 0)


def test_output_formats() -> None:
    assert oi.output_inputs(FLUX_SCHNELL, None, None) == ({"output_format": "png"}, "png")
    assert oi.output_inputs(FLUX_SCHNELL, "jpeg", 70) == ({"output_format": "jpg", "output_quality": 70}, "jpeg")
    refused("output_format", oi.output_inputs, FLUX_SCHNELL, "gif", None)
    refused("output_compression", oi.output_inputs, FLUX_SCHNELL, "webp", 101)


def test_models_by_full_name_bare_name_alias_and_default() -> None:
    aliases = {"dall-e-3": "black-forest-labs/flux-dev"}
    resolve = oi.resolve_model
    assert resolve(REGISTRY, "black-forest-labs/flux-2-dev", default=None, aliases={}) is FLUX2_DEV
    assert resolve(REGISTRY, "flux-schnell", default=None, aliases={}) is FLUX_SCHNELL
    assert resolve(REGISTRY, "dall-e-3", default=None, aliases=aliases) is FLUX_DEV
    assert resolve(REGISTRY, None, default="black-forest-labs/flux-schnell", aliases={}) is FLUX_SCHNELL
    assert refused("model", resolve, REGISTRY, "gpt-image-1", default=None, aliases={}).status == 404
    refused("model", resolve, REGISTRY, None, default=None, aliases={})


def test_the_default_edit_model_prefers_kontext_and_skips_refused_models() -> None:
    assert oi.default_edit_model(REGISTRY, None) == "black-forest-labs/flux-kontext-dev"
    assert oi.default_edit_model(REGISTRY, "black-forest-labs/flux-dev") == "black-forest-labs/flux-dev"
    from fluxserve.catalog.registry import apply_license_gate

    gated = Registry(apply_license_gate(BUILTIN_MODELS, accepted=False))
    assert oi.default_edit_model(gated, None) == "black-forest-labs/flux-2-klein-4b"  # Apache-2.0


def test_images_go_to_the_models_image_inputs() -> None:
    one = oi.plan(FLUX_KONTEXT_DEV, {"prompt": "x"}, images=["u1"])
    assert one.inputs == [
        {"prompt": "x", "aspect_ratio": "match_input_image", "output_format": "png", "input_image": "u1"}
    ]
    two = oi.plan(FLUX2_KLEIN_4B, {"prompt": "x"}, images=["u1", "u2"])
    assert two.inputs[0]["images"] == ["u1", "u2"]
    assert oi.plan(FLUX_DEV, {"prompt": "x"}, images=["u1"]).inputs[0]["image"] == "u1"
    refused("image", oi.plan, FLUX_DEV, {"prompt": "x"}, images=["u1", "u2"])
    refused("image", oi.plan, FLUX2_KLEIN_4B, {"prompt": "x"}, images=["u"] * 6)
    refused("model", oi.plan, FLUX_SCHNELL, {"prompt": "x"}, images=["u1"])
    refused("mask", oi.plan, FLUX_KONTEXT_DEV, {"prompt": "x"}, images=["u1"], mask="m")


def test_model_inputs_pass_through_and_the_rest_is_noted() -> None:
    plan = oi.plan(FLUX_SCHNELL, {"prompt": "x", "seed": 7, "go_fast": False, "temperature": 0.3, "n": "2"})
    assert plan.inputs == [{"prompt": "x", "output_format": "png", "seed": 7, "go_fast": False, "num_outputs": 2}]
    assert plan.notes == ["Ignored OpenAI parameters: temperature"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": ["x"]}, "prompt"),
        ({"prompt": "x", "n": "two"}, "n"),
        ({"prompt": "x", "n": 1.5}, "n"),
        ({"prompt": "x", "model": ["a"]}, "model"),
        ({"prompt": "x", "style": "gritty"}, "style"),
        ({"prompt": "x", "stream": True}, "stream"),
        ({"prompt": "x", "response_format": "jpeg"}, "response_format"),
        ({"prompt": "x", "background": "transparent"}, "background"),
    ],
)
def test_bad_parameters_name_themselves(params: dict[str, Any], param: str) -> None:
    refused(param, oi.plan, FLUX_SCHNELL, params)
