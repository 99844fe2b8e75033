"""API behaviour over ASGI against a real in-process runtime (no subprocess, no worker)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.inprocess import InProcess, open_inprocess

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
async def fs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    """A SQLite runtime without a worker: nothing here needs a prediction to run."""
    async with open_inprocess(tmp_path_factory.mktemp("api"), with_worker=False) as instance:
        yield instance


async def test_missing_key_is_a_401_problem(fs: InProcess) -> None:
    async with fs.client_with(None) as anonymous:
        response = await anonymous.get("/v1/predictions")
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == 401
    assert body["title"] == "Unauthenticated"


async def test_unknown_key_is_a_401_problem(fs: InProcess) -> None:
    async with fs.client_with("fs_not-a-real-key") as stranger:
        response = await stranger.get("/v1/models")
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_bad_num_outputs_is_a_422_naming_the_field(fs: InProcess) -> None:
    response = await fs.client.post(
        "/v1/models/black-forest-labs/flux-schnell/predictions",
        json={"input": {"prompt": "a cat", "num_outputs": 9}},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == 422
    fields = [f["field"] for f in body["invalid_fields"]]
    assert fields == ["input.num_outputs"]
    assert all({"type", "field", "description"} <= f.keys() for f in body["invalid_fields"])
    # Validation happens at create: no prediction was stored.
    listed = await fs.client.get("/v1/predictions")
    assert listed.status_code == 200
    assert listed.json()["results"] == []


async def test_models_lists_flux_and_fixtures(fs: InProcess) -> None:
    response = await fs.client.get("/v1/models")
    assert response.status_code == 200, response.text
    refs = {f"{m['owner']}/{m['name']}" for m in response.json()["results"]}
    assert {"black-forest-labs/flux-schnell", "fluxserve-fixtures/noop", "fluxserve-fixtures/slow-steps"} <= refs
    assert refs == {spec.ref for spec in fs.runtime.registry}


async def test_replicate_prefix_answers_like_v1(fs: InProcess) -> None:
    v1 = (await fs.client.get("/v1/models")).json()
    replicate = (await fs.client.get("/replicate/v1/models")).json()
    assert [(m["owner"], m["name"]) for m in replicate["results"]] == [(m["owner"], m["name"]) for m in v1["results"]]
    created = await fs.client.post(
        "/replicate/v1/models/fluxserve-fixtures/noop/predictions", json={"input": {"prompt": "prefixed"}}
    )
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    a = (await fs.client.get(f"/v1/predictions/{pid}")).json()
    b = (await fs.client.get(f"/replicate/v1/predictions/{pid}")).json()
    assert a["id"] == b["id"] == pid
    assert a["status"] == b["status"] == "starting"
    assert a["input"] == b["input"] == {"prompt": "prefixed"}
    async with fs.client_with(None) as anonymous:
        unauthenticated = await anonymous.get("/replicate/v1/models")
    assert unauthenticated.status_code == 401
    canceled = await fs.client.post(f"/replicate/v1/predictions/{pid}/cancel")
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
