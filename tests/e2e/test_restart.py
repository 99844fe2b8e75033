"""Restarts: stored predictions survive, queued ones run, ones a dead process left running are failed."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, _require_postgres, make_server
from tests.support import create_pg_database, drop_pg_database, wait_for


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (SQLite in the data dir) or a fresh PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield None
        return
    _require_postgres()
    url, name = create_pg_database()
    yield url
    drop_pg_database(name)


def test_restart_keeps_predictions_and_runs_queued_ones(
    tmp_path: Path, tiny_weights: Path, database_url: str | None
) -> None:
    server = make_server(tmp_path, tiny_weights, database_url).start()
    try:
        with server.client() as client:
            done = client.post(
                "/models/fluxserve-fixtures/writes-image/predictions", json={"input": {}}, headers={"Prefer": "wait"}
            ).json()
            assert done["status"] == "succeeded"
    finally:
        server.stop()

    server.extra_env["FLUXSERVE_WORKER"] = "false"
    server.start()
    try:
        with server.client() as client:
            again = client.get(f"/predictions/{done['id']}").json()
            assert again == done
            queued = [
                client.post("/models/fluxserve-fixtures/noop/predictions", json={"input": {"prompt": str(i)}}).json()
                for i in range(3)
            ]
            time.sleep(0.5)
            assert all(client.get(f"/predictions/{p['id']}").json()["status"] == "starting" for p in queued)
    finally:
        server.stop()

    server.extra_env.pop("FLUXSERVE_WORKER")
    server.start()
    try:
        with server.client() as client:
            for i, p in enumerate(queued):
                finished = wait_for(client, p["id"], timeout=30)
                assert (finished["status"], finished["output"]) == ("succeeded", str(i))
            # The output file of the first run is still served.
            import httpx

            assert httpx.get(done["output"][0]).status_code == 200
    finally:
        server.stop()


def test_prediction_running_when_the_process_died_is_failed(
    tmp_path: Path, tiny_weights: Path, database_url: str | None
) -> None:
    # A short lease so that, on PostgreSQL (where several processes may share the database and
    # start-up recovery cannot tell a dead worker from a live one), the reaper acts quickly.
    server = make_server(tmp_path, tiny_weights, database_url, extra_env={"FLUXSERVE_LEASE_SECONDS": "2"}).start()
    with server.client() as client:
        running = client.post(
            "/models/fluxserve-fixtures/slow-steps/predictions", json={"input": {"steps": 400, "step_seconds": 0.05}}
        ).json()
        assert wait_for(client, running["id"], until=lambda p: p["status"] == "processing")["status"] == "processing"
    server.stop(signal.SIGKILL)

    server.start()
    try:
        with server.client() as client:
            failed = wait_for(client, running["id"], timeout=30)
            assert failed["status"] == "failed"
            if database_url is None:
                assert "server stopped while this prediction was running" in failed["error"]
            else:
                assert "worker running this prediction was lost" in failed["error"]
            assert failed["completed_at"]
            # The server still works afterwards.
            ok = client.post(
                "/models/fluxserve-fixtures/noop/predictions",
                json={"input": {"prompt": "after"}},
                headers={"Prefer": "wait"},
            ).json()
            assert ok["status"] == "succeeded"
    finally:
        server.stop()


def test_missing_weights_fail_the_prediction_with_instructions(tmp_path: Path, tiny_weights: Path) -> None:
    server = make_server(
        tmp_path,
        tiny_weights,
        None,
        demo=False,
        extra_env={"FLUXSERVE_FLUX_SCHNELL_WEIGHTS": str(tmp_path / "no-such-weights")},
    ).start()
    try:
        with server.client() as client:
            started = time.monotonic()
            body = client.post(
                "/models/black-forest-labs/flux-schnell/predictions",
                json={"input": {"prompt": "x"}},
                headers={"Prefer": "wait=50"},
            ).json()
            assert time.monotonic() - started < 45
            assert body["status"] == "failed"
            assert "--demo" in body["error"] and "FLUXSERVE_FLUX_SCHNELL_WEIGHTS" in body["error"]
            # The server is still up and other models still run.
            ok = client.post(
                "/models/fluxserve-fixtures/noop/predictions",
                json={"input": {"prompt": "y"}},
                headers={"Prefer": "wait"},
            ).json()
            assert ok["status"] == "succeeded"
    finally:
        server.stop()
