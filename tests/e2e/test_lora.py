"""flux-schnell-lora and flux-dev-lora end to end: LoRAs the tests make for the tiny transformer, served by a
loopback HTTP server, fetched by the worker through the SSRF guard (loopback allowed on this server) and the
on-disk cache, applied per prediction and never left behind for the next one."""

from __future__ import annotations

import hashlib
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import make_server
from tests.support import Server

pytestmark = pytest.mark.slow

MAX_LORA_BYTES = 2_000_000


class _Files(BaseHTTPRequestHandler):
    """Serves ``routes`` with an ETag, answers 304 to a matching If-None-Match, counts full downloads."""

    routes: ClassVar[dict[str, bytes]] = {}
    downloads: ClassVar[Counter[str]] = Counter()

    def do_GET(self) -> None:
        body = self.routes.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.downloads[self.path] += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _lora_bytes(tmp: Path, weights: Path, seed: int, *, hidden: int | None = None) -> bytes:
    """A peft LoRA (rank 4 on the attention projections) of the tiny transformer, or of a wider one."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    if hidden is None:
        transformer = FluxTransformer2DModel.from_pretrained(str(weights), subfolder="transformer")
    else:
        config = dict(FluxTransformer2DModel.load_config(str(weights), subfolder="transformer"))
        transformer = FluxTransformer2DModel(**{**config, "attention_head_dim": hidden, "axes_dims_rope": (8, 8, 16)})
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    torch.manual_seed(seed)
    transformer.add_adapter(config)
    out = tmp / f"lora-{seed}-{hidden}"
    FluxPipeline.save_lora_weights(
        str(out),
        transformer_lora_layers=get_peft_model_state_dict(transformer),
        transformer_lora_adapter_metadata=config.to_dict(),
    )
    return (out / "pytorch_lora_weights.safetensors").read_bytes()


def _trained_tar(tmp: Path, lora: bytes) -> bytes:
    """A .tar laid out as Replicate's FLUX trainer emits it (the LoRA under output/flux_train_replicate/)."""
    path = tmp / "trained.tar"
    inner = tmp / "lora.safetensors"
    inner.write_bytes(lora)
    with tarfile.open(path, "w") as tar:
        tar.add(inner, arcname="output/flux_train_replicate/lora.safetensors")
    return path.read_bytes()


