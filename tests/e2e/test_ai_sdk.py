"""The Vercel AI SDK (``ai`` 7's generateImage with ``@ai-sdk/replicate`` 3), unchanged, against a real fluxserve
serving the tiny FLUX pipelines under Replicate's model names.

The provider sends ``input: {prompt, aspect_ratio, size, seed, num_outputs, image, ...providerOptions.replicate}``
to POST /models/{owner}/{name}/predictions with ``Prefer: wait``, one call per image (maxImagesPerCall is 1 for
FLUX.1 models), then downloads each output URL. ``size`` and, for flux-kontext-dev, ``num_outputs`` are fields the
models do not have: fluxserve ignores unknown input keys (and logs them), as Replicate does.
"""

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

import pytest
from PIL import Image

from tests.conftest import make_server
from tests.support import Server

JS_DIR = Path(__file__).parent.parent / "js"
SCHNELL = "/models/black-forest-labs/flux-schnell/predictions"
DEV = "/models/black-forest-labs/flux-dev/predictions"
KONTEXT = "/models/black-forest-labs/flux-kontext-dev/predictions"


@pytest.fixture(scope="module")
def ai_server(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[Server]:
    """One server (SQLite) for the module, serving flux-schnell, flux-dev and flux-kontext-dev on tiny pipelines."""
    server = make_server(tmp_path_factory.mktemp("ai-sdk"), tiny_weights, None).start()
    yield server
    server.stop()


def ai_sdk(server: Server, scenario: str, prefix: str = "/v1") -> dict[str, Any]:
    """Run one scenario of tests/js/ai_sdk.mjs; fail with the provider's error and the requests it made."""
    installed = all((JS_DIR / "node_modules" / package).is_dir() for package in ("ai", "@ai-sdk/replicate"))
    if shutil.which("node") is None or not installed:
        if os.environ.get("CI"):
            pytest.fail("node and tests/js/node_modules are required in CI (scripts/test runs npm ci)")
        pytest.skip("node or the ai / @ai-sdk/replicate npm packages are not installed (run: npm ci --prefix tests/js)")
    env = {**os.environ, "FLUXSERVE_BASE_URL": server.base + prefix, "FLUXSERVE_KEY": server.key}
    env.pop("REPLICATE_API_TOKEN", None)
    done = subprocess.run(
        ["node", "ai_sdk.mjs", scenario], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["ok"]:
        pytest.fail(
            f"generateImage failed in scenario {scenario!r} ({prefix}):\n"
            + json.dumps(result["error"], indent=2)
            + "\nrequests made:\n"
            + "\n".join(json.dumps(r) for r in result["requests"]),
            pytrace=False,
        )
    return result


def decoded(result: dict[str, Any]) -> list[tuple[str, str, tuple[int, int]]]:
    """(media type, Pillow's format, size) of each generated image; its byte count must match what node saw."""
    out = []
    for image in result["images"]:
        data = base64.b64decode(image["base64"])
        assert len(data) == image["bytes"] > 0
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            out.append((image["mediaType"], str(opened.format), opened.size))
    return out


def posts(result: dict[str, Any], server: Server, prefix: str = "/v1") -> list[dict[str, Any]]:
    """The prediction requests the provider made; every output download came from this server."""
    created = [r for r in result["requests"] if r["method"] == "POST"]
    for request in created:
        assert (request["status"], request["prefer"], request["authorized"]) == (201, "wait", True)
    downloads = [r for r in result["requests"] if r["method"] == "GET" and "/outputs/" in r["url"]]
    assert len(downloads) == len(result["images"])
    assert all(r["url"].startswith(f"{server.base}{prefix}/outputs/") and r["status"] == 200 for r in downloads)
    return created


def test_schnell_one_image_under_the_replicate_prefix(ai_server: Server) -> None:
    prefix = "/replicate/v1"
    result = ai_sdk(ai_server, "schnell", prefix)
    assert decoded(result) == [("image/png", "PNG", (512, 512))]
    [request] = posts(result, ai_server, prefix)
    assert request["url"] == f"{ai_server.base}{prefix}{SCHNELL}"
    assert request["body"] == {
        "input": {"prompt": "a red fox", "num_outputs": 1, "output_format": "png", "megapixels": "0.25"}
    }
    assert result["warnings"] == []


def test_schnell_two_images_are_two_calls(ai_server: Server) -> None:
    result = ai_sdk(ai_server, "schnellTwo")
    assert decoded(result) == [("image/webp", "WEBP", (672, 384))] * 2
    requests = posts(result, ai_server)
    assert len(requests) == 2
    for request in requests:
        assert request["body"]["input"] == {
            "prompt": "two lighthouses", "aspect_ratio": "16:9", "seed": 7, "num_outputs": 1,
            "num_inference_steps": 2, "megapixels": "0.25",
        }  # fmt: skip


def test_dev_with_a_size_the_model_does_not_take(ai_server: Server) -> None:
    result = ai_sdk(ai_server, "devSize")
    # flux-dev has no `size`: ignored, so the defaults (1:1, 1 megapixel) give 1024x1024.
    assert decoded(result) == [("image/jpeg", "JPEG", (1024, 1024))]
    [request] = posts(result, ai_server)
    assert request["url"] == f"{ai_server.base}/v1{DEV}"
    assert request["body"]["input"]["size"] == "1024x1024" and request["body"]["input"]["num_outputs"] == 1


def test_dev_with_an_aspect_ratio(ai_server: Server) -> None:
    result = ai_sdk(ai_server, "devAspect")
    assert decoded(result) == [("image/webp", "WEBP", (416, 608))]
    [request] = posts(result, ai_server)
    assert request["body"]["input"]["aspect_ratio"] == "2:3"


def test_dev_image_to_image_from_prompt_images(ai_server: Server) -> None:
    result = ai_sdk(ai_server, "devImage")
    # The output takes the input image's size (a multiple of 16 already).
    assert decoded(result) == [("image/webp", "WEBP", (512, 384))]
    [request] = posts(result, ai_server)
    assert request["body"]["input"]["image"].startswith("data:image/png;base64,")


def test_kontext_with_an_input_image_through_provider_options(ai_server: Server) -> None:
    result = ai_sdk(ai_server, "kontext")
    # match_input_image (the default) on a square image: Kontext's preferred square resolution.
    assert decoded(result) == [("image/jpeg", "JPEG", (1024, 1024))]
    [request] = posts(result, ai_server)
    assert request["url"] == f"{ai_server.base}/v1{KONTEXT}"
    sent = request["body"]["input"]
    # flux-kontext-dev has no num_outputs: the provider always sends it, fluxserve ignores it.
    assert sent["num_outputs"] == 1 and sent["input_image"].startswith("data:image/png;base64,")
    assert "aspect_ratio" not in sent and "image" not in sent
