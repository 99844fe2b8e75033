"""flux-dev and flux-kontext-dev through the server with the official replicate client (tiny weights)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ModelError

from tests.predictors.test_images import png_claiming
from tests.support import Server


def image_file(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, (200, 120, 40)).save(path)
    return path


def data_uri(size: tuple[int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 60, 220)).save(buffer, format="JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def fetched_size(url: str) -> tuple[int, int]:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    return Image.open(io.BytesIO(response.content)).size


def client_for(server: Server) -> replicate.Client:
    return replicate.Client(api_token=server.key, base_url=server.base)


def test_dev_text_to_image_size_follows_the_table(server: Server) -> None:
    output = client_for(server).run(
        "black-forest-labs/flux-dev",
        input={"prompt": "a fox", "aspect_ratio": "2:3", "megapixels": "0.25", "num_inference_steps": 2},
    )
    assert isinstance(output, list) and len(output) == 1
    assert fetched_size(str(output[0])) == (416, 608)


def test_dev_img2img_from_a_local_path_is_uploaded_and_sets_the_size(server: Server, tmp_path: Path) -> None:
    photo = image_file(tmp_path / "photo.png", (1000, 700))
    output = client_for(server).run(
        "black-forest-labs/flux-dev",
        input={"prompt": "make it blue", "image": photo, "prompt_strength": 0.5, "num_inference_steps": 4},
    )
    # Scaled to fit 1440² (already does) and rounded to multiples of 16, as cog-flux does.
    assert fetched_size(str(output[0])) == (992, 704)


def test_kontext_from_a_data_uri_snaps_to_a_preferred_resolution(server: Server) -> None:
    output = client_for(server).run(
        "black-forest-labs/flux-kontext-dev",
        input={"prompt": "make it night", "input_image": data_uri((1600, 900)), "num_inference_steps": 4},
    )
    assert isinstance(output, str) and output.endswith("/output.webp")  # one URI, not a list
    assert fetched_size(output) == (1392, 752)


def test_kontext_from_an_uploaded_file_and_from_input_images(server: Server, tmp_path: Path) -> None:
    client = client_for(server)
    uploaded = client.files.create(image_file(tmp_path / "in.png", (512, 512)))
    output = client.run(
        "black-forest-labs/flux-kontext-dev",
        input={"prompt": "x", "input_image": uploaded.urls["get"], "aspect_ratio": "1:1", "num_inference_steps": 4},
    )
    assert fetched_size(str(output)) == (1024, 1024)
    both = client.run(
        "black-forest-labs/flux-kontext-dev",
        input={"prompt": "x", "input_images": [data_uri((300, 300)), uploaded.urls["get"]], "num_inference_steps": 4,
               "output_format": "png"},
    )  # fmt: skip
    assert str(both).endswith("/output.png")


def test_kontext_needs_exactly_one_kind_of_image_input(server: Server) -> None:
    with server.client() as http:
        for payload in (
            {"prompt": "x"},
            {"prompt": "x", "input_image": data_uri((8, 8)), "input_images": [data_uri((8, 8))]},
        ):
            response = http.post("/models/black-forest-labs/flux-kontext-dev/predictions", json={"input": payload})
            assert response.status_code == 422
            assert "input_image" in response.json()["detail"] and "input_images" in response.json()["detail"]


def test_decompression_bombs_fail_the_prediction_with_a_clear_error(server: Server) -> None:
    bomb = "data:image/png;base64," + base64.b64encode(png_claiming(20000, 20000)).decode()
    with pytest.raises(ModelError) as info:
        client_for(server).run("black-forest-labs/flux-kontext-dev", input={"prompt": "x", "input_image": bomb})
    assert "input_image" in str(info.value) and "pixel" in str(info.value)
