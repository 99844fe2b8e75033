"""``fluxserve worker --metrics-port``: a worker process without the API still exposes its metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fluxserve.metrics.listener import MetricsListener
from fluxserve.metrics.prometheus import Metrics
from tests.conftest import _require_postgres, make_server
from tests.support import Server, WorkerProcess, create_pg_database, drop_pg_database, free_port, wait_for

WRITES_IMAGE = "fluxserve-fixtures/writes-image"
RAISES = "fluxserve-fixtures/raises-in-predict"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[tuple[Server, WorkerProcess, int]]:
    """An API-only server and one worker process with a metrics port, on a PostgreSQL database of their own."""
    _require_postgres()
    url, name = create_pg_database()
    root = tmp_path_factory.mktemp("worker-metrics")
    api = make_server(root, tiny_weights, url, extra_env={"FLUXSERVE_WORKER": "false"}).start()
    port = free_port()
    worker = WorkerProcess(
        data_dir=root,
        database_url=url,
        models=[WRITES_IMAGE, RAISES],
        extra_env={"FLUXSERVE_WORKER_METRICS_PORT": str(port)},
    ).start()
    yield api, worker, port
    worker.stop()
    api.stop()
    drop_pg_database(name)


def test_worker_process_serves_its_metrics(split: tuple[Server, WorkerProcess, int]) -> None:
    api, worker, port = split
    assert f"worker metrics on http://127.0.0.1:{port}/metrics" in worker.logs()
    with api.client() as client:
        for inputs in ({"count": 2}, {"count": 1}):
            created = client.post(f"/models/{WRITES_IMAGE}/predictions", json={"input": inputs}).json()
            assert wait_for(client, created["id"])["status"] == "succeeded"
        created = client.post(f"/models/{RAISES}/predictions", json={"input": {"message": "no"}}).json()
        assert wait_for(client, created["id"])["status"] == "failed"

    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    samples = _samples(scraped.text)

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    assert value("fluxserve_predictions_finished_total", model=WRITES_IMAGE, status="succeeded") == 2
    assert value("fluxserve_predictions_finished_total", model=RAISES, status="failed") == 1
    assert value("fluxserve_images_generated_total", model=WRITES_IMAGE) == 3
    assert value("fluxserve_predict_time_seconds_count", model=WRITES_IMAGE) == 2
    predict_seconds = value("fluxserve_predict_time_seconds_sum", model=WRITES_IMAGE)
    assert predict_seconds is not None and predict_seconds > 0
    assert value("fluxserve_queue_wait_seconds_count", model=RAISES) == 1
    # Created by the API process, not the worker: each process exports only what it did itself.
    assert value("fluxserve_predictions_created_total", model=WRITES_IMAGE) is None
    with api.client(prefix="") as client:
        api_samples = _samples(client.get("/metrics").text)
    assert api_samples[("fluxserve_predictions_created_total", (("model", WRITES_IMAGE),))] == 2
    assert ("fluxserve_predictions_finished_total", (("model", WRITES_IMAGE), ("status", "succeeded"))) not in (
        api_samples
    )

    health = httpx.get(f"http://127.0.0.1:{port}/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["busy"] == 0 and body["worker"] in worker.logs()


# --- the listener itself, over a real socket ----------------------------------------------------------


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return response


async def test_listener_answers_only_get_and_head_on_its_two_paths() -> None:
    metrics = Metrics()
    metrics.prediction_finished(
        "m/x", "succeeded", created_at=_t(0), started_at=_t(1), completed_at=_t(3), image_count=4
    )
    state: dict[str, Any] = {"healthy": True}
    listener = MetricsListener(
        metrics, lambda: (state["healthy"], {"status": "ok" if state["healthy"] else "down"}), host="127.0.0.1", port=0
    )
    await listener.start()
    try:
        assert listener.port > 0 and listener.url == f"http://127.0.0.1:{listener.port}/metrics"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}") as client:
            scraped = await client.get("/metrics?name[]=x")
            assert scraped.status_code == 200
            assert 'fluxserve_images_generated_total{model="m/x"} 4.0' in scraped.text
            assert 'fluxserve_predict_time_seconds_sum{model="m/x"} 2.0' in scraped.text
            head = await client.head("/metrics")
            assert head.status_code == 200 and head.content == b""
            assert int(head.headers["content-length"]) == len(scraped.content)
            assert (await client.get("/health")).json() == {"status": "ok"}
            state["healthy"] = False
            down = await client.get("/health")
            assert (down.status_code, down.json()) == (503, {"status": "down"})
            assert (await client.get("/")).status_code == 404
            posted = await client.post("/metrics", content=b"")
            assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")
        assert (await _raw(listener.port, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        assert (await _raw(listener.port, b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    finally:
        await listener.close()


def _t(seconds: float) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
