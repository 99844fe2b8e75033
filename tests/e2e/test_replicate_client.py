"""The official ``replicate`` Python client (1.0.x), unchanged, against a real fluxserve."""

from __future__ import annotations

import io
import time

import httpx
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ModelError, ReplicateError

from tests.support import Server, create_key


def client_for(server: Server, key: str | None = None, prefix: str = "") -> replicate.Client:
    return replicate.Client(api_token=key or server.key, base_url=server.base + prefix)


def image_at(url: str) -> Image.Image:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    return Image.open(io.BytesIO(response.content))


@pytest.mark.parametrize("prefix", ["", "/replicate"])
def test_run_returns_image_urls(server: Server, prefix: str) -> None:
    client = client_for(server, prefix=prefix)
    output = client.run(
        "black-forest-labs/flux-schnell",
        input={"prompt": "a red fox", "aspect_ratio": "16:9", "megapixels": "0.25", "num_outputs": 2,
               "output_format": "png", "seed": 7},
    )  # fmt: skip
    assert isinstance(output, list) and len(output) == 2
    for i, url in enumerate(output):
        assert str(url).startswith(f"{server.base}{prefix}/v1/outputs/")
        assert str(url).endswith(f"/out-{i}.png")
        image = image_at(str(url))
        assert (image.format, image.size) == ("PNG", (672, 384))


def test_run_with_other_inputs(server: Server) -> None:
    client = client_for(server)
    output = client.run(
        "black-forest-labs/flux-schnell",
        input={"prompt": "a lighthouse", "aspect_ratio": "9:21", "megapixels": "0.25", "output_format": "jpg",
               "output_quality": 50, "num_inference_steps": 2},
    )  # fmt: skip
    assert len(output) == 1
    image = image_at(str(output[0]))
    assert (image.format, image.size) == ("JPEG", (320, 768))


def test_run_with_a_version_ref(server: Server) -> None:
    client = client_for(server)
    model = client.models.get("black-forest-labs/flux-schnell")
    assert model.latest_version is not None
    schema = model.latest_version.openapi_schema["components"]["schemas"]
    assert schema["Input"]["required"] == ["prompt"]
    assert schema["Input"]["properties"]["num_outputs"]["maximum"] == 4
    assert schema["Output"]["items"]["format"] == "uri"
    version = model.latest_version.id
    assert len(version) == 64
    # run("owner/name:version") posts to /v1/predictions, then GETs the version.
    output = client.run(
        f"black-forest-labs/flux-schnell:{version}", input={"prompt": "x", "megapixels": "0.25", "seed": 1}
    )
    assert len(output) == 1
    prediction = client.predictions.list().results[0]
    assert prediction.version == version


def test_create_and_wait_with_progress(server: Server) -> None:
    client = client_for(server)
    prediction = client.models.predictions.create(
        model="fluxserve-fixtures/slow-steps", input={"steps": 5, "step_seconds": 0.05}
    )
    assert prediction.status == "starting"
    prediction.wait()
    assert prediction.status == "succeeded"
    assert prediction.output == ["done 5 steps"]
    assert prediction.progress is not None
    assert (prediction.progress.current, prediction.progress.total) == (5, 5)
    assert prediction.metrics is not None and prediction.metrics["predict_time"] >= 0.25


