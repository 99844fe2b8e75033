"""Usage per key: ``GET /v1/account`` and ``fluxserve keys list`` count predictions, images and predict seconds."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate

from tests.conftest import BACKENDS, _require_postgres, make_server
from tests.support import Server, create_key, create_pg_database, drop_pg_database, run_cli, wait_for

SCHNELL = "/models/black-forest-labs/flux-schnell/predictions"
WRITES_IMAGE = "/models/fluxserve-fixtures/writes-image/predictions"
RAISES = "/models/fluxserve-fixtures/raises-in-predict/predictions"
SLOW = "/models/fluxserve-fixtures/slow-steps/predictions"
NOOP = "/models/fluxserve-fixtures/noop/predictions"


def _key(server: Server, name: str) -> str:
    """A fresh key on ``server``: the session server's own key carries other tests' predictions."""
    return create_key(server.data_dir, server.env(), name)


def _finish(client: httpx.Client, path: str, inputs: dict[str, Any]) -> dict[str, Any]:
    created = client.post(path, json={"input": inputs}, headers={"Prefer": "wait=60"})
    assert created.status_code in (201, 202), created.text
    done = wait_for(client, created.json()["id"], timeout=90)
    assert done["status"] in ("succeeded", "failed", "canceled"), done
    return done


def _canceled_while_running(client: httpx.Client) -> dict[str, Any]:
    created = client.post(SLOW, json={"input": {"steps": 400, "step_seconds": 0.05}}).json()
    wait_for(client, created["id"], timeout=30, until=lambda p: p["status"] == "processing")
    time.sleep(0.2)  # let it run a little, so its predict_time is real
    assert client.post(f"/predictions/{created['id']}/cancel").status_code == 200
    done = wait_for(client, created["id"], timeout=30)
    assert done["status"] == "canceled"
    return done


def _run_mix(client: httpx.Client) -> list[dict[str, Any]]:
    """Two images from tiny FLUX, three from a fixture, one failure, one cancel: 4 predictions, 5 images."""
    schnell = _finish(client, SCHNELL, {"prompt": "a paper boat", "num_outputs": 2, "megapixels": "0.25"})
    images = _finish(client, WRITES_IMAGE, {"count": 3})
    failed = _finish(client, RAISES, {"message": "broken on purpose"})
    canceled = _canceled_while_running(client)
    assert (schnell["status"], images["status"], failed["status"]) == ("succeeded", "succeeded", "failed")
    assert (schnell["metrics"]["image_count"], images["metrics"]["image_count"]) == (2, 3)
    return [schnell, images, failed, canceled]


def _usage(client: httpx.Client, **params: str) -> dict[str, Any]:
    response = client.get("/account", params=params)
    assert response.status_code == 200, response.text
    usage: dict[str, Any] = response.json()["usage"]
    return usage


def test_account_reports_the_keys_usage(server: Server) -> None:
    alice, bob = _key(server, "usage-alice"), _key(server, "usage-bob")
    with server.client(alice) as client:
        empty = _usage(client)
        assert empty == {
            "created_after": None,
            "created_before": None,
            "predictions": 0,
            "succeeded": 0,
            "failed": 0,
            "canceled": 0,
            "in_progress": 0,
            "image_count": 0,
            "predict_time": 0.0,
        }
        runs = _run_mix(client)
        account = client.get("/account").json()
        usage = account["usage"]
    # Replicate's fields are unchanged; usage is an extra member the official clients ignore.
    assert (account["type"], account["username"], account["name"]) == ("user", "usage-alice", "usage-alice")
    assert "github_url" not in account  # a URI string in Replicate's document: absent, never null
    assert (usage["predictions"], usage["succeeded"], usage["failed"], usage["canceled"]) == (4, 2, 1, 1)
    assert (usage["in_progress"], usage["image_count"]) == (0, 5)
    # The sum of what each prediction reports, to the microsecond it is stored with.
    assert usage["predict_time"] > 0.2
    assert usage["predict_time"] == pytest.approx(sum(r["metrics"]["predict_time"] for r in runs), abs=1e-5)

    # Another key's usage is its own, and its predictions never show up in the first key's.
    with server.client(bob) as client:
        assert _usage(client)["predictions"] == 0
        assert _finish(client, NOOP, {"prompt": "hi"})["status"] == "succeeded"
        bobs = _usage(client)
    assert (bobs["predictions"], bobs["succeeded"], bobs["image_count"]) == (1, 1, 0)
    with server.client(alice, prefix="/replicate/v1") as client:
        assert _usage(client) == usage


def test_account_usage_in_a_window(server: Server) -> None:
    key = _key(server, "usage-window")
    with server.client(key) as client:
        first = _finish(client, WRITES_IMAGE, {"count": 1})
        second = _finish(client, WRITES_IMAGE, {"count": 2})
        after_first = _usage(client, created_after=first["created_at"])
        before_second = _usage(client, created_before=second["created_at"])
        future = _usage(client, created_after="2999-01-01T00:00:00Z")
        bad = client.get("/account", params={"created_after": "last tuesday"})
    # The bounds are exclusive, as in GET /v1/predictions, and echoed back.
    assert (after_first["predictions"], after_first["image_count"]) == (1, 2)
    assert after_first["created_after"] == first["created_at"]
    assert (before_second["predictions"], before_second["image_count"]) == (1, 1)
    assert before_second["created_before"] == second["created_at"] and before_second["created_after"] is None
    assert (future["predictions"], future["predict_time"]) == (0, 0.0)
    assert bad.status_code == 422
    assert bad.json()["invalid_fields"][0]["field"] == "created_after"


@pytest.mark.parametrize("path", ["/account", "/predictions"])
@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_timestamps_out_of_range_in_utc_are_422(server: Server, path: str, value: str) -> None:
    # Valid ISO-8601, but the offset pushes them past what a datetime holds once converted to UTC.
    with server.client() as client:
        response = client.get(path, params={"created_after": value})
    assert response.status_code == 422, response.text
    assert response.json()["invalid_fields"][0]["field"] == "created_after"


def test_the_official_client_still_reads_the_account(server: Server) -> None:
    client = replicate.Client(api_token=server.key, base_url=server.base)
    account = client.accounts.current()
    assert (account.type, account.username) == ("user", "test")


def test_keys_list_shows_usage(server: Server) -> None:
    key = _key(server, "usage-cli")
    with server.client(key) as client:
        images = _finish(client, WRITES_IMAGE, {"count": 2})
        failed = _finish(client, RAISES, {"message": "no"})
    env = server.env()
    listed = json.loads(run_cli("keys", "list", "--json", "--data-dir", str(server.data_dir), env=env).stdout)
    mine = next(k for k in listed if k["name"] == "usage-cli")
    assert mine["usage"]["predictions"] == 2
    assert (mine["usage"]["succeeded"], mine["usage"]["failed"], mine["usage"]["image_count"]) == (1, 1, 2)
    expected_seconds = images["metrics"]["predict_time"] + failed["metrics"]["predict_time"]
    assert mine["usage"]["predict_time"] == pytest.approx(expected_seconds, abs=1e-5)

    table = run_cli("keys", "list", "--data-dir", str(server.data_dir), env=env).stdout.splitlines()
    header = ["ID", "NAME", "CREATED", "STATE", "PREDICTIONS", "SUCCEEDED", "FAILED", "CANCELED", "IMAGES"]
    assert table[0].split() == [*header, "PREDICT_TIME"]
    # id, name, created (date and time), state, then the figures.
    row = next(line for line in table if " usage-cli " in line).split()
    assert row[0] == mine["id"] and row[4] == "active"
    assert row[5:10] == ["2", "1", "1", "0", "2"]
    assert float(row[10]) == pytest.approx(expected_seconds, abs=1e-3)

    # A window with nothing in it shows the key with zeros.
    later = run_cli("keys", "list", "--created-after", "2999-01-01", "--data-dir", str(server.data_dir), env=env).stdout
    row = next(line for line in later.splitlines() if " usage-cli " in line).split()
    assert row[5:] == ["0", "0", "0", "0", "0", "0.000"]


@pytest.fixture(scope="module", params=BACKENDS)
def retention_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path
) -> Iterator[Server]:
    """A server that removes prediction data one second after it finishes, on a database of its own."""
    database_url = name = None
    if request.param == "postgres":
        _require_postgres()
        database_url, name = create_pg_database()
    srv = make_server(
        tmp_path_factory.mktemp(f"usage-retention-{request.param}"),
        tiny_weights,
        database_url,
        extra_env={"FLUXSERVE_DATA_RETENTION_SECONDS": "1"},
    ).start()
    yield srv
    srv.stop()
    if name is not None:
        drop_pg_database(name)


def test_usage_survives_retention(retention_server: Server) -> None:
    with retention_server.client() as client:
        runs = [_finish(client, WRITES_IMAGE, {"count": 2}), _finish(client, RAISES, {"message": "no"})]
        before = _usage(client)
        for run in runs:
            removed = wait_for(client, run["id"], timeout=30, until=lambda p: p["data_removed"])
            assert removed["data_removed"] is True and removed["output"] is None
        after = _usage(client)
    assert (before["predictions"], before["image_count"], before["failed"]) == (2, 2, 1)
    assert after == before
