"""Operating it: /ready, /metrics and JSON logs over real HTTP; readiness failures at unit level."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fluxserve.api.ops import ready
from fluxserve.api.state import LocalWorker
from fluxserve.modelstate import Availability
from fluxserve.predictors.fixtures import ALL
from tests.conftest import make_server
from tests.support import Server, wait_for

NOOP = "fluxserve-fixtures/noop"
WRITES_IMAGE = "fluxserve-fixtures/writes-image"
RAISES = "fluxserve-fixtures/raises-in-predict"


@pytest.fixture(scope="module")
def ops_server(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[Server]:
    """A SQLite server of its own, so the metric values are exactly what these tests did."""
    srv = make_server(
        tmp_path_factory.mktemp("ops"), tiny_weights, None, extra_env={"FLUXSERVE_LOG_FORMAT": "json"}
    ).start()
    yield srv
    srv.stop()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _run(server: Server, model: str, inputs: dict[str, Any]) -> dict[str, Any]:
    with server.client() as client:
        created = client.post(f"/models/{model}/predictions", json={"input": inputs})
        assert created.status_code == 201, created.text
        return wait_for(client, created.json()["id"])


def test_ready_reports_database_worker_and_models(ops_server: Server) -> None:
    with ops_server.client(prefix="") as client:
        response = client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["database"]) == ("ready", "ok")
    assert body["worker"]["enabled"] is True and body["worker"]["alive"] is True
    models = {m["model"]: m for m in body["models"]}
    noop = models[NOOP]
    assert (noop["live_workers"], noop["served"], noop["state"]) == (1, True, "ready")
    # The test servers load lazily (FLUXSERVE_PRELOAD=none): noop waits, unloaded, for its first prediction.
    assert [w["state"] for w in noop["workers"]] == ["unloaded"]
    assert noop["workers"][0]["worker"] == body["worker"]["id"]


def test_metrics_count_predictions_images_and_http(ops_server: Server) -> None:
    assert _run(ops_server, NOOP, {"prompt": "hi"})["status"] == "succeeded"
    assert _run(ops_server, WRITES_IMAGE, {"count": 2})["status"] == "succeeded"
    failed = _run(ops_server, RAISES, {"message": "boom"})
    assert failed["status"] == "failed"
    with ops_server.client(prefix="") as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    for model in (NOOP, WRITES_IMAGE, RAISES):
        assert value("fluxserve_predictions_created_total", model=model) == 1
        assert value("fluxserve_predict_time_seconds_count", model=model) == 1
        assert value("fluxserve_queue_wait_seconds_count", model=model) == 1
        assert value("fluxserve_queue_depth", model=model) == 0
    assert value("fluxserve_predictions_finished_total", model=NOOP, status="succeeded") == 1
    assert value("fluxserve_predictions_finished_total", model=WRITES_IMAGE, status="succeeded") == 1
    assert value("fluxserve_predictions_finished_total", model=RAISES, status="failed") == 1
    assert value("fluxserve_predictions_finished_total", model=RAISES, status="succeeded") is None
    assert value("fluxserve_images_generated_total", model=WRITES_IMAGE) == 2
    assert value("fluxserve_images_generated_total", model=NOOP) is None
    # Latency by route template, never by raw path (ids would explode the label set).
    routes = {
        dict(labels)["route"] for name, labels in samples if name == "fluxserve_http_request_duration_seconds_count"
    }
    assert "/v1/predictions/{prediction_id}" in routes
    assert "/v1/models/{owner}/{name}/predictions" in routes
    assert not any(failed["id"] in route for route in routes)
    created = value(
        "fluxserve_http_request_duration_seconds_count",
        method="POST",
        route="/v1/models/{owner}/{name}/predictions",
        status="201",
    )
    assert created is not None and created >= 3


def test_json_logs_carry_the_prediction_id(ops_server: Server) -> None:
    failed = _run(ops_server, RAISES, {"message": "logged on purpose"})
    assert failed["status"] == "failed"
    lines = [line for line in ops_server.logs().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON, uvicorn's included
    assert all({"ts", "level", "logger", "message"} <= entry.keys() for entry in entries)
    mine = [e for e in entries if e.get("prediction_id") == failed["id"]]
    assert mine and "logged on purpose" in mine[0]["message"]


# --- readiness failures (unit level) ------------------------------------------------------------------


class _Store:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    async def ping(self) -> None:
        if self.error is not None:
            raise self.error


def _state(*, ping_error: Exception | None = None, worker_alive: bool | None = True) -> Any:
    async def availability(model: str) -> Availability:
        return Availability("ready", [{"worker": "w1", "state": "ready"}])

    worker = None
    if worker_alive is not None:
        worker = LocalWorker(
            id="w1", busy=0, alive=worker_alive, model_states={NOOP: {"state": "ready", "error": None}}
        )
    return SimpleNamespace(
        store=_Store(ping_error),
        service=SimpleNamespace(availability=availability),
        registry=list(ALL),
        local_worker=lambda: worker,
    )


async def _ready(state: Any) -> tuple[int, str, dict[str, Any]]:
    request: Any = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(api=state)))
    response = await ready(request)
    return response.status_code, response.media_type or "", orjson.loads(response.body)


async def test_ready_503_when_the_database_is_unreachable() -> None:
    status, media_type, body = await _ready(_state(ping_error=ConnectionRefusedError("connection refused")))
    assert (status, media_type) == (503, "application/problem+json")
    assert body["status"] == 503 and body["title"] == "Not ready"
    assert "database" in body["detail"]
    assert body["database"].startswith("unreachable")
    assert all(m["live_workers"] is None for m in body["models"])


async def test_ready_503_when_the_worker_died() -> None:
    status, _, body = await _ready(_state(worker_alive=False))
    assert status == 503
    assert body["database"] == "ok" and body["worker"]["alive"] is False
    assert "worker" in body["detail"]


async def test_ready_without_a_worker_is_ready() -> None:
    status, _, body = await _ready(_state(worker_alive=None))
    assert status == 200
    assert body["worker"] == {"enabled": False}
