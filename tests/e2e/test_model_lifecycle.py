"""The model lifecycle at real-model timings: slow loads, slow inputs, short leases, residency, failed loads.

Tiny pipelines load in a second, which hid a lease that lapsed while a real model loaded. These tests use
fixtures that take real-model time (``slow-setup``: a 10 s ``setup()``; an image URL that answers after 8 s)
with a 2 s lease, so any wait that does not keep its lease fails them.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import _require_postgres, make_server
from tests.support import (
    FLUXSERVE,
    Server,
    WorkerProcess,
    create_pg_database,
    drop_pg_database,
    run_cli,
    wait_for,
)

LIFECYCLE = '["fluxserve.predictors.fixtures:ALL", "fluxserve.predictors.fixtures:LIFECYCLE"]'
SLOW_SETUP = "fluxserve-fixtures/slow-setup"
BIG_A = "fluxserve-fixtures/big-model-a"
BIG_B = "fluxserve-fixtures/big-model-b"
SLOW_STEPS = "fluxserve-fixtures/slow-steps"
LEASE = "2"
NEVER_RETRIEVED = "never retrieved"

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    return {"FLUXSERVE_EXTRA_MODELS": LIFECYCLE, "FLUXSERVE_LEASE_SECONDS": LEASE, **extra}


@pytest.fixture
def start(tmp_path: Path, tiny_weights: Path) -> Iterator[Any]:
    """Start servers on SQLite in this test's directory; stopped at the end."""
    servers: list[Server] = []

    def make(name: str = "srv", **extra: str) -> Server:
        server = make_server(tmp_path / name, tiny_weights, None, extra_env=_env(**extra))
        servers.append(server.start())
        return server

    yield make
    for server in servers:
        server.stop()


def _create(client: httpx.Client, model: str, inputs: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/models/{model}/predictions", json={"input": inputs})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _model(client: httpx.Client, model: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/models/{model}").json()
    return body


def _eventually(check: Any, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_first_prediction_after_start_waits_for_the_preload_and_succeeds(start: Any) -> None:
    """The README's first request, sent while the model still loads for longer than the lease."""
    server = start(FLUXSERVE_PRELOAD=SLOW_SETUP)
    with server.client() as client, server.client(prefix="") as ops:
        loading = _model(client, SLOW_SETUP)
        assert loading["state"] == "loading", loading
        assert [w["state"] for w in loading["workers"]] == ["loading"]
        ready = ops.get("/ready")
        assert ready.status_code == 503 and f"Model {SLOW_SETUP} is loading on this worker" in ready.json()["detail"]
        created = _create(client, SLOW_SETUP, {"prompt": "first"})
        assert "Waiting for fluxserve-fixtures/slow-setup to load" in created["logs"]
        time.sleep(3)  # past a lease: the prediction must still be waiting, not failed
        assert client.get(f"/predictions/{created['id']}").json()["status"] == "starting"
        done = wait_for(client, created["id"], timeout=60)
        assert (done["status"], done["output"], done["error"]) == ("succeeded", "first", None)
        model = _model(client, SLOW_SETUP)
        assert model["state"] == "ready" and model["workers"][0]["state"] == "ready"
        assert model["workers"][0]["load_seconds"] >= 10
        assert ops.get("/ready").status_code == 200
    logs = server.logs()
    assert f"model {SLOW_SETUP} ready in 10." in logs
    assert NEVER_RETRIEVED not in logs


def test_a_lazy_load_longer_than_the_lease_is_logged_on_the_prediction(start: Any) -> None:
    server = start(FLUXSERVE_PRELOAD="none")
    with server.client() as client:
        created = _create(client, SLOW_SETUP, {"prompt": "lazy"})
        processing = wait_for(client, created["id"], until=lambda p: "Loading" in (p["logs"] or ""))
        assert processing["status"] == "processing"
        assert f"Loading {SLOW_SETUP} (first use)…" in processing["logs"]
        # While it loads (10 s, five leases), the model says so (the API caches worker states for a second).
        assert _eventually(lambda: _model(client, SLOW_SETUP)["workers"][0]["state"] == "loading")
        done = wait_for(client, created["id"], timeout=60)
        assert (done["status"], done["output"]) == ("succeeded", "lazy")
        assert f"Loaded {SLOW_SETUP} in 10." in done["logs"]
    assert NEVER_RETRIEVED not in server.logs()


def test_cancel_while_the_model_loads_ends_at_once_and_the_load_goes_on(start: Any) -> None:
    server = start(FLUXSERVE_PRELOAD="none")
    with server.client() as client:
        first = _create(client, SLOW_SETUP, {"prompt": "canceled"})
        wait_for(client, first["id"], until=lambda p: "Loading" in (p["logs"] or ""))
        began = time.monotonic()
        canceled = client.post(f"/predictions/{first['id']}/cancel").json()
        canceled = wait_for(client, first["id"], timeout=5)
        assert canceled["status"] == "canceled", canceled
        assert time.monotonic() - began < 3, "cancel waited for the load"
        # The load was not thrown away: the next prediction uses it.
        second = wait_for(client, _create(client, SLOW_SETUP, {"prompt": "next"})["id"], timeout=60)
        assert (second["status"], second["output"]) == ("succeeded", "next")
    logs = server.logs()
    assert NEVER_RETRIEVED not in logs
    assert logs.count(f"loading {SLOW_SETUP}") == 1


class _SlowImage(BaseHTTPRequestHandler):
    """Answers with a PNG after ``delay`` seconds, like a slow image host."""

    delay = 8.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, format="PNG")
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(buffer.tell()))
        self.end_headers()
        self.wfile.write(buffer.getvalue())

    def log_message(self, *args: Any) -> None:
        pass