def test_cancel_mid_run_takes_effect_within_a_step(server: Server) -> None:
    client = client_for(server)
    prediction = client.models.predictions.create(
        model="fluxserve-fixtures/slow-steps", input={"steps": 200, "step_seconds": 0.05}
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        prediction.reload()
        if prediction.status == "processing" and prediction.progress and prediction.progress.current >= 2:
            break
        time.sleep(0.05)
    assert prediction.status == "processing"
    started = time.monotonic()
    prediction.cancel()
    while prediction.status != "canceled" and time.monotonic() - started < 10:
        prediction.reload()
        time.sleep(0.02)
    assert prediction.status == "canceled"
    assert time.monotonic() - started < 2.0
    assert prediction.progress is not None and prediction.progress.current < 200
    # Cancelling a terminal prediction returns it unchanged.
    before = client.predictions.get(prediction.id)
    client.predictions.cancel(prediction.id)
    after = client.predictions.get(prediction.id)
    assert (after.status, after.completed_at, after.logs) == (before.status, before.completed_at, before.logs)


def test_list_across_pages(server: Server) -> None:
    key = create_key(server.data_dir, server.env(), name="pager")
    with server.client(key) as http:
        ids = []
        for i in range(105):
            response = http.post("/models/fluxserve-fixtures/noop/predictions", json={"input": {"prompt": str(i)}})
            assert response.status_code == 201
            ids.append(response.json()["id"])
    client = client_for(server, key)
    first = client.predictions.list()
    assert len(first.results) == 100
    assert first.next is not None and first.next.startswith(f"{server.base}/v1/predictions?")
    second = client.predictions.list(first.next)
    assert len(second.results) == 5
    assert second.next is None
    listed = [p.id for p in first.results] + [p.id for p in second.results]
    assert listed == list(reversed(ids))  # newest first, nothing lost or repeated
    every = [p.id for page in replicate.paginate(client.predictions.list) for p in page]
    assert every == listed
    # The previous link of the second page leads back to the first page.
    assert second.previous is not None
    back = client.predictions.list(second.previous)
    assert [p.id for p in back.results] == [p.id for p in first.results]


def test_unknown_key_is_401(server: Server) -> None:
    client = client_for(server, key="fs_not-a-key")
    with pytest.raises(ReplicateError) as info:
        client.predictions.list()
    assert info.value.status == 401
    assert info.value.title == "Unauthenticated"
    assert info.value.detail == "You did not pass a valid authentication token"


def test_invalid_input_is_422(server: Server) -> None:
    client = client_for(server)
    with pytest.raises(ReplicateError) as info:
        client.run("black-forest-labs/flux-schnell", input={"prompt": "x", "num_outputs": 9})
    assert info.value.status == 422
    assert info.value.detail is not None and "num_outputs" in info.value.detail
    assert "less than or equal to 4" in info.value.detail


def test_failed_prediction_raises_model_error(server: Server) -> None:
    client = client_for(server)
    with pytest.raises(ModelError) as info:
        client.run("fluxserve-fixtures/raises-in-predict", input={"message": "the GPU caught fire"})
    assert "the GPU caught fire" in str(info.value)
    assert info.value.prediction.status == "failed"


def test_other_keys_predictions_are_404(server: Server) -> None:
    other = create_key(server.data_dir, server.env(), name="other")
    mine = client_for(server).models.predictions.create(model="fluxserve-fixtures/noop", input={"prompt": "x"})
    with pytest.raises(ReplicateError) as info:
        client_for(server, other).predictions.get(mine.id)
    assert info.value.status == 404
    with pytest.raises(ReplicateError) as info:
        client_for(server, other).predictions.cancel(mine.id)
    assert info.value.status == 404
    assert mine.id not in [p.id for p in client_for(server, other).predictions.list().results]


def test_run_pinned_to_replicates_version_id(server: Server) -> None:
    # Code written against Replicate pins its published version; run() then GETs that version here too.
    replicate_version = "53d5d1586a229bd033e060941789bfb0c177cefd5ef638f34b3099658343a897"
    client = client_for(server)
    output = client.run(
        f"black-forest-labs/flux-schnell:{replicate_version}",
        input={"prompt": "x", "megapixels": "0.25", "negative_prompt": "ignored, not refused"},
    )
    assert len(output) == 1
    prediction = client.predictions.list().results[0]
    assert prediction.version == replicate_version
    assert "negative_prompt" not in prediction.input
    assert "Ignored unknown input: negative_prompt" in (prediction.logs or "")


def test_hardware_collections_and_deployments(server: Server) -> None:
    client = client_for(server)
    skus = [h.sku for h in client.hardware.list()]
    assert skus == ["cpu"]
    assert "flux" in [c.slug for c in client.collections.list()]
    flux = client.collections.get("flux")
    assert "flux-schnell" in [m.name for m in flux.models or []]
    noop_version = client.models.get("fluxserve-fixtures/noop").latest_version
    assert noop_version is not None
    deployment = client.deployments.create(
        name="echo", model="fluxserve-fixtures/noop", version=noop_version.id, hardware="cpu",
        min_instances=0, max_instances=1,
    )  # fmt: skip
    assert deployment.id.endswith("/echo") and deployment.current_release is not None
    assert deployment.current_release.number == 1
    fetched = client.deployments.get(deployment.id)
    assert fetched.current_release is not None and fetched.current_release.model == "fluxserve-fixtures/noop"
    assert [d.name for d in client.deployments.list()] == ["echo"]
    updated = client.deployments.update(deployment.owner, "echo", max_instances=3)
    assert updated.current_release is not None and updated.current_release.number == 2
    prediction = fetched.predictions.create(input={"prompt": "through a deployment"})
    prediction.wait()
    assert (prediction.status, prediction.output) == ("succeeded", "through a deployment")
    prediction = client.deployments.predictions.create(deployment.id, input={"prompt": "again"})
    prediction.wait()
    assert prediction.output == "again"
    assert client.deployments.delete(deployment.owner, "echo") is True
    with pytest.raises(ReplicateError) as caught:
        client.deployments.get(deployment.id)
    assert caught.value.status == 404
