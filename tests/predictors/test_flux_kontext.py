"""FluxKontextPredictor on a tiny random FLUX.1-Kontext-dev-shaped pipeline (CPU, no network)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fluxserve.catalog.flux import FLUX_KONTEXT_DEV_INPUTS
from fluxserve.catalog.sizes import kontext_image_size, kontext_snap
from fluxserve.predictors.base import PredictionCanceled, WeightsUnavailable
from fluxserve.predictors.flux_kontext import FluxKontextPredictor, combine_input_images
from fluxserve.predictors.images import ImageInputError
from tests.predictors.support import RecordingContext, image_bytes, output_size, validated

#: Kontext's minimum; the tests keep every run at it.
STEPS = 4


def run(predictor: FluxKontextPredictor, out: Path, **kwargs: Any) -> tuple[Path, RecordingContext]:
    """Predict with ``input_image`` / ``input_images`` given as bytes in ``kwargs``, other inputs as values."""
    out.mkdir(parents=True, exist_ok=True)
    files = {k: kwargs.pop(k) for k in ("input_image", "input_images") if k in kwargs}
    inputs = validated(
        FLUX_KONTEXT_DEV_INPUTS, {"prompt": "make it red", "num_inference_steps": STEPS, **kwargs}, **files
    )
    ctx = RecordingContext(out)
    return predictor.predict(inputs, ctx), ctx


def test_size_rules() -> None:
    # 1600x900 is 1.78: 1392x752 (1.85) is closer than 1328x800 (1.66).
    assert kontext_snap(1600, 900) == (1392, 752)
    assert kontext_snap(1000, 1000) == (1024, 1024)
    assert kontext_snap(600, 800) == (880, 1184)
    assert kontext_snap(4000, 10) == (1568, 672)
    assert kontext_image_size("match_input_image", (1600, 900)) == (1392, 752)
    assert kontext_image_size("1:1", (1600, 900)) == (1024, 1024)
    assert kontext_image_size("16:9", (10, 10)) == (1328, 800)


def test_match_input_image_snaps_to_a_kontext_resolution(kontext: FluxKontextPredictor, tmp_path: Path) -> None:
    path, ctx = run(kontext, tmp_path, input_image=image_bytes((1600, 900)), seed=11)
    assert path == tmp_path / "output.webp"  # one Path, not a list
    assert output_size(path) == (1392, 752)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["output.webp"]
    assert ctx.logs[0] == "Starting generate image"
    assert "Using seed: 11" in ctx.logs
    assert re.fullmatch(r"generate image took \d+\.\d\d seconds", ctx.logs[-1])
    assert ctx.steps == [(i, STEPS) for i in range(1, STEPS + 1)]


def test_explicit_aspect_ratio_uses_the_kontext_table(kontext: FluxKontextPredictor, tmp_path: Path) -> None:
    start = time.perf_counter()
    path, _ = run(kontext, tmp_path, input_image=image_bytes((1600, 900)), seed=11, aspect_ratio="1:1")
    assert output_size(path) == (1024, 1024)
    assert time.perf_counter() - start < 30


def test_one_image_list_is_input_image_and_seeds_are_deterministic(
    kontext: FluxKontextPredictor, tmp_path: Path
) -> None:
    image = image_bytes((800, 600), "JPEG")
    single, _ = run(kontext, tmp_path / "single", input_image=image, seed=42, output_format="png")
    listed, _ = run(kontext, tmp_path / "listed", input_images=[image], seed=42, output_format="png")
    other_seed, _ = run(kontext, tmp_path / "other", input_image=image, seed=43, output_format="png")
    assert output_size(single) == (1184, 880)
    assert single.read_bytes() == listed.read_bytes()
    assert single.read_bytes() != other_seed.read_bytes()


def test_two_images_are_combined_side_by_side(kontext: FluxKontextPredictor, tmp_path: Path) -> None:
    images = [image_bytes((800, 600), "PNG", seed=1), image_bytes((300, 300), "GIF", seed=2)]
    path, ctx = run(kontext, tmp_path, input_images=images, seed=7, output_format="jpg")
    # composite: 800x600 + 600x600 -> 1400x600 (2.33) -> snapped to 1568x672
    assert path.name == "output.jpg"
    assert output_size(path) == (1568, 672)
    assert len(ctx.steps) == STEPS


def test_combine_input_images_layout() -> None:
    red, blue = Image.new("RGB", (800, 600), "red"), Image.new("RGB", (300, 300), "blue")
    composite = combine_input_images([red, blue])
    assert composite.size == (1400, 600)
    assert composite.getpixel((10, 10)) == (255, 0, 0) and composite.getpixel((1390, 590)) == (0, 0, 255)
    assert combine_input_images([red]) is red
    # Very wide inputs lower the common height so the composite stays <= 4096 px wide.
    wide = combine_input_images([Image.new("RGB", (4000, 100)), Image.new("RGB", (100, 4000))])
    assert wide.height == 102 and wide.width <= 4096 + 2
    tall = combine_input_images([Image.new("RGB", (2000, 3000)), Image.new("RGB", (2000, 3000))])
    assert tall.size == (1366, 1024)  # common height capped at 1024


@pytest.mark.parametrize(
    ("both", "message"),
    [(False, "input_image or input_images is required"), (True, "either input_image or input_images, not both")],
)
def test_exactly_one_of_input_image_and_input_images(
    kontext: FluxKontextPredictor, tmp_path: Path, both: bool, message: str
) -> None:
    image = image_bytes((64, 64))
    given = {"input_image": image, "input_images": [image]} if both else {}
    with pytest.raises(ValueError, match=message) as info:
        run(kontext, tmp_path, seed=1, **given)
    assert "input_image" in str(info.value) and "input_images" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_bad_image_in_the_list_is_named(kontext: FluxKontextPredictor, tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match=r"^input_images\[1\]: the PNG image is damaged or truncated"):
        run(kontext, tmp_path, input_images=[image_bytes((64, 64)), image_bytes((64, 64))[:100]])


def test_cancel_within_one_step(kontext: FluxKontextPredictor, tmp_path: Path) -> None:
    inputs = validated(
        FLUX_KONTEXT_DEV_INPUTS, {"prompt": "p", "seed": 1, "aspect_ratio": "1:1"}, input_image=image_bytes((64, 64))
    )
    ctx = RecordingContext(tmp_path, cancel_after=1)
    with pytest.raises(PredictionCanceled):
        kontext.predict(inputs, ctx)
    assert ctx.steps == [(1, 28)]  # the default step count
    assert list(tmp_path.iterdir()) == []


def test_tiny_kontext_checkout_is_a_kontext_pipeline(tiny_kontext: Path) -> None:
    index = json.loads((tiny_kontext / "model_index.json").read_text())
    assert index["_class_name"] == "FluxKontextPipeline"
    transformer = json.loads((tiny_kontext / "transformer" / "config.json").read_text())
    assert transformer["guidance_embeds"] is True


def test_missing_weights_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable) as info:
        FluxKontextPredictor(str(tmp_path / "missing")).setup()
    message = str(info.value)
    for part in ("FLUXSERVE_FLUX_KONTEXT_DEV_WEIGHTS", "--demo", "gated", "black-forest-labs/FLUX.1-Kontext-dev"):
        assert part in message
