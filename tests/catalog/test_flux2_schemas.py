"""The current open FLUX models' published facts, and the non-commercial license gate.

flux-2-dev, flux-2-klein-4b/9b and flux-krea-dev are newer than the ``all-the-public-replicate-models`` package,
so their facts are checked against Replicate's version pages as written down here (sources in
``fluxserve/catalog/flux2.py``). Unconfirmed facts are marked as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fluxserve.catalog.fields import validate_input
from fluxserve.catalog.registry import BUILTIN_MODELS, FLUX_DEV, ModelSpec
from fluxserve.catalog.sizes import flux2_size
from fluxserve.config import Settings
from fluxserve.gateway.served import build_registry
from tests.inprocess import open_inprocess

SPECS = {spec.name: spec for spec in BUILTIN_MODELS}


def _input(spec: ModelSpec) -> dict[str, Any]:
    schema: dict[str, Any] = spec.openapi_schema["components"]["schemas"]
    return schema


def _props(spec: ModelSpec) -> dict[str, Any]:
    props: dict[str, Any] = _input(spec)["Input"]["properties"]
    return props


def test_flux_2_dev_matches_its_version_page() -> None:
    """replicate.com/black-forest-labs/flux-2-dev/versions/7bba46bd…/api, field by field."""
    spec = SPECS["flux-2-dev"]
    props = _props(spec)
    assert list(props) == [
        "prompt",
        "input_images",
        "go_fast",
        "aspect_ratio",
        "width",
        "height",
        "seed",
        "output_format",
        "output_quality",
        "disable_safety_checker",
    ]
    assert [props[name]["x-order"] for name in props] == list(range(10))
    assert _input(spec)["Input"]["required"] == ["prompt"]
    assert props["input_images"]["type"] == "array" and props["input_images"]["default"] == []
    assert props["input_images"]["items"] == {"type": "string", "format": "uri"}
    assert "Maximum 4 images" in props["input_images"]["description"]
    assert props["go_fast"]["default"] is True
    assert props["aspect_ratio"]["default"] == "1:1"
    assert _input(spec)["aspect_ratio"]["enum"] == [
        "match_input_image",
        "custom",
        "1:1",
        "16:9",
        "3:2",
        "2:3",
        "4:5",
        "5:4",
        "9:16",
        "3:4",
        "4:3",
    ]
    for side in ("width", "height"):
        assert (props[side]["minimum"], props[side]["maximum"]) == (256, 1440)
        assert "default" not in props[side]
    assert props["output_format"]["default"] == "webp" and props["output_quality"]["default"] == 80
    assert spec.output_schema == {"type": "string", "format": "uri", "title": "Output"}
    assert "7bba46bdde863cfd7aaee87649a5aa49f39f368495dbea500998d1fcbb262050" in spec.version_ids


@pytest.mark.parametrize("name", ["flux-2-klein-4b", "flux-2-klein-9b"])
def test_klein_matches_its_version_page(name: str) -> None:
    """replicate.com/black-forest-labs/flux-2-klein-4b/versions/8e9c42d7…/api (9b: the same fields, unconfirmed)."""
    spec = SPECS[name]
    props = _props(spec)
    assert list(props) == [
        "prompt",
        "images",
        "aspect_ratio",
        "output_megapixels",
        "seed",
        "go_fast",
        "output_format",
        "output_quality",
        "disable_safety_checker",
    ]
    assert props["images"]["default"] == [] and "Maximum 5 images" in props["images"]["description"]
    assert props["aspect_ratio"]["default"] == "1:1" and "match_input_image" in _input(spec)["aspect_ratio"]["enum"]
    assert "custom" not in _input(spec)["aspect_ratio"]["enum"]
    # The default is on the page; the members (0.25 … 4) are not: unconfirmed.
    assert props["output_megapixels"]["default"] == "1"
    assert props["go_fast"]["default"] is False
    assert props["output_format"]["default"] == "jpg" and props["output_quality"]["default"] == 95
    assert spec.output_schema == {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}


def test_krea_takes_flux_dev_inputs() -> None:
    krea, dev = _props(SPECS["flux-krea-dev"]), _props(FLUX_DEV)
    assert list(krea) == list(dev)
    assert krea["guidance"]["default"] == dev["guidance"]["default"]
    assert "more realistic" in krea["guidance"]["description"]
    assert SPECS["flux-krea-dev"].output_schema == FLUX_DEV.output_schema


def test_reference_image_limits_are_per_model() -> None:
    """4 for flux-2-dev, 5 for klein; [] is the default (text to image), not an error."""
    uri = "https://example.com/a.png"
    dev = SPECS["flux-2-dev"].inputs
    assert not validate_input(dev, {"prompt": "p", "input_images": [uri] * 4}).errors
    too_many = validate_input(dev, {"prompt": "p", "input_images": [uri] * 5}).errors
    assert [(e.field, e.type) for e in too_many] == [("input.input_images", "too_long")]
    assert "at most 4" in too_many[0].description
    klein = SPECS["flux-2-klein-4b"].inputs
    assert not validate_input(klein, {"prompt": "p", "images": [uri] * 5}).errors
    assert validate_input(klein, {"prompt": "p", "images": [uri] * 6}).errors[0].field == "input.images"
    assert validate_input(klein, {"prompt": "p", "images": []}).values["images"] == []
    assert validate_input(klein, {"prompt": "p"}).values["images"] == []
    custom = validate_input(dev, {"prompt": "p", "aspect_ratio": "custom", "width": 1441}).errors
    assert [e.field for e in custom] == ["input.width"]


@pytest.mark.parametrize(
    ("args", "kwargs", "size"),
    [
        (("1:1",), {}, (1024, 1024)),
        (("16:9",), {}, (1360, 768)),
        (("9:16",), {}, (768, 1360)),
        (("1:1", 0.25), {}, (512, 512)),
        (("4:3", 2.0), {}, (1680, 1248)),
        (("match_input_image",), {"reference": (640, 480)}, (1184, 880)),
        (("match_input_image",), {}, (1024, 1024)),
        (("custom",), {"custom": (1000, 700), "multiple": 32}, (992, 704)),
        (("custom",), {"custom": (None, 300), "multiple": 32}, (1024, 288)),
    ],
)
def test_flux2_sizes(args: tuple[Any, ...], kwargs: dict[str, Any], size: tuple[int, int]) -> None:
    assert flux2_size(*args, **kwargs) == size


NONCOMMERCIAL = {"flux-dev", "flux-kontext-dev", "flux-krea-dev", "flux-2-dev", "flux-2-klein-9b", "flux-dev-lora"}


def test_every_model_names_its_license_and_the_gate_refuses_noncommercial_ones(tmp_path: Path) -> None:
    assert {spec.name for spec in BUILTIN_MODELS if spec.noncommercial_license} == NONCOMMERCIAL
    assert all(spec.license_url and spec.license_url.startswith("https://") for spec in BUILTIN_MODELS)
    closed = build_registry(Settings(data_dir=tmp_path))
    refused = {spec.name for spec in closed if spec.refused}
    assert refused == NONCOMMERCIAL
    text = closed.get("black-forest-labs/flux-2-dev").refused  # type: ignore[union-attr]
    assert text is not None
    assert "FLUXSERVE_ACCEPT_NONCOMMERCIAL_LICENSES=true" in text and "non-commercial use only" in text
    assert not any(spec.refused for spec in build_registry(Settings(data_dir=tmp_path, demo=True)))
    opened = build_registry(Settings(data_dir=tmp_path, accept_noncommercial_licenses=True))
    assert not any(spec.refused for spec in opened)


async def test_a_refused_model_is_listed_with_its_license_and_create_says_why(tmp_path: Path) -> None:
    """Without the operator's acceptance: 403 naming the license and the setting; the model is still listed
    (with license_url and the reason); commercial models run as before; no worker loads a refused model."""
    async with open_inprocess(tmp_path, demo=False, with_worker=False) as fs:
        refused = await fs.client.post(
            "/v1/models/black-forest-labs/flux-2-klein-9b/predictions", json={"input": {"prompt": "a boat"}}
        )
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        body = refused.json()
        assert "FLUXSERVE_ACCEPT_NONCOMMERCIAL_LICENSES" in body["detail"]
        assert "FLUX.2-klein-9B" in body["detail"]
        model = (await fs.client.get("/v1/models/black-forest-labs/flux-2-klein-9b")).json()
        assert model["license_url"].startswith("https://huggingface.co/black-forest-labs/FLUX.2-klein-9B")
        assert "non-commercial" in model["error"]
        open_model = (await fs.client.get("/v1/models/black-forest-labs/flux-2-klein-4b")).json()
        assert open_model["license_url"] == "https://www.apache.org/licenses/LICENSE-2.0"
        assert open_model["error"] is None
        accepted = await fs.client.post(
            "/v1/models/black-forest-labs/flux-2-klein-4b/predictions", json={"input": {"prompt": "a boat"}}
        )
        assert accepted.status_code == 201, accepted.text
