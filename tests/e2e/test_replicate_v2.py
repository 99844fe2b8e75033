"""The ``replicate`` 2.x Python SDK (2.0.0b4, generated from Replicate's OpenAPI document), unchanged, against a real
fluxserve, with strict response validation: every answer must match the document's types, not just parse.

The SDK conflicts with the 1.0.x client of .venv, so tests/clients/replicate_v2.py drives it from its own virtualenv
(.venv-replicate2, installed by scripts/test) and prints one JSON line per scenario.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import make_server
from tests.support import Server, wait_for

ROOT = Path(__file__).parent.parent.parent
PYTHON = ROOT / ".venv-replicate2" / "bin" / "python"
DRIVER = ROOT / "tests" / "clients" / "replicate_v2.py"
SDK_VERSION = "2.0.0-beta.4"  # replicate==2.0.0b4's own spelling
PREFIXES = ["/v1", "/replicate/v1"]


@pytest.fixture(scope="module")
def v2_server(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[Server]:
    """One server (SQLite) for the module: the fixture models and the tiny FLUX pipelines."""
    server = make_server(tmp_path_factory.mktemp("replicate-v2"), tiny_weights, None).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def retention_server(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[Server]:
    """A server that removes predictions' data two seconds after they finish."""
    env = {"FLUXSERVE_DATA_RETENTION_SECONDS": "2"}
    server = make_server(tmp_path_factory.mktemp("replicate-v2-retention"), tiny_weights, None, extra_env=env)
    server.start()
    yield server
    server.stop()


