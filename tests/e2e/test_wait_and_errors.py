"""Prefer: wait semantics and problem+json errors over real HTTP."""

from __future__ import annotations

import time

import httpx

from tests.support import Server, wait_for


def test_prefer_wait_finished_is_201_terminal(server: Server) -> None:
    with server.client() as client:
        response = client.post(
            "/models/fluxserve-fixtures/noop/predictions", json={"input": {"prompt": "hi"}}, headers={"Prefer": "wait"}
        )
    assert response.status_code == 201
    assert response.headers["preference-applied"] == "wait"
    body = response.json()
    assert (body["status"], body["output"]) == ("succeeded", "hi")
    assert body["metrics"]["predict_time"] >= 0


def test_prefer_wait_timeout_answers_starting_202_with_location(server: Server) -> None:
    with server.client() as client:
        started = time.monotonic()
        response = client.post(
            "/models/fluxserve-fixtures/slow-steps/predictions",
            json={"input": {"steps": 40, "step_seconds": 0.05}},
            headers={"Prefer": "wait=1"},
        )
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < 1.9
        assert response.status_code == 202
        assert response.headers["preference-applied"] == "wait=1"
        body = response.json()
        # Really processing by now, but the official clients only poll when they read "starting".
        assert body["status"] == "starting"
        assert response.headers["location"] == body["urls"]["get"]
        assert wait_for(client, body["id"])["status"] == "succeeded"


def test_prefer_wait_failure_is_terminal(server: Server) -> None:
    with server.client() as client:
        response = client.post(
            "/models/fluxserve-fixtures/raises-in-predict/predictions",
            json={"input": {"message": "bad things"}},
            headers={"Prefer": "wait=10"},
        )
    body = response.json()
    assert (response.status_code, body["status"], body["error"]) == (201, "failed", "bad things")
    assert body["logs"] == "about to fail\n"


def test_no_key_is_401_problem(server: Server) -> None:
    response = httpx.get(f"{server.base}/v1/predictions")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "title": "Unauthenticated",
        "detail": "You did not pass a valid authentication token",
        "status": 401,
    }
    token_scheme = httpx.get(f"{server.base}/v1/account", headers={"Authorization": f"Token {server.key}"})
    assert token_scheme.status_code == 200
    assert token_scheme.json()["username"] == "test"


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def test_errors_name_the_field(server: Server) -> None:
    with server.client() as client:
        body = _problem(client.post("/models/nobody/nothing/predictions", json={"input": {}}), 404)
        assert "nobody/nothing" in str(body["detail"])

        body = _problem(
            client.post(
                "/models/black-forest-labs/flux-schnell/predictions",
                content=b'{"input": {"prompt": "x"',
                headers={"Content-Type": "application/json"},
            ),
            422,
        )
        assert "not valid JSON" in str(body["detail"])

        body = _problem(
            client.post(
                "/models/black-forest-labs/flux-schnell/predictions",
                json={"input": {"prompt": "x", "num_outputs": 9, "aspect_ratio": "7:3", "colour": "red"}},
            ),
            422,
        )
        fields = {f["field"]: f for f in body["invalid_fields"]}  # type: ignore[union-attr]
        # "colour" is not refused: unknown input keys are dropped (and logged), as on Replicate.
        assert set(fields) == {"input.num_outputs", "input.aspect_ratio"}
        assert "4" in fields["input.num_outputs"]["description"]
        assert '"16:9"' in fields["input.aspect_ratio"]["description"]
        for name in ("num_outputs", "aspect_ratio"):
            assert name in str(body["detail"])

        body = _problem(client.post("/models/black-forest-labs/flux-schnell/predictions", json={"input": {}}), 422)
        assert "prompt is required" in str(body["detail"])

        body = _problem(client.post("/models/black-forest-labs/flux-schnell/predictions", json={"prompt": "x"}), 422)
        assert "input is required" in str(body["detail"])

        body = _problem(client.post("/predictions", json={"input": {"prompt": "x"}}), 422)
        assert "version" in str(body["detail"])

        body = _problem(client.post("/predictions", json={"version": "f" * 64, "input": {}}), 422)
        assert body["title"] == "Invalid version or not permitted"

        _problem(client.get("/predictions/doesnotexist"), 404)
        _problem(client.get("/predictions", params={"cursor": "garbage!"}), 422)
        _problem(client.get("/predictions", params={"created_after": "yesterday"}), 422)


def test_version_route_accepts_owner_name_and_model_field(server: Server) -> None:
    with server.client() as client:
        by_name = client.post(
            "/predictions",
            json={"version": "fluxserve-fixtures/noop", "input": {"prompt": "a"}},
            headers={"Prefer": "wait"},
        ).json()
        assert (by_name["version"], by_name["output"]) == ("hidden", "a")
        model = client.get("/models/fluxserve-fixtures/noop").json()
        version = model["latest_version"]["id"]
        by_id = client.post("/predictions", json={"version": version, "input": {"prompt": "b"}}).json()
        assert (by_id["model"], by_id["version"]) == ("fluxserve-fixtures/noop", version)
        by_model = client.post("/predictions", json={"model": "fluxserve-fixtures/noop", "input": {"prompt": "c"}})
        assert by_model.status_code == 201
        assert client.get(f"/models/fluxserve-fixtures/noop/versions/{version}").json()["id"] == version
        assert client.get("/models/fluxserve-fixtures/noop/versions").json()["results"][0]["id"] == version
        assert client.get("/models/fluxserve-fixtures/noop/versions/" + "0" * 64).status_code == 404
        refs = {f"{m['owner']}/{m['name']}" for m in client.get("/models").json()["results"]}
        assert "black-forest-labs/flux-schnell" in refs


def test_cancel_accepts_empty_body_and_queued_prediction_cancels_at_once(server: Server) -> None:
    with server.client() as client:
        # Occupy the single worker so the next prediction stays queued.
        busy = client.post(
            "/models/fluxserve-fixtures/slow-steps/predictions", json={"input": {"steps": 20, "step_seconds": 0.05}}
        ).json()
        queued = client.post("/models/fluxserve-fixtures/noop/predictions", json={"input": {"prompt": "q"}}).json()
        response = client.post(f"/predictions/{queued['id']}/cancel", headers={"Content-Type": "application/json"})
        assert response.status_code == 200
        body = response.json()
        assert body["status"] in ("canceled", "succeeded")  # the worker may have been faster
        if body["status"] == "canceled":
            assert body["completed_at"] and body["output"] is None
        assert wait_for(client, busy["id"])["status"] == "succeeded"


def test_list_filters_by_creation_time(server: Server) -> None:
    with server.client() as client:
        first = client.post("/models/fluxserve-fixtures/noop/predictions", json={"input": {"prompt": "1"}}).json()
        time.sleep(0.01)
        second = client.post("/models/fluxserve-fixtures/noop/predictions", json={"input": {"prompt": "2"}}).json()
        after = client.get("/predictions", params={"created_after": first["created_at"]}).json()
        assert [p["id"] for p in after["results"]] == [second["id"]]
        before = client.get("/predictions", params={"created_before": second["created_at"]}).json()
        assert second["id"] not in [p["id"] for p in before["results"]]
        assert first["id"] in [p["id"] for p in before["results"]]