def test_a_slow_image_input_longer_than_the_lease_succeeds(start: Any) -> None:
    host = ThreadingHTTPServer(("127.0.0.1", 0), _SlowImage)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        server = start(FLUXSERVE_PRELOAD="none", FLUXSERVE_ALLOW_LOOPBACK_URLS="true")
        url = f"http://127.0.0.1:{host.server_address[1]}/slow.png"
        with server.client() as client:
            created = _create(client, "fluxserve-fixtures/image-info", {"image": url})
            done = wait_for(client, created["id"], timeout=60)
        assert (done["status"], done["error"]) == ("succeeded", None)
        assert done["output"].startswith("40x30 PNG")
        assert done["metrics"]["predict_time"] >= 8
    finally:
        host.shutdown()


def test_queued_predictions_are_told_their_position(start: Any) -> None:
    server = start(FLUXSERVE_PRELOAD="none")
    with server.client() as client:
        running = _create(client, SLOW_STEPS, {"steps": 20, "step_seconds": 0.2})
        wait_for(client, running["id"], until=lambda p: p["status"] == "processing")
        queued = [_create(client, SLOW_STEPS, {"steps": 1, "step_seconds": 1.5}) for _ in range(3)]
        last = wait_for(client, queued[-1]["id"], timeout=10, until=lambda p: "Waiting in queue" in (p["logs"] or ""))
        assert "Waiting in queue: 2 predictions ahead\n" in last["logs"], last["logs"]
        first = client.get(f"/predictions/{queued[0]['id']}").json()
        assert "Waiting in queue: next in line\n" in first["logs"]
        # As the queue moves the line is written again; it stays in the logs once the prediction runs.
        done = wait_for(client, queued[-1]["id"], timeout=60)
        assert done["status"] == "succeeded"
        lines = done["logs"].splitlines()
        waiting = [line for line in lines if line.startswith("Waiting in queue")]
        # Positions are sampled every second: each move is logged once, in order, none repeated.
        assert waiting[0] == "Waiting in queue: 2 predictions ahead", done["logs"]
        assert waiting[-1] == "Waiting in queue: next in line", done["logs"]
        assert len(waiting) == len(set(waiting)) <= 3
        assert lines[len(waiting)].startswith("Using seed:")


