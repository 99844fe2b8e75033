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
from tests.support import free_port

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


def cli_without_model_stack(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "FLUXSERVE_DATA_DIR": str(tmp_path), "FLUXSERVE_LOG_LEVEL": "warning"}
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
