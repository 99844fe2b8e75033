"""Scale-out on the real PostgreSQL: API replicas and worker processes sharing one database.

Every test gets a fresh database, two API replicas (``serve --no-worker``) and worker processes
(``fluxserve worker``) on loopback, all sharing one data dir for output files.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import _require_postgres, make_server
from tests.support import Server, WorkerProcess, create_pg_database, drop_pg_database, restart_postgres, wait_for
from tests.webhook_receiver import WebhookReceiver

NOOP = "fluxserve-fixtures/noop"
SLOW = "fluxserve-fixtures/slow-steps"
LEASE = "1.5"


@dataclass
class Cluster:
    """API replicas and workers on one PostgreSQL database."""

    root: Path
    database_url: str
    tiny_weights: Path
    apis: list[Server] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)
    key: str = ""

    def api(self) -> Server:
        env = {"FLUXSERVE_WORKER": "false", "FLUXSERVE_LEASE_SECONDS": LEASE, "FLUXSERVE_ALLOW_LOOPBACK_URLS": "true"}
        server = make_server(self.root, self.tiny_weights, self.database_url, extra_env=env, key=self.key or None)
        self.key = server.key
        self.apis.append(server.start())
        return server

    def worker(self, *models: str) -> WorkerProcess:
        env = {
            "FLUXSERVE_LEASE_SECONDS": LEASE,
            "FLUXSERVE_SHUTDOWN_GRACE_SECONDS": "5",
            "FLUXSERVE_ALLOW_LOOPBACK_URLS": "true",
        }
        process = WorkerProcess(self.root, self.database_url, list(models), extra_env=env).start()
        self.workers.append(process)
        return process

    def stop(self) -> None:
        for process in [*self.workers, *self.apis]:
            process.stop()


@pytest.fixture
def cluster(tmp_path: Path, tiny_weights: Path) -> Iterator[Cluster]:
    _require_postgres()
    url, name = create_pg_database()
    c = Cluster(tmp_path, url, tiny_weights)
    try:
        yield c
    finally:
        c.stop()
        drop_pg_database(name)


def test_created_on_one_replica_waited_and_cancelled_on_another(cluster: Cluster) -> None:
    a, b = cluster.api(), cluster.api()
    cluster.worker()
    with a.client() as on_a, b.client() as on_b:
        # Prefer: wait on A returns the result computed by the worker process (events via NOTIFY).
        started = time.monotonic()
        done = on_a.post(f"/models/{NOOP}/predictions", json={"input": {"prompt": "hi"}}, headers={"Prefer": "wait=10"})
        assert (done.status_code, done.json()["status"], done.json()["output"]) == (201, "succeeded", "hi")
        assert time.monotonic() - started < 3
        # B sees it, with B's own URLs.
        seen = on_b.get(f"/predictions/{done.json()['id']}").json()
        assert seen["output"] == "hi" and seen["urls"]["get"].startswith(b.base)

        # Streamed through B (SSE fed by NOTIFY from the worker), cancelled through B.
        slow = on_a.post(f"/models/{SLOW}/predictions", json={"input": {"steps": 400, "step_seconds": 0.05}}).json()
        stream_url = slow["urls"]["stream"].replace(a.base, b.base)
        events: list[tuple[str, str]] = []
        canceled: dict[str, object] = {}
        started = 0.0
        with httpx.stream("GET", stream_url, timeout=30) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    events.append((event, line[6:]))
                    if event == "logs" and "3/400" in line and not canceled:
                        started = time.monotonic()
                        canceled = on_b.post(f"/predictions/{slow['id']}/cancel").json()
                    if event == "done":
                        break
        assert events[-1][0] == "done" and json.loads(events[-1][1]) == {"reason": "canceled"}
        assert any(name == "logs" and "Using seed" in data for name, data in events)
        final = wait_for(on_a, slow["id"], timeout=10)
        assert final["status"] == "canceled", final
        assert time.monotonic() - started < 2.5
        assert canceled["status"] in ("processing", "canceled")


def test_killed_worker_gives_exactly_one_terminal_state_and_webhook(cluster: Cluster) -> None:
    receiver = WebhookReceiver().start()
    api, _other_replica = cluster.api(), cluster.api()  # two reapers race for the same row
    victim = cluster.worker(SLOW)
    with api.client() as client:
        running = client.post(
            f"/models/{SLOW}/predictions",
            json={"input": {"steps": 400, "step_seconds": 0.05}, "webhook": receiver.url},
        ).json()
        wait_for(client, running["id"], until=lambda p: p["status"] == "processing")
        victim.stop(signal.SIGKILL)
        # A second worker must not pick the dead worker's prediction up again.
        cluster.worker(SLOW)
        failed = wait_for(client, running["id"], timeout=20)
        assert failed["status"] == "failed"
        assert "worker running this prediction was lost" in failed["error"]
        time.sleep(2)
        assert client.get(f"/predictions/{running['id']}").json() == failed
        after = client.post(f"/models/{SLOW}/predictions", json={"input": {"steps": 2, "step_seconds": 0.01}})
        assert wait_for(client, after.json()["id"])["status"] == "succeeded"
    receiver.wait_for(lambda r: len(receiver.completed()) >= 1)
    time.sleep(1.5)
    receiver.stop()
    completed = receiver.completed()
    assert len(completed) == 1 and completed[0].json["status"] == "failed"


def test_long_job_is_not_stolen_while_it_heartbeats(cluster: Cluster) -> None:
    api = cluster.api()
    cluster.worker(SLOW)
    cluster.worker(SLOW)
    with api.client() as client:
        # 4.5 s of work: three leases of 1.5 s.
        job = client.post(f"/models/{SLOW}/predictions", json={"input": {"steps": 45, "step_seconds": 0.1}}).json()
        done = wait_for(client, job["id"], timeout=30)
        assert done["status"] == "succeeded", done
        assert done["output"] == ["done 45 steps"]
        assert done["metrics"]["predict_time"] >= 4.5


def test_routing_by_model_and_waiting_for_a_worker(cluster: Cluster) -> None:
    api = cluster.api()
    cluster.worker(NOOP)
    with api.client() as client:
        queued = client.post(f"/models/{SLOW}/predictions", json={"input": {"steps": 2, "step_seconds": 0.01}}).json()
        assert "no running worker serves fluxserve-fixtures/slow-steps" in queued["logs"]
        model = client.get(f"/models/{SLOW}").json()
        assert (model["live_workers"], model["queued_predictions"]) == (0, 1)
        assert client.get(f"/models/{NOOP}").json()["live_workers"] == 1
        ok = client.post(f"/models/{NOOP}/predictions", json={"input": {"prompt": "x"}}, headers={"Prefer": "wait=10"})
        assert ok.json()["status"] == "succeeded"
        time.sleep(1.0)
        assert client.get(f"/predictions/{queued['id']}").json()["status"] == "starting"  # waits, not fails
        cluster.worker(SLOW)
        assert wait_for(client, queued["id"], timeout=20)["status"] == "succeeded"


def test_hundred_queued_predictions_survive_a_full_restart(cluster: Cluster) -> None:
    api = cluster.api()
    with api.client() as client:
        ids = [
            client.post(f"/models/{NOOP}/predictions", json={"input": {"prompt": str(i)}}).json()["id"]
            for i in range(100)
        ]
    cluster.stop()
    cluster.apis.clear()
    cluster.workers.clear()
    api = cluster.api()
    cluster.worker()
    cluster.worker()
    with api.client() as client:
        deadline = time.monotonic() + 60
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            page = client.get("/predictions").json()["results"]
            statuses = {p["id"]: p["status"] for p in page}
            if all(statuses.get(i) == "succeeded" for i in ids):
                break
            time.sleep(0.2)
        assert sorted(statuses) == sorted(ids)
        assert set(statuses.values()) == {"succeeded"}


@pytest.mark.serial
def test_database_restart_mid_run(cluster: Cluster) -> None:
    if shutil.which("pg_ctlcluster") is None:
        pytest.skip("pg_ctlcluster is not available to restart PostgreSQL")
    api = cluster.api()
    cluster.worker(SLOW, NOOP)
    with api.client() as client:
        job = client.post(f"/models/{SLOW}/predictions", json={"input": {"steps": 60, "step_seconds": 0.1}}).json()
        wait_for(client, job["id"], until=lambda p: p["status"] == "processing")
        restart_postgres()
        # While it comes back, requests answer quickly (503 or success), never hang.
        for _ in range(5):
            started = time.monotonic()
            try:
                code = client.get(f"/predictions/{job['id']}", timeout=8).status_code
            except httpx.TimeoutException:
                pytest.fail("the API hung while the database restarted")
            assert code in (200, 503)
            assert time.monotonic() - started < 7
        done = wait_for(client, job["id"], timeout=40)
        assert done["status"] == "succeeded", done
        # LISTEN was re-established: Prefer: wait is answered by an event, not by the timeout.
        started = time.monotonic()
        ok = client.post(f"/models/{NOOP}/predictions", json={"input": {"prompt": "z"}}, headers={"Prefer": "wait=20"})
        assert ok.json()["status"] == "succeeded"
        assert time.monotonic() - started < 4