@dataclass(frozen=True)
class Host:
    base: str

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def downloads(self, name: str) -> int:
        return _Files.downloads[f"/{name}"]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[Host]:
    tmp = tmp_path_factory.mktemp("loras")
    sdxl = tmp / "sdxl.safetensors"
    q = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    save_file({f"{q}.lora_A.weight": torch.zeros(4, 640), f"{q}.lora_B.weight": torch.zeros(640, 4)}, sdxl)
    a = _lora_bytes(tmp, tiny_weights, 1)
    _Files.routes = {
        "/a.safetensors": a,
        "/again/a.safetensors": a,  # the same file under another URL
        "/b.safetensors": _lora_bytes(tmp, tiny_weights, 2),
        "/c.safetensors": _lora_bytes(tmp, tiny_weights, 3),
        "/trained.tar": _trained_tar(tmp, _lora_bytes(tmp, tiny_weights, 4)),
        "/wide.safetensors": _lora_bytes(tmp, tiny_weights, 5, hidden=32),
        "/sdxl.safetensors": sdxl.read_bytes(),
        "/text.safetensors": b"this is not a safetensors file at all\n" * 10,
        "/huge.safetensors": b"\0" * (MAX_LORA_BYTES + 1),
    }
    _Files.downloads.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield Host(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[Server]:
    env = {"FLUXSERVE_ALLOW_LOOPBACK_URLS": "true", "FLUXSERVE_MAX_LORA_BYTES": str(MAX_LORA_BYTES)}
    server = make_server(tmp_path_factory.mktemp("lora-server"), tiny_weights, None, extra_env=env).start()
    yield server
    server.stop()


def run(server: Server, model: str, **inputs: Any) -> dict[str, Any]:
    """Run one prediction to the end (Prefer: wait, then poll) and return it with its first output's bytes."""
    body = {"input": {"prompt": "a red fox in the snow", "seed": 11, "output_format": "png", **inputs}}
    with server.client() as client:
        created = client.post(f"/models/black-forest-labs/{model}/predictions", json=body)
        assert created.status_code == 201, created.text
        prediction = created.json()
        while prediction["status"] not in ("succeeded", "failed", "canceled"):
            prediction = client.get(f"/predictions/{prediction['id']}", params={"wait": 5}).json()
        if prediction["status"] == "succeeded":
            output = prediction["output"]
            prediction["bytes"] = httpx.get(output[0] if isinstance(output, list) else output, timeout=30).content
    return prediction


def test_a_lora_changes_the_image_is_cached_and_never_leaks_into_the_next_prediction(
    lora_server: Server, host: Host
) -> None:
    base = run(lora_server, "flux-schnell-lora")
    first = run(lora_server, "flux-schnell-lora", lora_weights=host.url("a.safetensors"))
    second = run(lora_server, "flux-schnell-lora", lora_weights=host.url("a.safetensors"))
    after = run(lora_server, "flux-schnell-lora")
    for p in (base, first, second, after):
        assert p["status"] == "succeeded", p["error"]
    assert first["bytes"] != base["bytes"]
    assert second["bytes"] == first["bytes"]  # same LoRA, same seed: same image
    assert after["bytes"] == base["bytes"]  # nothing of the LoRA is left behind
    assert host.downloads("a.safetensors") == 1  # the second run revalidated (304) instead of downloading
    assert "Downloaded LoRA" in first["logs"] and "Loaded LoRA" in first["logs"]
    assert "LoRA from cache" in second["logs"] and "already loaded" in second["logs"]
    assert "LoRA" not in after["logs"]
    # The same bytes under another URL are downloaded once more, but the adapter is the resident one.
    again = run(lora_server, "flux-schnell-lora", lora_weights=host.url("again/a.safetensors"))
    assert again["bytes"] == first["bytes"] and "already loaded" in again["logs"]


def test_scale_zero_is_the_base_image_and_a_trained_tar_works(lora_server: Server, host: Host) -> None:
    base = run(lora_server, "flux-schnell-lora")
    zero = run(lora_server, "flux-schnell-lora", lora_weights=host.url("b.safetensors"), lora_scale=0)
    tar = run(lora_server, "flux-schnell-lora", lora_weights=host.url("trained.tar"))
    assert zero["status"] == tar["status"] == "succeeded", (zero["error"], tar["error"])
    assert zero["bytes"] == base["bytes"]
    assert tar["bytes"] != base["bytes"]


def test_dev_lora_takes_two_loras_with_scales(lora_server: Server, host: Host) -> None:
    common = {"num_inference_steps": 2, "megapixels": "0.25"}
    base = run(lora_server, "flux-dev-lora", **common)
    one = run(lora_server, "flux-dev-lora", lora_weights=host.url("b.safetensors"), **common)
    two = run(
        lora_server,
        "flux-dev-lora",
        lora_weights=host.url("b.safetensors"),
        extra_lora=host.url("c.safetensors"),
        extra_lora_scale=0.7,
        **common,
    )
    other_scale = run(
        lora_server,
        "flux-dev-lora",
        lora_weights=host.url("b.safetensors"),
        extra_lora=host.url("c.safetensors"),
        extra_lora_scale=-0.5,
        **common,
    )
    for p in (base, one, two, other_scale):
        assert p["status"] == "succeeded", p["error"]
    assert len({base["bytes"], one["bytes"], two["bytes"], other_scale["bytes"]}) == 4
    assert run(lora_server, "flux-dev-lora", **common)["bytes"] == base["bytes"]


@pytest.mark.parametrize(
    ("name", "field", "words"),
    [
        ("text.safetensors", "lora_weights", "not a safetensors"),
        ("sdxl.safetensors", "lora_weights", "SDXL"),
        ("wide.safetensors", "lora_weights", "does not fit"),
        ("missing.safetensors", "lora_weights", "404"),
        ("huge.safetensors", "lora_weights", "limit"),
        ("text.safetensors", "extra_lora", "not a safetensors"),
    ],
)
def test_a_bad_lora_fails_the_prediction_naming_the_input(
    lora_server: Server, host: Host, name: str, field: str, words: str
) -> None:
    inputs: dict[str, Any] = {field: host.url(name), "num_inference_steps": 2, "megapixels": "0.25"}
    if field == "extra_lora":
        inputs["lora_weights"] = host.url("b.safetensors")
    failed = run(lora_server, "flux-dev-lora", **inputs)
    assert failed["status"] == "failed"
    assert failed["error"].startswith(f"{field}:"), failed["error"]
    assert words.lower() in failed["error"].lower(), failed["error"]
    # The model is fine afterwards: a plain prediction still runs.
    assert run(lora_server, "flux-dev-lora", num_inference_steps=2, megapixels="0.25")["status"] == "succeeded"


def test_what_can_be_checked_at_create_time_is_a_422_naming_the_field(lora_server: Server, host: Host) -> None:
    with lora_server.client() as client:
        for inputs, field in [
            ({"lora_weights": "ftp://example.com/x.safetensors"}, "lora_weights"),
            ({"lora_weights": "not a reference"}, "lora_weights"),
            ({"lora_weights": host.url("a.safetensors"), "extra_lora": host.url("a.safetensors")}, "extra_lora"),
            ({"lora_scale": 5}, "lora_scale"),
        ]:
            response = client.post(
                "/models/black-forest-labs/flux-dev-lora/predictions", json={"input": {"prompt": "x", **inputs}}
            )
            assert response.status_code == 422, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            assert field in response.text