def test_residency_swaps_two_models_on_a_budget_that_fits_one(start: Any) -> None:
    server = start(FLUXSERVE_PRELOAD=f"{BIG_A},{BIG_B}", FLUXSERVE_GPU_MEMORY_GB="1.5")
    with server.client() as client:
        deadline = time.monotonic() + 30
        while _model(client, BIG_B)["state"] != "ready" and time.monotonic() < deadline:
            time.sleep(0.2)

        def states() -> tuple[str, str]:
            return _model(client, BIG_A)["workers"][0]["state"], _model(client, BIG_B)["workers"][0]["state"]

        # B loaded second: A, least recently used, was moved to CPU RAM to make room.
        assert states() == ("offloaded", "ready")
        a = wait_for(client, _create(client, BIG_A, {"prompt": "a"})["id"], timeout=30)
        assert (a["status"], a["output"]) == ("succeeded", "a"), a
        assert f"Loading {BIG_A} (swap-in from CPU)…" in a["logs"]
        # B cannot be moved to CPU RAM: it was dropped, and loads again for its next prediction.
        assert states() == ("ready", "unloaded")
        b = wait_for(client, _create(client, BIG_B, {"prompt": "b"})["id"], timeout=30)
        assert (b["status"], b["output"]) == ("succeeded", "b"), b
        assert f"Loading {BIG_B} (first use)…" in b["logs"]
        assert states() == ("offloaded", "ready")
        # A resident model needs no swap: nothing is logged.
        again = wait_for(client, _create(client, BIG_B, {"prompt": "b2"})["id"], timeout=30)
        assert "Loading" not in again["logs"]
    logs = server.logs()
    assert f"moved {BIG_A} to CPU RAM to make room for {BIG_B}" in logs
    assert f"unloaded {BIG_B} to make room for {BIG_A}" in logs


def test_a_model_that_fails_to_load_is_reported_and_refuses_creates(start: Any) -> None:
    server = start(FLUXSERVE_PRELOAD="fluxserve-fixtures/raises-in-setup")
    ref = "fluxserve-fixtures/raises-in-setup"
    with server.client() as client:
        deadline = time.monotonic() + 15
        while _model(client, ref)["state"] != "failed" and time.monotonic() < deadline:
            time.sleep(0.2)
        model = _model(client, ref)
        assert model["state"] == "failed"
        assert "fixture weights are missing on purpose" in model["error"]
        refused = client.post(f"/models/{ref}/predictions", json={"input": {}})
        assert refused.status_code == 503
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "could not be loaded on any worker" in refused.json()["detail"]
        # The other models are unaffected.
        ok = wait_for(client, _create(client, "fluxserve-fixtures/noop", {"prompt": "hi"})["id"])
        assert ok["status"] == "succeeded"
    with server.client(prefix="") as ops:
        ready = ops.get("/ready")
    assert ready.status_code == 200, ready.text
    entry = {m["model"]: m for m in ready.json()["models"]}[ref]
    assert entry["state"] == "failed" and "missing on purpose" in entry["error"]


@pytest.fixture
def pg_url() -> Iterator[str]:
    _require_postgres()
    url, name = create_pg_database()
    yield url
    drop_pg_database(name)


def test_a_worker_process_that_loads_nothing_fails_the_queue_and_exits(
    tmp_path: Path, tiny_weights: Path, pg_url: str
) -> None:
    ref = "fluxserve-fixtures/raises-in-setup"
    api = make_server(tmp_path, tiny_weights, pg_url, extra_env=_env(FLUXSERVE_WORKER="false")).start()
    try:
        with api.client() as client:
            queued = _create(client, ref, {})
            assert "Waiting for a worker" in queued["logs"]
            args = [*FLUXSERVE, "worker", "--demo", "--data-dir", str(tmp_path), "--database-url", pg_url]
            env = {**os.environ, **_env(), "HF_HUB_OFFLINE": "1"}
            process = subprocess.run([*args, "--model", ref], env=env, capture_output=True, text=True, timeout=60)
            output = process.stdout + process.stderr
            assert process.returncode == 2, output
            assert "no model could be loaded" in output
            assert "fixture weights are missing on purpose" in output
            assert "Traceback" not in output
            failed = wait_for(client, queued["id"], timeout=10)
            assert failed["status"] == "failed"
            assert failed["error"].startswith(f"Model {ref} could not be loaded:"), failed["error"]
    finally:
        api.stop()


