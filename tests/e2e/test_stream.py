"""``urls.stream``: server-sent events read by the official Python client and by hand."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

import httpx
import pytest
import replicate
from PIL import Image

from tests.support import Server, wait_for

EVENT_NAMES = {"output", "logs", "error", "done"}


def client_for(server: Server, prefix: str = "") -> replicate.Client:
    return replicate.Client(api_token=server.key, base_url=server.base + prefix)


def read_events(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> list[dict[str, Any]]:
    """Every message of the stream at ``url``, as dicts (event, id, data) plus comments as {"comment": …}."""
    messages: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with httpx.stream("GET", url, headers=headers or {}, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].split(";")[0] == "text/event-stream"
        assert response.headers["cache-control"] == "no-store"
        for line in response.iter_lines():
            if line == "":
                if current:
                    messages.append(current)
                current = {}
            elif line.startswith(":"):
                messages.append({"comment": line[1:].strip()})
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    current["data"] = current["data"] + "\n" + value if "data" in current else value
                else:
                    current[name] = value
    if current:
        messages.append(current)
    return [m for m in messages if "comment" not in m]


def create(server: Server, model: str, input: dict[str, Any], prefix: str = "/v1") -> dict[str, Any]:
    with server.client(prefix=prefix) as http:
        response = http.post(f"/models/{model}/predictions", json={"input": input})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.mark.parametrize("prefix", ["", "/replicate"])
def test_replicate_stream_gives_logs_output_and_done(server: Server, prefix: str) -> None:
    client = client_for(server, prefix)
    events = list(client.stream("fluxserve-fixtures/slow-steps", input={"steps": 5, "step_seconds": 0.15}))
    kinds = [e.event.value for e in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1
    assert set(kinds) <= EVENT_NAMES
    # Logs arrive while the model runs, not in one piece at the end.
    assert kinds.count("logs") >= 3
    logs = "".join(e.data for e in events if e.event.value == "logs")
    assert logs.startswith("Using seed: 0\n")
    assert "5/5" in logs.splitlines()[-1]
    assert [str(e) for e in events if e.event.value == "output"] == ["done 5 steps"]
    assert all(e.id for e in events)
    assert events[-1].data == "{}"


def test_module_level_replicate_stream(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # replicate.stream() as the README of replicate-python shows it: configured by the environment.
    monkeypatch.setenv("REPLICATE_API_TOKEN", server.key)
    monkeypatch.setenv("REPLICATE_BASE_URL", server.base)
    monkeypatch.setattr(replicate.default_client, "_Client__client", None)  # built lazily from the env
    text = "".join(str(e) for e in replicate.stream("fluxserve-fixtures/slow-steps", input={"steps": 2}))
    assert text == "done 2 steps"


def test_prediction_stream_sends_each_image_url(server: Server) -> None:
    client = client_for(server, "/replicate")
    prediction = client.models.predictions.create(
        model="black-forest-labs/flux-schnell",
        input={"prompt": "a red fox", "megapixels": "0.25", "num_outputs": 2, "output_format": "png"},
        stream=True,
    )
    assert prediction.urls["stream"] == f"{server.base}/replicate/v1/predictions/{prediction.id}/stream"
    events = list(prediction.stream())
    outputs = [str(e) for e in events if e.event.value == "output"]
    assert [url.rsplit("/", 1)[-1] for url in outputs] == ["out-0.png", "out-1.png"]
    assert all(url.startswith(f"{server.base}/replicate/v1/outputs/{prediction.id}/") for url in outputs)
    image = Image.open(io.BytesIO(httpx.get(outputs[1], timeout=30).content))
    assert image.format == "PNG"
    assert events[-1].event.value == "done"


def test_stream_needs_no_key_and_tolerates_any_bearer(server: Server) -> None:
    body = create(server, "fluxserve-fixtures/noop", {"prompt": "hello\nworld"})
    url = body["urls"]["stream"]
    for headers in ({}, {"Authorization": "Bearer fs_not-a-key"}, {"Authorization": f"Bearer {server.key}"}):
        events = read_events(url, headers)
        assert [e["event"] for e in events] == ["output", "done"]
        # A multi-line output travels as several data: lines and arrives whole.
        assert events[0]["data"] == "hello\nworld"
        assert events[1]["data"] == "{}"
        assert all("id" in e for e in events)


def test_resume_with_last_event_id_sends_only_the_rest(server: Server) -> None:
    body = create(server, "fluxserve-fixtures/slow-steps", {"steps": 4, "step_seconds": 0.1})
    with server.client() as http:
        finished = wait_for(http, body["id"])
    url = body["urls"]["stream"]
    whole = read_events(url)
    # A terminal prediction: everything at once, then done.
    assert [e["event"] for e in whole][-2:] == ["output", "done"]
    assert "".join(e["data"] for e in whole if e["event"] == "logs") == finished["logs"]
    # Resume after a part of the logs: exactly the rest arrives.
    partial_logs = finished["logs"][:20]
    rest = read_events(url, {"Last-Event-ID": f"{len(partial_logs)}:0:0"})
    assert partial_logs + "".join(e["data"] for e in rest if e["event"] == "logs") == finished["logs"]
    # Resume after the output: only done.
    after_output = next(e["id"] for e in whole if e["event"] == "output")
    assert [e["event"] for e in read_events(url, {"Last-Event-ID": after_output})] == ["done"]
    # The query parameter works too (for EventSource, which cannot set headers on its first request).
    assert [e["event"] for e in read_events(f"{url}?last_event_id={after_output}")] == ["done"]
    # An id from elsewhere starts from the beginning.
    assert read_events(url, {"Last-Event-ID": "garbage"}) == whole


def test_failed_prediction_sends_error_then_done(server: Server) -> None:
    body = create(server, "fluxserve-fixtures/raises-in-predict", {"message": "boom on purpose"})
    events = read_events(body["urls"]["stream"])
    assert [e["event"] for e in events][-2:] == ["error", "done"]
    assert json.loads(events[-2]["data"]) == {"detail": "boom on purpose"}
    assert json.loads(events[-1]["data"]) == {"reason": "error"}
    # The official client raises the error.
    client = client_for(server)
    with pytest.raises(RuntimeError, match="boom on purpose"):
        list(client.stream("fluxserve-fixtures/raises-in-predict", input={"message": "boom on purpose"}))


def test_cancel_ends_the_stream_with_reason_canceled(server: Server) -> None:
    body = create(server, "fluxserve-fixtures/slow-steps", {"steps": 300, "step_seconds": 0.05})
    seen: list[dict[str, Any]] = []

    def cancel_after_progress() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("2/300" in e.get("data", "") for e in list(seen)):
            time.sleep(0.02)
        with server.client() as http:
            http.post(f"/predictions/{body['id']}/cancel")

    canceller = threading.Thread(target=cancel_after_progress)
    canceller.start()
    started = time.monotonic()
    current: dict[str, Any] = {}
    with httpx.stream("GET", body["urls"]["stream"], timeout=30) as response:
        for line in response.iter_lines():
            if not line:
                seen.append(current)
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = current.get(name, "") + value
    canceller.join()
    assert seen[-1]["event"] == "done"
    assert json.loads(seen[-1]["data"]) == {"reason": "canceled"}
    assert time.monotonic() - started < 15


def test_queued_prediction_canceled_before_it_starts(server: Server) -> None:
    # Occupy the worker, queue a second prediction, cancel it while it waits: done says canceled.
    busy = create(server, "fluxserve-fixtures/slow-steps", {"steps": 20, "step_seconds": 0.05})
    queued = create(server, "fluxserve-fixtures/noop", {"prompt": "never"})
    with server.client() as http:
        assert http.post(f"/predictions/{queued['id']}/cancel").json()["status"] == "canceled"
        events = read_events(queued["urls"]["stream"])
        assert [(e["event"], e["data"]) for e in events] == [("done", '{"reason":"canceled"}')]
        http.post(f"/predictions/{busy['id']}/cancel")


def test_unknown_prediction_is_a_404_problem(server: Server) -> None:
    response = httpx.get(f"{server.base}/v1/predictions/notaprediction/stream", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Not found"
