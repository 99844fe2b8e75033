"""OpenAI's Images API through the official ``openai`` Python package (and the ``openai`` npm package), unchanged,
against a real fluxserve: generations, edits, sizes, errors in OpenAI's shape, and every call an ordinary
prediction that the Replicate API shows with the same key."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import replicate
from PIL import Image

from fluxserve.catalog.sizes import image_size
from tests.conftest import make_server
from tests.support import Server

JS_DIR = Path(__file__).parent.parent / "js"


def oa(server: Server, key: str | None = None, prefix: str = "/v1") -> openai.OpenAI:
    # No retries: a retried create would hide what the server answered (and create the predictions again).
    return openai.OpenAI(api_key=key or server.key, base_url=server.base + prefix, max_retries=0, timeout=120)


def png(size: tuple[int, int] = (96, 64), colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def decoded(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_generate_b64_two_images_at_the_nearest_size(server: Server) -> None:
    result = oa(server).images.generate(
        model="black-forest-labs/flux-schnell",
        prompt="a lighthouse at dusk",
        size="768x432",  # 16:9 at 0.33 MP: flux-schnell's 16:9 at its nearest megapixels, 0.25
        n=2,
        response_format="b64_json",
    )
    assert len(result.data) == 2 and all(d.url is None for d in result.data)
    images = [decoded(d.b64_json or "") for d in result.data]
    expected = image_size("16:9", "0.25")
    assert all(image.format == "PNG" and image.size == expected for image in images)  # OpenAI's default format
    assert result.size == f"{expected[0]}x{expected[1]}" and result.output_format == "png"
    assert images[0].tobytes() != images[1].tobytes()  # two images, two seeds


def test_generate_url_is_an_ordinary_prediction_of_the_same_key(server: Server) -> None:
    raw = oa(server).images.with_raw_response.generate(
        model="flux-schnell",  # a served model's bare name
        prompt="a red fox",
        size="512x512",
        output_format="webp",
        output_compression=60,
        user="alice",
    )
    result = raw.parse()
    url = result.data[0].url or ""
    assert url.startswith(f"{server.base}/v1/outputs/") and url.endswith(".webp")
    fetched = httpx.get(url, timeout=30)
    assert fetched.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(fetched.content)).size == (512, 512) and result.size == "512x512"
    (prediction_id,) = raw.headers["x-prediction-ids"].split(",")
    prediction = replicate.Client(api_token=server.key, base_url=server.base).predictions.get(prediction_id)
    assert prediction.status == "succeeded" and prediction.model == "black-forest-labs/flux-schnell"
    assert prediction.input["output_quality"] == 60 and prediction.input["aspect_ratio"] == "1:1"
    assert "Created through the OpenAI Images API (user: alice)" in (prediction.logs or "")
    assert prediction.metrics and prediction.metrics["predict_time"] > 0


def test_n_beyond_one_prediction_is_split(server: Server) -> None:
    # flux-2-dev makes one image per prediction and takes any size in range as custom width × height.
    raw = oa(server).images.with_raw_response.generate(
        model="black-forest-labs/flux-2-dev", prompt="two boats", size="512x384", n=2
    )
    result = raw.parse()
    assert len(result.data) == 2 and result.size == "512x384"
    assert len(raw.headers["x-prediction-ids"].split(",")) == 2


def test_the_openai_base_alias_serves_the_same_api(server: Server) -> None:
    result = oa(server, prefix="/openai/v1").images.generate(prompt="a kite", size="256x256")
    # The default model (flux-schnell): 256² is nearest its 1:1 at 0.25 MP.
    assert result.size == "512x512" and (result.data[0].url or "").startswith(f"{server.base}/v1/outputs/")
    with httpx.Client() as client:
        refused = client.post(
            f"{server.base}/replicate/v1/images/generations",
            json={"prompt": "x"},
            headers={"Authorization": f"Bearer {server.key}"},
        )
    assert refused.status_code == 404  # not under /replicate/v1


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"size": "banana"}, "size"),
        ({"size": "4096x64"}, "size"),  # 64:1 is near no aspect ratio flux-schnell makes
        ({"size": "32x32"}, "size"),
        ({"n": 9}, "n"),
        ({"output_format": "gif"}, "output_format"),
        ({"background": "transparent"}, "background"),
        ({"quality": "ultra"}, "quality"),
    ],
)
def test_bad_parameters_are_400_naming_them(server: Server, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oa(server).images.generate(prompt="x", **kwargs)
    assert info.value.status_code == 400 and info.value.param == param
    body: Any = info.value.body
    assert body["type"] == "invalid_request_error" and param in body["message"]


def test_unknown_model_and_wrong_key(server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        oa(server).images.generate(model="dall-e-3", prompt="x")
    assert missing.value.param == "model" and "flux-schnell" in missing.value.message
    with pytest.raises(openai.AuthenticationError) as auth:
        oa(server, key="r8_not-a-key").images.generate(prompt="x")
    assert auth.value.status_code == 401 and auth.value.code == "invalid_api_key"


def test_edit_one_image_and_several(server: Server) -> None:
    one = oa(server).images.edit(image=("photo.png", png((300, 200)), "image/png"), prompt="make it blue")
    # The default edit model (flux-kontext-dev) keeps the input's aspect ratio.
    width, height = (int(v) for v in (one.size or "0x0").split("x"))
    assert abs(width / height - 1.5) < 0.05
    several = oa(server).images.edit(
        model="flux-2-klein-4b",
        image=[("a.png", png(), "image/png"), ("b.png", png(colour=(20, 20, 220)), "image/png")],
        prompt="the two side by side",
        response_format="b64_json",
        size="512x512",
    )
    assert decoded(several.data[0].b64_json or "").size == (512, 512)


def test_edit_refusals(server: Server) -> None:
    client = oa(server)
    with pytest.raises(openai.BadRequestError) as two:
        client.images.edit(
            model="flux-dev", image=[("a.png", png(), "image/png"), ("b.png", png(), "image/png")], prompt="x"
        )
    assert two.value.param == "image" and "one image" in two.value.message
    with pytest.raises(openai.BadRequestError) as mask:
        client.images.edit(image=("a.png", png(), "image/png"), mask=("m.png", png(), "image/png"), prompt="x")
    assert mask.value.param == "mask"
    with pytest.raises(openai.BadRequestError) as broken:
        client.images.edit(image=("a.png", b"not an image at all", "image/png"), prompt="x")
    assert broken.value.param == "image" and "input_image" in broken.value.message
    with pytest.raises(openai.BadRequestError) as variation:
        client.images.create_variation(image=("a.png", png(), "image/png"))
    assert variation.value.code == "unsupported"


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[Server]:
    env = {"FLUXSERVE_OPENAI_TIMEOUT_SECONDS": "1"}
    server = make_server(tmp_path_factory.mktemp("openai-timeout"), tiny_weights, None, extra_env=env).start()
    yield server
    server.stop()


def test_a_call_past_the_timeout_is_504_with_the_prediction_to_poll(impatient: Server) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        # Model inputs beyond OpenAI's parameters go through as extra body (here the fixture's step count).
        oa(impatient).images.generate(
            model="fluxserve-fixtures/slow-steps", prompt="x", extra_body={"steps": 30, "step_seconds": 0.1}
        )
    assert info.value.status_code == 504 and info.value.code == "timeout"
    body: Any = info.value.body
    (prediction_id,) = body["prediction_ids"]
    client = replicate.Client(api_token=impatient.key, base_url=impatient.base)
    prediction = client.predictions.get(prediction_id)
    prediction.wait()
    assert prediction.status == "succeeded" and prediction.output == ["done 30 steps"]
    # x-should-retry: false kept the client from creating it again.
    assert len(client.predictions.list().results) == 1


def node(server: Server, scenario: str) -> dict[str, Any]:
    if shutil.which("node") is None or not (JS_DIR / "node_modules" / "openai").is_dir():
        if os.environ.get("CI"):
            pytest.fail("node and tests/js/node_modules are required in CI (scripts/test runs npm ci)")
        pytest.skip("node or the openai npm package is not installed (run: npm ci --prefix tests/js)")
    env = {**os.environ, "FLUXSERVE_BASE_URL": server.base + "/v1", "FLUXSERVE_KEY": server.key}
    done = subprocess.run(
        ["node", "openai_images.mjs", scenario], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_openai_npm_client(server: Server) -> None:
    generated = node(server, "generate")
    assert generated["size"] == "512x512" and generated["output_format"] == "png"
    assert len(generated["lengths"]) == 2 and generated["heads"] == ["PNG", "PNG"]
    edited = node(server, "edit")
    assert len(edited["urls"]) == 1 and edited["urls"][0].startswith(f"{server.base}/v1/outputs/")
    bad = node(server, "badSize")
    assert bad["raised"] and bad["status"] == 400 and bad["param"] == "size"
