"""Deadlines (Cancel-After), the server's run-time limit, data retention and file expiry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_server
from tests.support import Server, create_key, wait_for

SLOW = "/models/fluxserve-fixtures/slow-steps/predictions"


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_cancel_after_ends_a_running_prediction_canceled(server: Server) -> None:
    with server.client() as client:
        created = client.post(
            SLOW, json={"input": {"steps": 400, "step_seconds": 0.05}}, headers={"Cancel-After": "5s"}
        ).json()
        assert abs((_ts(created["deadline"]) - _ts(created["created_at"])).total_seconds() - 5.0) < 0.01
        done = wait_for(client, created["id"], timeout=15)
    assert done["status"] == "canceled"  # never "aborted": the official clients cannot parse it
    assert "deadline" in done["error"]
    assert done["metrics"]["predict_time"] < 6.5


@pytest.mark.parametrize("value", ["soon", "1s", "4.9", "500ms", "1000000000h", "-5s", "5x", "1h 30m"])
def test_bad_cancel_after_is_422_naming_the_header(server: Server, value: str) -> None:
    with server.client() as client:
        response = client.post(SLOW, json={"input": {}}, headers={"Cancel-After": value})
    assert response.status_code == 422, response.text
    assert response.json()["invalid_fields"][0]["field"] == "Cancel-After"


@pytest.mark.parametrize(("value", "seconds"), [("90", 90), ("5", 5), ("1h30m45s", 5445), ("1.5m", 90), ("5m", 300)])
def test_cancel_after_grammar(server: Server, value: str, seconds: float) -> None:
    with server.client() as client:
        created = client.post(SLOW, json={"input": {"steps": 1}}, headers={"Cancel-After": value}).json()
    assert (_ts(created["deadline"]) - _ts(created["created_at"])).total_seconds() == seconds


@pytest.fixture
def strict_server(tmp_path: Path, tiny_weights: Path) -> Iterator[Server]:
    env = {
        "FLUXSERVE_MAX_RUN_SECONDS": "1.5",
        "FLUXSERVE_DATA_RETENTION_SECONDS": "2",
        "FLUXSERVE_FILE_TTL_SECONDS": "2",
    }
    server = make_server(tmp_path, tiny_weights, None, extra_env=env).start()
    yield server
    server.stop()


def test_runaway_predictions_fail_at_the_run_time_limit(strict_server: Server) -> None:
    with strict_server.client() as client:
        created = client.post(SLOW, json={"input": {"steps": 100, "step_seconds": 0.05}}).json()
        done = wait_for(client, created["id"], timeout=10)
    assert done["status"] == "failed"
    assert "limit" in done["error"]


def test_retention_removes_data_and_files_but_keeps_metadata(strict_server: Server) -> None:
    with strict_server.client() as client:
        done = client.post(
            "/models/fluxserve-fixtures/writes-image/predictions", json={"input": {}}, headers={"Prefer": "wait=10"}
        ).json()
        output_url = done["output"][0]
        assert httpx.get(output_url).status_code == 200
        uploaded = client.post("/files", files={"content": ("a.txt", b"hello", "text/plain")}).json()
        removed = wait_for(client, done["id"], timeout=20, until=lambda p: p["data_removed"])
        assert removed["data_removed"] is True
        # {} and "", not null: Replicate's document types them object and string (strict clients check).
        assert (removed["input"], removed["output"], removed["logs"]) == ({}, None, "")
        assert removed["status"] == "succeeded" and removed["metrics"]["image_count"] == 1
        assert removed["created_at"] == done["created_at"] and removed["completed_at"] == done["completed_at"]
        assert httpx.get(output_url).status_code == 404
        deadline = time.monotonic() + 20
        while client.get(f"/files/{uploaded['id']}").status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get(f"/files/{uploaded['id']}").status_code == 404


def test_queued_prediction_past_its_deadline_is_canceled_without_running(tmp_path: Path, tiny_weights: Path) -> None:
    server = make_server(tmp_path, tiny_weights, None, extra_env={"FLUXSERVE_WORKER": "false"}).start()
    try:
        with server.client() as client:
            created = client.post(SLOW, json={"input": {"steps": 1}}, headers={"Cancel-After": "5s"}).json()
            done = wait_for(client, created["id"], timeout=15)
        assert done["status"] == "canceled" and "deadline" in done["error"]
        assert done.get("started_at") is None
    finally:
        server.stop()


def test_rate_limits_and_queue_cap_answer_429_with_retry_after(tmp_path: Path, tiny_weights: Path) -> None:
    env = {
        "FLUXSERVE_RATE_LIMIT_CREATE": "3/minute",
        "FLUXSERVE_RATE_LIMIT_OTHER": "5/minute",
        "FLUXSERVE_QUEUE_CAP": "2",
        "FLUXSERVE_WORKER": "false",
    }
    server = make_server(tmp_path, tiny_weights, None, extra_env=env).start()
    try:
        with server.client() as client:
            codes = [
                client.post("/models/fluxserve-fixtures/noop/predictions", json={"input": {}}).status_code
                for _ in range(3)
            ]
            # Two queue up; the third finds the queue at its cap (nothing runs: the worker is off).
            assert codes == [201, 201, 429]
            capped = client.post("/models/fluxserve-fixtures/noop/predictions", json={"input": {}})
            assert capped.status_code == 429  # now over the create limit too
            assert int(capped.headers["retry-after"]) >= 1
            assert capped.headers["content-type"] == "application/problem+json"
            assert "throttled" in capped.json()["detail"]
            statuses = [client.get("/predictions").status_code for _ in range(6)]
            assert statuses[:5] == [200] * 5 and statuses[5] == 429
        other = create_key(server.data_dir, server.env(), name="other")
        with server.client(other) as client:
            assert client.get("/predictions").status_code == 200  # limits are per key
    finally:
        server.stop()
