"""An install without the ``models`` extra: the API runs, a worker for local FLUX models says what to install."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fluxserve.catalog.registry import FLUX_SCHNELL
from fluxserve.modelstack import INSTALL_HINT, MODEL_PACKAGES, missing_packages, model_stack_problem
from fluxserve.predictors.fixtures import NOOP
from tests.support import create_key, free_port

# Runs the CLI in a process where the model stack cannot be found, as on an API-only install.
WITHOUT_MODEL_STACK = f"""
import importlib.abc, sys
class NoModelStack(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {MODEL_PACKAGES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None
sys.meta_path.insert(0, NoModelStack())
from fluxserve.cli.main import main
sys.argv = ["fluxserve", *sys.argv[1:]]
main()
"""


def cli_without_model_stack(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "FLUXSERVE_DATA_DIR": str(tmp_path), "FLUXSERVE_LOG_LEVEL": "warning", **(env or {})}
    env.pop("FLUXSERVE_DATABASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-c", WITHOUT_MODEL_STACK, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_worker_without_the_model_stack_exits_saying_what_to_install(tmp_path: Path) -> None:
    for args in (["worker"], ["worker", "--model", "black-forest-labs/flux-schnell"], ["serve", "--demo"]):
        process = cli_without_model_stack(tmp_path, *args)
        _out, err = process.communicate(timeout=60)
        assert process.returncode == 2, err
        assert INSTALL_HINT in err and "torch" in err and "flux-schnell" in err
        assert "Traceback" not in err


def test_an_api_replica_runs_without_the_model_stack(tmp_path: Path) -> None:
    port = free_port()
    process = cli_without_model_stack(tmp_path, "serve", "--no-worker", "--port", str(port))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1]
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            assert models.status_code == 401  # up and answering; keys decide the rest
            break
        else:
            raise AssertionError("the API did not start")
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_the_check_looks_only_at_local_flux_models() -> None:
    assert model_stack_problem([NOOP]) is None  # a fixture predictor needs no torch
    assert model_stack_problem([FLUX_SCHNELL]) is None  # installed here
    assert missing_packages(["torch", "surely_not_a_module_here"]) == ["surely_not_a_module_here"]


def test_serve_whose_worker_runs_fixture_models_only_needs_no_model_stack(tmp_path: Path) -> None:
    env = {"FLUXSERVE_EXTRA_MODELS": '["fluxserve.predictors.fixtures:ALL"]', "FLUXSERVE_DATA_DIR": str(tmp_path)}
    key = create_key(tmp_path, {**os.environ, **env})
    port = free_port()
    env["FLUXSERVE_WORKER_MODELS"] = "fluxserve-fixtures/noop, fluxserve-fixtures/slow-steps"
    process = cli_without_model_stack(tmp_path, "serve", "--port", str(port), env=env)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        auth = {"Authorization": f"Bearer {key}", "Prefer": "wait=30"}
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                answer = httpx.post(
                    f"{base}/models/fluxserve-fixtures/noop/predictions",
                    json={"input": {"prompt": "no torch here"}},
                    headers=auth,
                    timeout=40,
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.2)
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] == "succeeded" and answer.json()["output"] == "no torch here"
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_a_worker_for_an_unknown_model_exits_naming_it(tmp_path: Path) -> None:
    env = {"FLUXSERVE_WORKER_MODELS": "black-forest-labs/flux-nonexistent"}
    process = cli_without_model_stack(tmp_path, "serve", env=env)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 2, err
    assert "unknown model(s) black-forest-labs/flux-nonexistent" in err and "Traceback" not in err