def test_a_worker_killed_mid_load_has_its_prediction_reaped(tmp_path: Path, tiny_weights: Path, pg_url: str) -> None:
    api = make_server(tmp_path, tiny_weights, pg_url, extra_env=_env(FLUXSERVE_WORKER="false")).start()
    worker = WorkerProcess(tmp_path, pg_url, [SLOW_SETUP], extra_env=_env(FLUXSERVE_PRELOAD="none")).start()
    try:
        with api.client() as client:
            created = _create(client, SLOW_SETUP, {"prompt": "lost"})
            wait_for(client, created["id"], until=lambda p: "Loading" in (p["logs"] or ""))
            worker.stop(signal.SIGKILL)
            began = time.monotonic()
            reaped = wait_for(client, created["id"], timeout=20)
        assert reaped["status"] == "failed"
        assert "stopped renewing its lease" in reaped["error"]
        assert time.monotonic() - began < 10
    finally:
        worker.stop()
        api.stop()


def test_operators_load_and_unload_models_with_an_admin_key_or_the_cli(start: Any) -> None:
    server = start(FLUXSERVE_PRELOAD=BIG_A)
    env = server.env()
    admin = run_cli("keys", "create", "--admin", "--name", "ops", "--data-dir", str(server.data_dir), env=env)
    admin_key = admin.stdout.strip().splitlines()[-1]
    assert "admin key" in admin.stdout
    with server.client() as client, server.client(key=admin_key) as ops:
        assert _eventually(lambda: _model(client, BIG_A)["state"] == "ready", timeout=15)
        refused = client.post(f"/admin/models/{BIG_A}/unload")
        assert refused.status_code == 403 and "admin key" in refused.json()["detail"]
        accepted = ops.post(f"/admin/models/{BIG_A}/unload")
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["action"] == "unload" and len(accepted.json()["workers"]) == 1
        assert _eventually(lambda: _model(client, BIG_A)["workers"][0]["state"] == "unloaded")
        assert ops.post("/admin/models/nobody/nothing/load").status_code == 404
        # The CLI works on the database directly (no key): load it again.
        loaded = run_cli("models", "load", BIG_A, "--data-dir", str(server.data_dir), env=env)
        assert f"to load {BIG_A}" in loaded.stdout
        assert _eventually(lambda: _model(client, BIG_A)["workers"][0]["state"] == "ready", timeout=15)
        listed = run_cli("models", "list", "--data-dir", str(server.data_dir), env=env).stdout
        assert f"{BIG_A}: ready, loaded in 1." in listed


def test_a_corrupt_weights_directory_is_a_readable_failed_state(tmp_path: Path, tiny_weights: Path, start: Any) -> None:
    """Real loading code (no --demo) on a checkout whose transformer file is truncated."""
    corrupt = tmp_path / "FLUX.1-schnell"
    shutil.copytree(tiny_weights, corrupt)
    broken = next((corrupt / "transformer").glob("*.safetensors"))
    broken.write_bytes(broken.read_bytes()[:100])
    ref = "black-forest-labs/flux-schnell"
    server = make_server(
        tmp_path / "srv",
        tiny_weights,
        None,
        demo=False,
        extra_env=_env(FLUXSERVE_PRELOAD=ref, FLUXSERVE_FLUX_SCHNELL_WEIGHTS=str(corrupt)),
    ).start()
    try:
        with server.client() as client:
            assert _eventually(lambda: _model(client, ref)["state"] == "failed", timeout=60)
            error = _model(client, ref)["error"]
            assert str(broken) in error and "FLUXSERVE_FLUX_SCHNELL_WEIGHTS" in error, error
            refused = client.post(f"/models/{ref}/predictions", json={"input": {"prompt": "x"}})
            assert refused.status_code == 503 and str(broken) in refused.json()["detail"]
        assert server.process is not None and server.process.poll() is None  # still serving
    finally:
        server.stop()
