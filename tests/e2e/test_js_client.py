"""The official ``replicate`` npm client (1.4.0), unchanged, against a real fluxserve."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Server

JS_DIR = Path(__file__).parent.parent / "js"


def node(server: Server, scenario: str, prefix: str = "/v1") -> dict[str, Any]:
    if shutil.which("node") is None or not (JS_DIR / "node_modules" / "replicate").is_dir():
        if os.environ.get("CI"):
            pytest.fail("node and tests/js/node_modules are required in CI (scripts/test runs npm ci)")
        pytest.skip("node or the replicate npm package is not installed (run: npm ci --prefix tests/js)")
    env = {**os.environ, "FLUXSERVE_BASE_URL": server.base + prefix, "FLUXSERVE_KEY": server.key}
    done = subprocess.run(
        ["node", "client.mjs", scenario], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("prefix", ["/v1", "/replicate/v1"])
def test_js_run_returns_image_urls(server: Server, prefix: str) -> None:
    output = node(server, "run", prefix)["output"]
    assert len(output) == 2
    for url in output:
        assert url.startswith(f"{server.base}{prefix}/outputs/")
        response = httpx.get(url)
        assert (response.status_code, response.headers["content-type"]) == (200, "image/webp")


def test_js_create_and_wait(server: Server) -> None:
    result = node(server, "createAndWait")
    assert (result["created"], result["status"], result["output"]) == ("starting", "succeeded", ["done 3 steps"])
    assert "3/3" in result["logs"]


def test_js_cancel(server: Server) -> None:
    assert node(server, "cancel")["status"] == "canceled"


def test_js_errors(server: Server) -> None:
    invalid = node(server, "invalid")
    assert invalid["raised"] and invalid["status"] == 422 and "aspect_ratio" in invalid["message"]
    failed = node(server, "failed")
    assert failed["raised"] and "Prediction failed: out of cheese" in failed["message"]
    assert node(server, "list")["count"] >= 1


def test_js_hardware_collections_and_deployments(server: Server) -> None:
    result = node(server, "deployments")
    assert result["hardware"] == ["cpu"] and "flux" in result["collections"]
    assert "flux-schnell" in result["fluxModels"]
    assert (result["release"], result["listed"], result["output"]) == (2, ["js-echo"], "from js")
    assert result["deployment"].endswith("/js-echo") and result["deleted"] is True