def sdk(server: Server, scenario: str, *args: str, prefix: str = "/v1") -> dict[str, Any]:
    """Run one driver scenario; fail with the request, the response and what the SDK expected."""
    if not PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail("the replicate 2.x virtualenv .venv-replicate2 is required in CI (scripts/test installs it)")
        pytest.skip("no .venv-replicate2 (scripts/test makes it: a venv with pip install replicate==2.0.0b4)")
    env = {**os.environ, "FLUXSERVE_BASE_URL": server.base + prefix, "FLUXSERVE_KEY": server.key}
    env.pop("REPLICATE_API_TOKEN", None)
    done = subprocess.run(
        [str(PYTHON), str(DRIVER), scenario, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["sdk"] == SDK_VERSION
    if not report["ok"]:
        pytest.fail(
            f"replicate {report['sdk']} failed in scenario {scenario!r} ({prefix}):\n"
            + json.dumps(report["error"], indent=2)
            + "\nrequests made:\n"
            + "\n".join(f"  {r['method']} {r['url']} -> {r['status']}" for r in report["trail"]),
            pytrace=False,
        )
    result: dict[str, Any] = report["result"]
    return result


def image_at(url: str) -> Image.Image:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    return Image.open(io.BytesIO(response.content))


# --- predictions -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_run_by_model_name(v2_server: Server, prefix: str) -> None:
    result = sdk(v2_server, "run_model", prefix=prefix)
    # Output URLs come back as str: the SDK wraps only https: and data: URLs in FileOutput.
    assert result["types"] == ["str", "str"]
    for i, url in enumerate(result["output"]):
        assert url.startswith(f"{v2_server.base}{prefix}/outputs/") and url.endswith(f"/out-{i}.png")
        image = image_at(url)
        assert (image.format, image.size) == ("PNG", (672, 384))


def test_run_by_version_and_create_then_wait(v2_server: Server) -> None:
    result = sdk(v2_server, "run_version")
    assert len(result["version"]) == 64
    assert len(result["output"]) == 1 and image_at(result["output"][0]).size == (512, 512)
    created, waited = result["created"], result["waited"]
    assert created["status"] in ("starting", "processing", "succeeded")
    assert (waited["id"], waited["status"]) == (created["id"], "succeeded")
    assert (waited["model"], waited["version"]) == ("black-forest-labs/flux-schnell", result["version"])
    assert waited["metrics"]["predict_time"] > 0 and len(waited["output"]) == 1


def test_every_documented_form_of_version(v2_server: Server) -> None:
    forms = sdk(v2_server, "version_field_forms")["forms"]
    for form, done in forms.items():
        assert (done["status"], done["output"], done["model"]) == ("succeeded", form, "fluxserve-fixtures/noop")


@pytest.mark.parametrize("prefix", PREFIXES)
def test_create_and_wait(v2_server: Server, prefix: str) -> None:
    result = sdk(v2_server, "create_and_wait", prefix=prefix)
    created, waited, blocking = result["created"], result["waited"], result["blocking"]
    assert created["status"] == "starting" and created["urls"]["get"].startswith(f"{v2_server.base}{prefix}/")
    assert (waited["status"], waited["output"]) == ("succeeded", ["done 3 steps"])
    assert "3/3" in waited["logs"] and waited["metrics"]["predict_time"] >= 0.15
    assert (blocking["status"], blocking["output"]) == ("succeeded", "waited")


@pytest.mark.parametrize("prefix", PREFIXES)
def test_get(v2_server: Server, prefix: str) -> None:
    result = sdk(v2_server, "get", prefix=prefix)
    assert result["got"] == result["created"]
    assert result["got"]["input"] == {"prompt": "get me"} and result["got"]["data_removed"] is False
    assert result["missing"]["raised"] == "NotFoundError" and result["missing"]["status"] == 404


@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_one_page(v2_server: Server, prefix: str) -> None:
    result = sdk(v2_server, "list", prefix=prefix)
    assert result["count"] >= 2 and result["ids"][:2] == list(reversed(result["made"]))
    assert set(result["statuses"]) <= {"starting", "processing", "succeeded", "failed", "canceled"}
    assert result["has_next_page"] is (result["next"] is not None)


def test_list_page_with_a_prediction_whose_data_was_removed(retention_server: Server) -> None:
    with retention_server.client() as http:
        done = http.post(
            "/models/fluxserve-fixtures/writes-image/predictions", json={"input": {}}, headers={"Prefer": "wait=10"}
        ).json()
        assert done["status"] == "succeeded"
        removed = wait_for(http, done["id"], timeout=20, until=lambda p: p["data_removed"])
        assert removed["data_removed"] is True
        # A fresh prediction beside it: the page mixes removed and intact ones.
        http.post("/models/fluxserve-fixtures/noop/predictions", json={"input": {"prompt": "kept"}})
    result = sdk(retention_server, "list_with_removed", done["id"])
    [listed] = result["listed"]
    assert result["count"] >= 2
    for p in (listed, result["got"]):
        assert (p["data_removed"], p["status"], p["output"]) == (True, "succeeded", None)
        assert p["input"] == {}  # the document types input as a required object: never null
        assert p["created_at"] == result["got"]["created_at"]


def test_cancel(v2_server: Server) -> None:
    result = sdk(v2_server, "cancel")
    assert result["before"] == "processing"
    assert result["answered"] in ("processing", "canceled")
    assert result["final"]["status"] == "canceled" and result["again"] == "canceled"


def test_file_inputs_uploaded_or_inlined_by_the_sdk(v2_server: Server) -> None:
    result = sdk(v2_server, "run_file_input")
    assert result["uploaded"].startswith("24x16 PNG ")
    assert result["inlined"].startswith("8x8 PNG ")


def test_errors_map_to_the_sdk_exceptions(v2_server: Server) -> None:
    result = sdk(v2_server, "errors")
    assert (result["bad_input"]["raised"], result["bad_input"]["status"]) == ("UnprocessableEntityError", 422)
    assert "aspect_ratio" in result["bad_input"]["body"]["detail"]
    assert (result["unknown_model"]["raised"], result["unknown_model"]["status"]) == ("NotFoundError", 404)
    assert result["failed"]["raised"] == "ModelError" and "out of cheese" in result["failed"]["message"]
    assert result["failed"]["prediction"]["status"] == "failed"
    assert (result["unauthenticated"]["raised"], result["unauthenticated"]["status"]) == ("AuthenticationError", 401)


# --- models, account, files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_models_and_versions(v2_server: Server, prefix: str) -> None:
    result = sdk(v2_server, "models", prefix=prefix)
    assert (result["model"]["owner"], result["model"]["name"]) == ("black-forest-labs", "flux-schnell")
    assert len(result["latest_version"]) == 64 and result["input_required"] == ["prompt"]
    assert {"black-forest-labs/flux-schnell", "fluxserve-fixtures/noop"} <= set(result["listed"])
    assert result["versions"][0] == result["latest_version"]  # newest first
    assert result["version"]["id"] == result["latest_version"] and result["version_has_schema"]


def test_account(v2_server: Server) -> None:
    result = sdk(v2_server, "account")
    assert result["type"] in ("user", "organization") and result["username"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_files(v2_server: Server, prefix: str) -> None:
    result = sdk(v2_server, "files", prefix=prefix)
    created = result["created"]
    assert (created["content_type"], created["size"]) == ("text/plain", 22)
    assert created["checksums"]["sha256"] == hashlib.sha256(b"hello from the 2.x SDK").hexdigest()
    assert created["urls"]["get"].startswith(f"{v2_server.base}{prefix}/files/")
    assert result["got"] == created and created["id"] in result["listed"]
    assert (result["gone"]["raised"], result["gone"]["status"]) == ("NotFoundError", 404)
    assert result["metadata_as_json"] == {"ticket": 8}
    # A dict goes out as form fields named metadata[ticket] (Stainless's multipart encoding), not the one JSON
    # metadata field of Replicate's documented curl example; form values carry no type, so it comes back a string.
    assert created["metadata"] == {"ticket": "7"}
    assert result["downloaded"] == "hello from the 2.x SDK"  # a URL the client signed itself
    assert result["bare"]["content_type"] == "application/octet-stream" and result["bare"]["size"] == 7


# --- hardware, collections, deployments, examples, readme, search (issue 14): Replicate's documented shapes ------


def test_hardware(v2_server: Server) -> None:
    hardware = sdk(v2_server, "hardware")["hardware"]
    assert hardware, "the server's own worker is live: at least one entry"
    assert all(isinstance(item["sku"], str) and isinstance(item["name"], str) for item in hardware)


def test_collections(v2_server: Server) -> None:
    result = sdk(v2_server, "collections")
    assert "flux" in result["listed"]
    assert result["flux"]["slug"] == "flux" and result["flux"]["name"] and result["flux"]["description"]
    flux = {"black-forest-labs/flux-schnell", "black-forest-labs/flux-dev", "black-forest-labs/flux-kontext-dev"}
    assert flux <= set(result["flux_models"])


def test_deployments(v2_server: Server) -> None:
    result = sdk(v2_server, "deployments")
    owner, name = result["owner"], result["name"]
    created = result["created"]
    assert (created["owner"], created["name"]) == (owner, name)
    release = created["current_release"]
    assert (release["number"], release["model"]) == (1, "fluxserve-fixtures/noop")
    assert release["version"] == result["version"]
    assert release["configuration"] == {"hardware": result["hardware"], "min_instances": 0, "max_instances": 1}
    assert release["created_by"]["username"] == owner
    assert result["got"] == created
    assert f"{owner}/{name}" in result["listed"]
    updated = result["updated"]["current_release"]
    assert updated["number"] == 2 and updated["configuration"]["max_instances"] == 2
    assert (updated["version"], updated["configuration"]["min_instances"]) == (result["version"], 0)
    ran = result["prediction"]
    assert (ran["status"], ran["output"], ran["model"]) == ("succeeded", "via a deployment", "fluxserve-fixtures/noop")
    assert ran["deployment"] == f"{owner}/{name}"
    assert (result["gone"]["raised"], result["gone"]["status"]) == ("NotFoundError", 404)


def test_model_examples(v2_server: Server) -> None:
    result = sdk(v2_server, "examples")
    assert result["count"] >= 0  # the page parsed strictly; examples are predictions
    assert all(p["model"] == "black-forest-labs/flux-schnell" for p in result["examples"])


def test_model_readme(v2_server: Server) -> None:
    result = sdk(v2_server, "readme")
    assert result["type"] == "str" and result["readme"].strip()


def test_search(v2_server: Server) -> None:
    result = sdk(v2_server, "search")
    assert result["query"] == "flux schnell"
    # best first: both words in the name beat "flux" alone, however many FLUX models are served
    assert result["models"][0] == "black-forest-labs/flux-schnell", result["models"]
    assert len(result["models"]) <= 5
