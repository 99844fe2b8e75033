"""Replicate conformance over ASGI against a real in-process runtime: inputs as Replicate and Cog treat them,
Replicate's version ids, the list filters, and the resources the official clients expose (hardware,
collections, search, readmes, examples, deployments, signed file downloads)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from fluxserve.schema import utcnow
from tests.inprocess import BACKENDS, InProcess, create_key, database_for, open_inprocess

NOOP = "/v1/models/fluxserve-fixtures/noop/predictions"
IMAGE = "/v1/models/fluxserve-fixtures/writes-image/predictions"
SCHNELL_REPLICATE_VERSION = "53d5d1586a229bd033e060941789bfb0c177cefd5ef638f34b3099658343a897"


@pytest.fixture(scope="module")
async def fs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    """A SQLite runtime with its in-process worker (serving only the fixtures: nothing builds a FLUX pipeline)."""
    models = [
        "fluxserve-fixtures/noop",
        "fluxserve-fixtures/writes-image",
        "fluxserve-fixtures/slow-steps",
    ]
    async with open_inprocess(tmp_path_factory.mktemp("conformance"), worker_models=models) as instance:
        yield instance


async def _admin(fs: InProcess) -> httpx.AsyncClient:
    _, token = await create_key(fs.settings, "operator", admin=True)
    return fs.client_with(token)


# --- input handling -------------------------------------------------------------------------------------


async def test_unknown_input_keys_are_ignored_and_logged(fs: InProcess) -> None:
    response = await fs.client.post(
        NOOP, json={"input": {"prompt": "hi", "negative_prompt": "blur", "size": "1024x1024"}}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["input"] == {"prompt": "hi"}
    assert created["logs"].startswith("Ignored unknown input: negative_prompt, size\n")
    done = await fs.wait_for(created["id"])
    assert done["status"] == "succeeded" and done["output"] == "hi"
    assert "Ignored unknown input: negative_prompt, size" in done["logs"]


async def test_strict_inputs_refuse_unknown_keys(tmp_path_factory: pytest.TempPathFactory) -> None:
    async with open_inprocess(tmp_path_factory.mktemp("strict"), with_worker=False, strict_inputs=True) as strict:
        response = await strict.client.post(NOOP, json={"input": {"prompt": "hi", "negative_prompt": "x"}})
    assert response.status_code == 422, response.text
    assert [f["field"] for f in response.json()["invalid_fields"]] == ["input.negative_prompt"]


async def test_unknown_top_level_keys_are_422_naming_them(fs: InProcess) -> None:
    response = await fs.client.post(NOOP, json={"input": {}, "foo": 1})
    assert response.status_code == 422, response.text
    assert response.json()["invalid_fields"] == [
        {
            "type": "additional_property_not_allowed",
            "field": "foo",
            "description": "Additional property foo is not allowed",
        }
    ]
    typo = await fs.client.post(NOOP, json={"inptu": {"prompt": "x"}})
    assert typo.status_code == 422
    assert {f["field"] for f in typo.json()["invalid_fields"]} == {"input", "inptu"}
    # What the official clients send besides input stays accepted.
    ok = await fs.client.post(NOOP, json={"input": {}, "stream": False, "webhook_events_filter": ["completed"]})
    assert ok.status_code == 201, ok.text


# --- versions -------------------------------------------------------------------------------------------


async def test_replicate_version_ids_are_aliases(fs: InProcess) -> None:
    versions = (await fs.client.get("/v1/models/black-forest-labs/flux-schnell/versions")).json()["results"]
    ours = versions[0]["id"]
    assert [v["id"] for v in versions] == [ours, SCHNELL_REPLICATE_VERSION]
    assert versions[0]["openapi_schema"] == versions[1]["openapi_schema"]
    got = await fs.client.get(f"/v1/models/black-forest-labs/flux-schnell/versions/{SCHNELL_REPLICATE_VERSION}")
    assert got.status_code == 200 and got.json()["id"] == SCHNELL_REPLICATE_VERSION
    for ref in (SCHNELL_REPLICATE_VERSION, f"black-forest-labs/flux-schnell:{SCHNELL_REPLICATE_VERSION}"):
        # No worker serves flux-schnell here: the prediction only queues, which is all this needs.
        response = await fs.client.post("/v1/predictions", json={"version": ref, "input": {"prompt": "a cat"}})
        assert response.status_code == 201, response.text
        assert (response.json()["model"], response.json()["version"]) == (
            "black-forest-labs/flux-schnell",
            SCHNELL_REPLICATE_VERSION,
        )
        await fs.client.post(f"/v1/predictions/{response.json()['id']}/cancel")
    wrong = await fs.client.post("/v1/predictions", json={"version": "f" * 64, "input": {}})
    assert wrong.status_code == 422


# --- listing --------------------------------------------------------------------------------------------


async def test_source_filter(fs: InProcess) -> None:
    created = (await fs.client.post(NOOP, json={"input": {}})).json()
    api_ids = {p["id"] for p in (await fs.client.get("/v1/predictions?source=api")).json()["results"]}
    web = (await fs.client.get("/v1/predictions", params={"source": "web"})).json()
    assert created["id"] in api_ids and web["results"] == []
    bad = await fs.client.get("/v1/predictions?source=cli")
    assert bad.status_code == 422 and "source" in bad.json()["invalid_fields"][0]["field"]


# --- hardware, collections, search, readme ----------------------------------------------------------------


async def test_hardware_lists_the_live_workers_kinds(fs: InProcess) -> None:
    # Heartbeats carry the hardware; the first one is written before the worker claims anything.
    await fs.wait_for((await fs.client.post(NOOP, json={"input": {}})).json()["id"])
    response = await fs.client.get("/v1/hardware")
    assert response.status_code == 200, response.text
    assert response.json() == [{"sku": "cpu", "name": "CPU"}]


async def test_collections(fs: InProcess) -> None:
    listed = (await fs.client.get("/v1/collections")).json()
    assert {"name": "FLUX", "slug": "flux", "description": listed["results"][0]["description"]} in listed["results"]
    flux = (await fs.client.get("/v1/collections/flux")).json()
    refs = [f"{m['owner']}/{m['name']}" for m in flux["models"]]
    assert "black-forest-labs/flux-schnell" in refs and not any(r.startswith("fluxserve-fixtures/") for r in refs)
    assert all(m["latest_version"]["openapi_schema"] for m in flux["models"])
    missing = await fs.client.get("/v1/collections/nope")
    assert missing.status_code == 404 and "flux" in missing.json()["detail"]


async def test_search(fs: InProcess) -> None:
    found = (await fs.client.get("/v1/search", params={"query": "flux schnell"})).json()
    assert found["query"] == "flux schnell"
    assert found["models"][0]["model"]["name"] == "flux-schnell"
    assert found["models"][0]["metadata"]["score"] == 1.0
    assert [c["slug"] for c in found["collections"]] == ["flux"]
    assert (await fs.client.get("/v1/search", params={"query": "zzzz"})).json()["models"] == []
    empty = await fs.client.get("/v1/search", params={"query": " -- "})
    assert empty.status_code == 200 and empty.json()["models"] == [] and empty.json()["collections"] == []


async def test_readme_is_a_card_written_from_the_schema(fs: InProcess) -> None:
    response = await fs.client.get("/v1/models/black-forest-labs/flux-schnell/readme")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("# black-forest-labs/flux-schnell\n")
    assert "| `aspect_ratio` |" in response.text
    assert (await fs.client.get("/v1/models/nobody/nothing/readme")).status_code == 404


# --- examples -------------------------------------------------------------------------------------------


async def test_examples_default_example_and_cover_image(fs: InProcess) -> None:
    done = await fs.wait_for((await fs.client.post(IMAGE, json={"input": {"count": 1}})).json()["id"])
    assert done["status"] == "succeeded"
    body = {"prediction": done["id"], "default": True}
    forbidden = await fs.client.post("/v1/admin/models/fluxserve-fixtures/writes-image/examples", json=body)
    assert forbidden.status_code == 403
    async with await _admin(fs) as admin:
        marked = await admin.post("/v1/admin/models/fluxserve-fixtures/writes-image/examples", json=body)
        assert marked.status_code == 200, marked.text
        other = await fs.wait_for((await fs.client.post(IMAGE, json={"input": {"count": 1}})).json()["id"])
        await admin.post("/v1/admin/models/fluxserve-fixtures/writes-image/examples", json={"prediction": other["id"]})
        wrong_model = await admin.post("/v1/admin/models/fluxserve-fixtures/noop/examples", json=body)
        assert wrong_model.status_code == 404
        queued = await fs.client.post("/v1/models/fluxserve-fixtures/slow-steps/predictions", json={"input": {}})
        not_done = await admin.post(
            "/v1/admin/models/fluxserve-fixtures/slow-steps/examples", json={"prediction": queued.json()["id"]}
        )
        assert not_done.status_code == 422 and "succeeded" in not_done.json()["detail"]
        examples = (await fs.client.get("/v1/models/fluxserve-fixtures/writes-image/examples")).json()["results"]
        assert [e["id"] for e in examples] == [done["id"], other["id"]]
        model = (await fs.client.get("/v1/models/fluxserve-fixtures/writes-image")).json()
        assert model["default_example"]["id"] == done["id"]
        assert model["cover_image_url"] == done["output"][0]
        assert model["created_at"].endswith("Z")
        # Kept past the retention period: examples are not purged.
        purgeable = await fs.store.predictions_to_purge(utcnow() + timedelta(days=1), 1000)
        assert done["id"] not in {r.id for r in purgeable} and other["id"] not in {r.id for r in purgeable}
        removed = await admin.delete(f"/v1/admin/models/fluxserve-fixtures/writes-image/examples/{other['id']}")
        assert removed.status_code == 204
    examples = (await fs.client.get("/v1/models/fluxserve-fixtures/writes-image/examples")).json()["results"]
    assert [e["id"] for e in examples] == [done["id"]]


# --- signed file downloads --------------------------------------------------------------------------------


async def test_signed_download_urls(fs: InProcess) -> None:
    uploaded = (await fs.client.post("/v1/files", files={"content": ("a.txt", b"hello", "text/plain")})).json()
    url = uploaded["urls"]["download"]
    query = parse_qs(urlsplit(url).query)
    assert query["owner"] == [fs.key.name] and int(query["expiry"][0]) > utcnow().timestamp()
    async with fs.client_with(None) as anonymous:
        got = await anonymous.get(url)
        assert (got.status_code, got.content) == (200, b"hello"), got.text
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-disposition"] == "attachment; filename*=UTF-8''a.txt"
        sig = base64.b64decode(query["signature"][0])
        forged = base64.b64encode(bytes([sig[0] ^ 1]) + sig[1:]).decode()
        base = f"/v1/files/{uploaded['id']}/download"
        for params in (
            {"owner": fs.key.name, "expiry": query["expiry"][0], "signature": forged},
            {"owner": "someone-else", "expiry": query["expiry"][0], "signature": query["signature"][0]},
            {"owner": fs.key.name, "expiry": str(int(query["expiry"][0]) + 1), "signature": query["signature"][0]},
            {"owner": fs.key.name, "expiry": "soon", "signature": "%%%"},
        ):
            assert (await anonymous.get(base, params=params)).status_code == 404, params
        # Without a signature the route still needs the key.
        assert (await anonymous.get(base)).status_code == 401


# --- deployments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_deployments(tmp_path_factory: pytest.TempPathFactory, backend: str) -> None:
    with database_for(backend) as url:
        async with open_inprocess(
            tmp_path_factory.mktemp("deployments"), url, worker_models=["fluxserve-fixtures/noop"]
        ) as dfs:
            await _deployment_lifecycle(dfs)


async def _deployment_lifecycle(fs: InProcess) -> None:
    noop = (await fs.client.get("/v1/models/fluxserve-fixtures/noop")).json()["latest_version"]["id"]
    spec = {
        "name": "my-noop", "model": "fluxserve-fixtures/noop", "version": noop,
        "hardware": "cpu", "min_instances": 0, "max_instances": 2,
    }  # fmt: skip
    await fs.wait_for((await fs.client.post(NOOP, json={"input": {}})).json()["id"])  # a worker has reported
    created = await fs.client.post("/v1/deployments", json=spec)
    assert created.status_code == 200, created.text  # Replicate's document: 200
    release = created.json()["current_release"]
    assert created.json()["owner"] == fs.key.name and created.json()["name"] == "my-noop"
    assert (release["number"], release["model"], release["version"]) == (1, "fluxserve-fixtures/noop", noop)
    assert release["configuration"] == {"hardware": "cpu", "min_instances": 0, "max_instances": 2}
    assert release["created_by"]["username"] == fs.key.name
    assert (await fs.client.post("/v1/deployments", json=spec)).status_code == 409
    bad = await fs.client.post("/v1/deployments", json={**spec, "name": "x", "hardware": "gpu-h100"})
    assert bad.status_code == 422 and bad.json()["invalid_fields"][0]["field"] == "hardware"
    bad = await fs.client.post("/v1/deployments", json={**spec, "name": "y", "model": "nobody/nothing"})
    assert bad.status_code == 422 and bad.json()["invalid_fields"][0]["field"] == "model"
    path = f"/v1/deployments/{fs.key.name}/my-noop"
    assert (await fs.client.get(path)).json() == created.json()
    assert [d["name"] for d in (await fs.client.get("/v1/deployments")).json()["results"]] == ["my-noop"]
    updated = await fs.client.patch(path, json={"max_instances": 4})
    assert updated.status_code == 200, updated.text
    assert updated.json()["current_release"]["number"] == 2
    assert updated.json()["current_release"]["configuration"]["max_instances"] == 4
    assert (await fs.client.patch(path, json={"min_instances": 5})).status_code == 422
    prediction = await fs.client.post(f"{path}/predictions", json={"input": {"prompt": "via"}})
    assert prediction.status_code == 201, prediction.text
    assert prediction.json()["deployment"] == f"{fs.key.name}/my-noop"
    assert (prediction.json()["model"], prediction.json()["version"]) == ("fluxserve-fixtures/noop", noop)
    assert (await fs.wait_for(prediction.json()["id"]))["output"] == "via"
    _, other_token = await fs.new_key("someone-else")
    async with fs.client_with(other_token) as other:
        assert (await other.get(path)).status_code == 404
        assert (await other.post(f"{path}/predictions", json={"input": {}})).status_code == 404
        assert (await other.get("/v1/deployments")).json()["results"] == []
    assert (await fs.client.delete(path)).status_code == 204
    assert (await fs.client.get(path)).status_code == 404
    assert (await fs.client.get(f"/v1/predictions/{prediction.json()['id']}")).status_code == 200
