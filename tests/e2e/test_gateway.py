"""Gateway: a fluxserve forwarding models to a second, real fluxserve (tiny weights) as its upstream.

The upstream speaks the real protocol over loopback: it is mounted at /v1 (Replicate's style) and at
/replicate/v1 (CometAPI's), so both styles of base URL are exercised, driven by the official client.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ModelError

from tests.conftest import make_server
from tests.support import Server, WorkerProcess, free_port, wait_for

UPSTREAM_TOKEN_ENV = "FLUXSERVE_TEST_UPSTREAM_TOKEN"
BAD_TOKEN = "r8_this-token-is-wrong-and-must-never-be-shown"
NOOP_SCHEMA = {
    "type": "object",
    "title": "Input",
    "properties": {"prompt": {"type": "string", "title": "Prompt", "x-order": 0, "default": ""}},
}


@dataclass
class Gateway:
    """The upstream, a rate-limited second upstream, and the gateway in front of both."""

    upstream: Server
    limited: Server
    gateway: Server
    env: dict[str, str]

    def client(self) -> replicate.Client:
        return replicate.Client(api_token=self.gateway.key, base_url=self.gateway.base)

    def upstream_predictions(self) -> list[dict[str, Any]]:
        with self.upstream.client() as up:
            results: list[dict[str, Any]] = up.get("/predictions").json()["results"]
            return results


def _models_file(root: Path, upstream: Server, limited: Server) -> Path:
    with httpx.Client(base_url=f"{upstream.base}/v1", headers={"Authorization": f"Bearer {upstream.key}"}) as up:
        noop_version = up.get("/models/fluxserve-fixtures/noop").json()["latest_version"]["id"]
    (root / "noop-schema.json").write_text(json.dumps(NOOP_SCHEMA))
    path = root / "models.toml"
    path.write_text(f"""
[providers.up]
base_url = "{upstream.base}/v1"
token_env = "{UPSTREAM_TOKEN_ENV}"

[providers.comet]
base_url = "{upstream.base}/replicate/v1/"
token_env = "{UPSTREAM_TOKEN_ENV}"
stream = false
input_files = "data_uri"

[providers.limited]
base_url = "{limited.base}/v1"
token_env = "LIMITED_TOKEN"

[providers.badkey]
base_url = "{upstream.base}/v1"
token_env = "BAD_UPSTREAM_TOKEN"

[providers.down]
base_url = "http://127.0.0.1:{free_port()}/v1"
token_env = "{UPSTREAM_TOKEN_ENV}"
timeout = 2

[models."black-forest-labs/flux-schnell"]
provider = "up"

[models."gw/slow"]
provider = "up"
upstream_model = "fluxserve-fixtures/slow-steps"

[models."gw/fails"]
provider = "up"
upstream_model = "fluxserve-fixtures/raises-in-predict"

[models."gw/image-info"]
provider = "up"
upstream_model = "fluxserve-fixtures/image-info"

[models."gw/pinned"]
provider = "up"
upstream_model = "fluxserve-fixtures/noop"
version = "{noop_version}"

[models."gw/comet-schnell"]
provider = "comet"
upstream_model = "black-forest-labs/flux-schnell"

[models."gw/comet-image-info"]
provider = "comet"
upstream_model = "fluxserve-fixtures/image-info"

[models."gw/limited"]
provider = "limited"
upstream_model = "fluxserve-fixtures/noop"

[models."gw/badkey"]
provider = "badkey"
upstream_model = "fluxserve-fixtures/noop"
input_schema = "noop-schema.json"

