"""The in-process worker runs fixture predictions to their end; observed through the ASGI API only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from tests.inprocess import InProcess, open_inprocess

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
async def fs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    """One SQLite runtime with the in-process worker serving every model."""
    async with open_inprocess(tmp_path_factory.mktemp("worker")) as instance:
        yield instance


async def _create(fs: InProcess, model: str, **inputs: object) -> str:
    response = await fs.client.post(f"/v1/models/fluxserve-fixtures/{model}/predictions", json={"input": inputs})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "starting"
    return str(body["id"])


async def test_writes_image_succeeds_with_stored_outputs(fs: InProcess) -> None:
    pid = await _create(fs, "writes-image", count=2, size=16)
    body = await fs.wait_for(pid)
    assert body["status"] == "succeeded", body
    assert body["error"] is None
    outputs = body["output"]
    assert isinstance(outputs, list)
    assert len(outputs) == 2
    for url in outputs:
        assert url.startswith(f"http://test/v1/outputs/{pid}/"), url
        response = await fs.client.get(url)
        assert response.status_code == 200, response.text
        assert response.content.startswith(PNG_MAGIC)
    assert body["metrics"]["predict_time"] >= 0
    assert body["completed_at"] is not None


async def test_raising_predictor_fails_with_its_message(fs: InProcess) -> None:
    pid = await _create(fs, "raises-in-predict", message="broken on purpose 1234")
    body = await fs.wait_for(pid)
    assert body["status"] == "failed", body
    assert "broken on purpose 1234" in body["error"]
    assert "about to fail" in body["logs"]
    assert body["output"] is None


async def test_cancel_during_slow_steps_ends_canceled(fs: InProcess) -> None:
    pid = await _create(fs, "slow-steps", steps=200, step_seconds=0.05)
    running = await fs.wait_for(pid, until=lambda p: p["status"] != "starting" and "Using seed" in (p["logs"] or ""))
    assert running["status"] == "processing", running
    response = await fs.client.post(f"/v1/predictions/{pid}/cancel")
    assert response.status_code == 200, response.text
    body = await fs.wait_for(pid, seconds=10)
    assert body["status"] == "canceled", body
    assert body["output"] is None
    # It stopped well before its 200 steps (10 s) were done.
    ran = datetime.fromisoformat(body["completed_at"]) - datetime.fromisoformat(body["started_at"])
    assert ran.total_seconds() < 5, ran


async def test_worker_picks_the_next_prediction_after_a_cancel(fs: InProcess) -> None:
    pid = await _create(fs, "noop", prompt="after cancel")
    body = await fs.wait_for(pid)
    assert body["status"] == "succeeded", body
    assert body["output"] == "after cancel"
