"""FLUX.2 [klein] 4B/9B, FLUX.2 [dev] and FLUX.1 Krea [dev] through the server with the official replicate client,
on the demo's tiny random pipelines: text to image, multi-reference edits, ``match_input_image``, custom sizes, and
each model's output shape (klein and Krea: a list; FLUX.2 [dev]: one URI)."""

from __future__ import annotations

from pathlib import Path

import pytest
import replicate
from replicate.exceptions import ModelError

from fluxserve.catalog.sizes import flux2_size
from tests.e2e.test_flux_family import client_for, data_uri, fetched_size, image_file
from tests.support import Server

pytestmark = pytest.mark.slow


def test_klein_text_to_image_is_a_list_of_one_jpg_sized_by_ratio_and_megapixels(server: Server) -> None:
    output = client_for(server).run(
        "black-forest-labs/flux-2-klein-4b",
        input={"prompt": "a paper boat", "aspect_ratio": "16:9", "output_megapixels": "0.25", "seed": 7},
    )
    assert isinstance(output, list) and len(output) == 1
    assert str(output[0]).endswith(".jpg")  # klein's default format
    assert fetched_size(str(output[0])) == flux2_size("16:9", 0.25) == (688, 384)


def test_klein_multi_reference_edit_matches_the_first_image(server: Server, tmp_path: Path) -> None:
    client = client_for(server)
    uploaded = client.files.create(image_file(tmp_path / "second.png", (300, 300)))
    output = client.run(
        "black-forest-labs/flux-2-klein-9b",
        input={
            "prompt": "put the cat from the second image on the sofa of the first",
            "images": [data_uri((600, 400)), uploaded.urls["get"]],
            "aspect_ratio": "match_input_image",
            "output_megapixels": "0.25",
            "output_format": "png",
        },
    )
    assert isinstance(output, list) and str(output[0]).endswith(".png")
    assert fetched_size(str(output[0])) == flux2_size("match_input_image", 0.25, reference=(600, 400)) == (624, 416)


def test_flux_2_dev_custom_size_edit_is_one_uri(server: Server) -> None:
    prediction = client_for(server).predictions.create(
        model="black-forest-labs/flux-2-dev",
        input={
            "prompt": "the same room at night",
            "input_images": [data_uri((320, 256))],
            "aspect_ratio": "custom",
            "width": 270,  # rounded to the nearest multiple of 32
            "height": 320,
        },
    )
    prediction.wait()
    assert prediction.status == "succeeded", prediction.error
    output = prediction.output
    assert isinstance(output, str) and output.endswith("/output.webp")  # one URI, not a list
    assert fetched_size(output) == (256, 320)
    assert "Using 1 reference image" in (prediction.logs or "")


def test_krea_is_flux_dev_with_other_weights(server: Server) -> None:
    output = client_for(server).run(
        "black-forest-labs/flux-krea-dev",
        input={"prompt": "a lighthouse", "aspect_ratio": "1:1", "megapixels": "0.25", "num_inference_steps": 2},
    )
    assert isinstance(output, list) and fetched_size(str(output[0])) == (512, 512)


def test_a_too_small_reference_fails_naming_it(server: Server) -> None:
    with pytest.raises(ModelError) as info:
        client_for(server).run(
            "black-forest-labs/flux-2-klein-4b",
            input={"prompt": "x", "images": [data_uri((200, 200)), data_uri((40, 300))], "output_megapixels": "0.25"},
        )
    error = str(info.value.prediction.error)
    assert "images[1]" in error and "64" in error, error


def test_too_many_references_are_a_422_naming_the_field(server: Server) -> None:
    with pytest.raises(replicate.exceptions.ReplicateError) as info:
        client_for(server).predictions.create(
            model="black-forest-labs/flux-2-dev", input={"prompt": "x", "input_images": [data_uri((64, 64))] * 5}
        )
    assert info.value.status == 422
    assert "input_images must contain at most 4" in str(info.value.detail)