[models."gw/down"]
provider = "down"
upstream_model = "nobody/nothing"
""")
    return path


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway")
    upstream = make_server(root / "upstream", tiny_weights, None).start()
    limited = make_server(
        root / "limited", tiny_weights, None, extra_env={"FLUXSERVE_RATE_LIMIT_CREATE": "2/second"}
    ).start()
    env = {
        "FLUXSERVE_MODELS_FILE": str(_models_file(root, upstream, limited)),
        "FLUXSERVE_ALLOW_LOOPBACK_URLS": "1",
        UPSTREAM_TOKEN_ENV: upstream.key,
        "LIMITED_TOKEN": limited.key,
        "BAD_UPSTREAM_TOKEN": BAD_TOKEN,
    }
    gateway = make_server(root / "gateway", tiny_weights, None, demo=False, extra_env=env).start()
    yield Gateway(upstream, limited, gateway, env)
    for server in (gateway, limited, upstream):
        server.stop()


def png(size: tuple[int, int], noise: bool = False) -> bytes:
    image = Image.new("RGB", size, (10, 200, 30))
    if noise:
        rng = random.Random(3)
        image = Image.frombytes("RGB", size, bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * 3)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_run_is_forwarded_and_outputs_are_rehosted(gw: Gateway) -> None:
    before = len(gw.upstream_predictions())
    output = gw.client().run(
        "black-forest-labs/flux-schnell",
        input={"prompt": "a red fox", "megapixels": "0.25", "num_outputs": 2, "output_format": "png", "seed": 5},
    )
    assert len(output) == 2
    for i, item in enumerate(output):
        url = str(item)
        # Served by the gateway from its own storage, not by the upstream.
        assert url.startswith(f"{gw.gateway.base}/v1/outputs/") and url.endswith(f"out-{i}.png")
        image = Image.open(io.BytesIO(httpx.get(url).content))
        assert (image.format, image.size) == ("PNG", (512, 512))
    upstream = gw.upstream_predictions()
    assert len(upstream) == before + 1
    assert upstream[0]["input"]["prompt"] == "a red fox" and upstream[0]["status"] == "succeeded"
    ours = gw.client().predictions.list().results[0]
    assert ours.status == "succeeded"
    assert ours.metrics is not None and ours.metrics["image_count"] == 2
    # predict_time is the upstream's own measurement (what the provider bills).
    assert ours.metrics["predict_time"] == pytest.approx(upstream[0]["metrics"]["predict_time"])
    assert ours.logs is not None and "Using seed: 5" in ours.logs  # the upstream's logs, mirrored
    # The outputs outlive the upstream copies.
    with gw.upstream.client() as up:
        assert up.get(f"/predictions/{upstream[0]['id']}").status_code == 200


def test_schema_comes_from_upstream_and_input_is_checked_here(gw: Gateway) -> None:
    with gw.gateway.client() as client, gw.upstream.client() as up:
        ours = client.get("/models/gw/slow").json()["latest_version"]["openapi_schema"]
        theirs = up.get("/models/fluxserve-fixtures/slow-steps").json()["latest_version"]["openapi_schema"]
        assert ours == theirs
        before = len(gw.upstream_predictions())
        response = client.post("/models/gw/slow/predictions", json={"input": {"steps": 0}})
        assert response.status_code == 422
        assert response.json()["invalid_fields"][0]["field"] == "input.steps"
        assert len(gw.upstream_predictions()) == before  # nothing forwarded, nothing charged


def test_upstream_failure_is_a_readable_failed_prediction(gw: Gateway) -> None:
    with pytest.raises(ModelError) as caught:
        gw.client().run("gw/fails", input={"message": "the upstream model broke"})
    error = str(caught.value.prediction.error)
    assert "the upstream model broke" in error and "Upstream provider up" in error
    assert gw.upstream.key not in error


def test_upstream_401_names_the_provider_never_the_token(gw: Gateway) -> None:
    with pytest.raises(ModelError) as caught:
        gw.client().run("gw/badkey", input={"prompt": "x"})
    prediction = caught.value.prediction
    assert "HTTP 401" in str(prediction.error) and "BAD_UPSTREAM_TOKEN" in str(prediction.error)
    text = json.dumps(prediction.dict(), default=str)
    assert BAD_TOKEN not in text and gw.gateway.key not in text and gw.upstream.key not in text


def test_unreachable_upstream_schema_is_a_clear_503(gw: Gateway) -> None:
    with gw.gateway.client() as client:
        models = [m["name"] for m in client.get("/models").json()["results"]]
        assert "down" in models
        response = client.post("/models/gw/down/predictions", json={"input": {}})
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert "down" in detail and "could not be fetched" in detail
        assert response.headers["retry-after"] == "60"


def test_version_route_when_the_models_file_pins_a_version(gw: Gateway) -> None:
    assert gw.client().run("gw/pinned", input={"prompt": "pinned"}) == "pinned"
    upstream = gw.upstream_predictions()[0]
    assert upstream["model"] == "fluxserve-fixtures/noop" and upstream["version"] != "hidden"


def test_cancel_is_forwarded(gw: Gateway) -> None:
    client = gw.client()
    prediction = client.models.predictions.create(model="gw/slow", input={"steps": 200, "step_seconds": 0.05})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        prediction.reload()
        if prediction.logs and "/200" in prediction.logs:  # upstream progress lines, mirrored
            break
        time.sleep(0.1)
    assert prediction.logs and "/200" in prediction.logs
    prediction.cancel()
    started = time.monotonic()
    prediction.wait()
    assert prediction.status == "canceled"
    assert time.monotonic() - started < 5
    upstream = next(p for p in gw.upstream_predictions() if p["input"].get("steps") == 200)
    with gw.upstream.client() as up:
        assert wait_for(up, upstream["id"], timeout=10)["status"] == "canceled"


def test_slow_upstream_with_prefer_wait(gw: Gateway) -> None:
    client = gw.client()
    started = time.monotonic()
    prediction = client.models.predictions.create(model="gw/slow", input={"steps": 25, "step_seconds": 0.1}, wait=1)
    assert 0.9 < time.monotonic() - started < 3
    assert prediction.status in ("starting", "processing")
    prediction.wait()
    assert prediction.status == "succeeded" and prediction.output == ["done 25 steps"]


def test_cometapi_style_upstream_under_replicate_v1(gw: Gateway) -> None:
    output = gw.client().run(
        "gw/comet-schnell", input={"prompt": "a boat", "megapixels": "0.25", "output_format": "webp"}
    )
    assert str(output[0]).startswith(f"{gw.gateway.base}/v1/outputs/")
    assert Image.open(io.BytesIO(httpx.get(str(output[0])).content)).format == "WEBP"
    upstream = gw.upstream_predictions()[0]
    assert upstream["input"]["prompt"] == "a boat"
    assert f"forwarded to comet ({gw.upstream.base}/replicate/v1) as prediction {upstream['id']}" in gw.gateway.logs()


def test_file_inputs_travel_upstream(gw: Gateway) -> None:
    client = gw.client()
    small = png((64, 48))
    data_uri = "data:image/png;base64," + base64.b64encode(small).decode()
    assert client.run("gw/image-info", input={"image": data_uri}) == f"64x48 PNG {len(small)} bytes"

    large = png((400, 400), noise=True)
    assert len(large) > 256 * 1024
    with gw.upstream.client() as up:
        files_before = len(up.get("/files").json()["results"])
    # Uploaded to the gateway's Files API; the gateway uploads it to the upstream's (auto mode, > 256 KiB).
    with gw.gateway.client() as gateway:
        uploaded = gateway.post("/files", files={"content": ("big.png", large, "image/png")}).json()
    assert client.run("gw/image-info", input={"image": uploaded["urls"]["get"]}) == f"400x400 PNG {len(large)} bytes"
    with gw.upstream.client() as up:
        assert len(up.get("/files").json()["results"]) == files_before + 1
    # The CometAPI-style provider is configured to inline files: nothing is uploaded there.
    expected = f"400x400 PNG {len(large)} bytes"
    assert client.run("gw/comet-image-info", input={"image": uploaded["urls"]["get"]}) == expected
    with gw.upstream.client() as up:
        assert len(up.get("/files").json()["results"]) == files_before + 1


def test_upstream_429_is_honoured(gw: Gateway) -> None:
    client = gw.client()
    predictions = [client.models.predictions.create(model="gw/limited", input={"prompt": f"p{i}"}) for i in range(5)]
    for prediction in predictions:
        prediction.wait()
    assert [p.status for p in predictions] == ["succeeded"] * 5
    assert sorted(str(p.output) for p in predictions) == [f"p{i}" for i in range(5)]
    assert any("rate limit was reached" in (p.logs or "") for p in predictions)


def test_forwarded_predictions_do_not_wait_for_each_other(gw: Gateway) -> None:
    """The upstream runs one at a time, but the gateway forwards all of them at once (its own lane)."""
    client = gw.client()
    predictions = [
        client.models.predictions.create(model="gw/slow", input={"steps": 15, "step_seconds": 0.1, "seed": i})
        for i in range(4)
    ]
    deadline = time.monotonic() + 10
    forwarded = 0
    while time.monotonic() < deadline and forwarded < 4:
        time.sleep(0.2)
        forwarded = sum(1 for p in gw.upstream_predictions()[:4] if p["input"].get("steps") == 15)
    assert forwarded == 4
    for prediction in predictions:
        prediction.reload()
        assert prediction.status == "processing"
    for prediction in predictions:
        prediction.wait()
        assert prediction.status == "succeeded"


def test_forwarding_worker_process_on_postgres(
    gw: Gateway, tmp_path: Path, tiny_weights: Path, pg_database: str
) -> None:
    """`fluxserve worker` reads the same models file: the API replica (no worker) and a worker process share PG."""
    api = make_server(
        tmp_path / "api", tiny_weights, pg_database, demo=False, extra_env={**gw.env, "FLUXSERVE_WORKER": "false"}
    ).start()
    (tmp_path / "worker").mkdir()
    worker = WorkerProcess(tmp_path / "worker", pg_database, models=["gw/pinned"], extra_env=gw.env)
    try:
        worker.start()
        client = replicate.Client(api_token=api.key, base_url=api.base)
        assert client.run("gw/pinned", input={"prompt": "via a worker process"}) == "via a worker process"
        with api.client() as http:
            model = http.get("/models/gw/pinned").json()
            assert model["live_workers"] == 1
    finally:
        worker.stop()
        api.stop()


def test_gateway_restart_resumes_the_forwarded_prediction(gw: Gateway) -> None:
    """kill -9 of the gateway mid-prediction: after restart it follows the same upstream prediction (no second
    upstream run, no failure), keeping the logs it had."""
    client = gw.client()
    prediction = client.models.predictions.create(model="gw/slow", input={"steps": 60, "step_seconds": 0.05})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (prediction.logs and "/60" in prediction.logs):
        time.sleep(0.1)
        prediction.reload()
    gw.gateway.stop(signal.SIGKILL)
    gw.gateway.start()
    prediction.wait()
    assert prediction.status == "succeeded" and prediction.output == ["done 60 steps"]
    assert prediction.logs is not None and "it will be resumed" in prediction.logs
    assert prediction.logs.startswith("Using seed: 0\n")  # the first run's mirrored lines are kept
    assert sum(1 for p in gw.upstream_predictions() if p["input"].get("steps") == 60) == 1


def test_upstream_restart_mid_prediction(gw: Gateway) -> None:
    """Runs last in this module: it kills the upstream. The upstream's restart policy fails the prediction
    it was running; the gateway follows through the outage and reports that failure, naming the provider."""
    client = gw.client()
    prediction = client.models.predictions.create(model="gw/slow", input={"steps": 100, "step_seconds": 0.05})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (prediction.logs and "/100" in prediction.logs):
        time.sleep(0.1)
        prediction.reload()
    gw.upstream.stop(signal.SIGKILL)
    time.sleep(1.5)
    gw.upstream.start()
    prediction.wait()
    assert prediction.status == "failed"
    assert "Upstream provider up" in str(prediction.error) and "server stopped" in str(prediction.error)
    assert prediction.logs is not None and "not answering" in prediction.logs
    # And the gateway keeps working against the restarted upstream.
    assert gw.client().run("gw/pinned", input={"prompt": "after"}) == "after"
    assert os.environ.get(UPSTREAM_TOKEN_ENV) is None  # the token lived only in the gateway's environment
