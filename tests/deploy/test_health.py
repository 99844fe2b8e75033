"""The health checks of the images, compose.yaml and the Kubernetes probes, run against real fluxserve processes:
the API as its Deployment starts it (`serve --no-worker`) and a `fluxserve worker` with its metrics port. Each
check must pass while the process serves and fail once it has stopped."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.files import (
    compose,
    env_values,
    healthcheck_argv,
    named,
    run_check,
    stage_healthcheck,
    the_container,
    worker_deployments,
)
from tests.support import (
    FLUXSERVE,
    WorkerProcess,
    create_pg_database,
    drop_pg_database,
    free_port,
    postgres_available,
)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh PostgreSQL database (the processes migrate it at start)."""
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL on 127.0.0.1:5432 is required in CI and is not answering")
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is not answering")
    url, name = create_pg_database()
    yield url
    drop_pg_database(name)


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout}s:\n{log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_api_probes_and_health_checks(tmp_path: Path, database: str) -> None:
    container = the_container(named("Deployment", "fluxserve-api"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXSERVE_")}
    # The image's environment (FLUXSERVE_WORKER=false) and the Deployment's, on a free loopback port here.
    env |= {"FLUXSERVE_WORKER": "false", "HF_HUB_OFFLINE": "1", "FLUXSERVE_DATA_DIR": str(tmp_path)}
    env |= {"FLUXSERVE_DATABASE_URL": database, "FLUXSERVE_HOST": "127.0.0.1", "FLUXSERVE_PORT": str(port)}
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*FLUXSERVE, *container["args"]], env=env, stdout=out, stderr=subprocess.STDOUT)
    checks = {
        "Dockerfile (api)": stage_healthcheck("api")[1],
        "compose (api)": healthcheck_argv(compose()["services"]["api"]["healthcheck"]["test"]),
    }
    check_env = {"FLUXSERVE_PORT": str(port)}
    try:
        _wait_until_healthy(f"http://127.0.0.1:{port}/health", process, log)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container[probe]["httpGet"]["path"]
            answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
            assert answer.status_code == 200, f"{probe} {path}: {answer.status_code} {answer.text}"
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).json()["worker"] == {"enabled": False}
        for name, argv in checks.items():
            assert run_check(argv, check_env) == 0, f"{name} health check fails on a healthy API"
    finally:
        _stop(process)
    for name, argv in checks.items():
        assert run_check(argv, check_env) != 0, f"{name} health check passes with no API running"


def test_worker_probes_and_health_checks(tmp_path: Path, database: str) -> None:
    port = free_port()
    worker = WorkerProcess(
        data_dir=tmp_path,
        database_url=database,
        models=["fluxserve-fixtures/noop"],
        extra_env={"FLUXSERVE_WORKER_METRICS_PORT": str(port), "FLUXSERVE_WORKER_METRICS_HOST": "127.0.0.1"},
    )
    checks = {
        "Dockerfile (worker)": stage_healthcheck("worker")[1],
        "compose (worker)": healthcheck_argv(compose()["services"]["worker"]["healthcheck"]["test"]),
    }
    check_env = {"FLUXSERVE_WORKER_METRICS_PORT": str(port)}
    worker.start()
    try:
        for deployment in worker_deployments():
            container = the_container(deployment)
            assert env_values(container)["FLUXSERVE_WORKER_METRICS_PORT"]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                path = container[probe]["httpGet"]["path"]
                answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
                assert answer.status_code == 200, f"{probe} {path}: {answer.status_code} {answer.text}"
                assert answer.json()["status"] == "ok"
        for name, argv in checks.items():
            assert run_check(argv, check_env) == 0, f"{name} health check fails on a healthy worker"
    finally:
        worker.stop()
    for name, argv in checks.items():
        assert run_check(argv, check_env) != 0, f"{name} health check passes with no worker running"
